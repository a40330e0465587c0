"""The Python client's runner: it waits for the open connection to end, then
reconnects with jittered exponential backoff (at once after 1012), resumes the
session, and puts a new one back in its rooms; or finishes. A layer of
:class:`~pushgate.client.Connection`."""

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from pushgate.clientlink import Link
from pushgate.clientrooms import _RedoFailed
from pushgate.clienttypes import ConnectError, State
from pushgate.wire import CLOSE_NO_RECONNECT, CLOSE_SERVICE_RESTART, CLOSE_SESSION_TAKEN

log = logging.getLogger("pushgate.client")  # one logger for the whole SDK


class Reconnect(Link):
    """Reopens the connection until it ends for good."""

    # Calls up the layers (clientconnection.py), declared for the type checker only.
    if TYPE_CHECKING:

        async def _set_state(self, state: State) -> None: ...

        def _finish(self) -> None: ...

        def _next_url(self) -> None: ...

    async def _run(self) -> None:
        """Wait for the open connection to end; then reconnect (or finish)."""
        try:
            while (ws := self._ws) is not None and not self._closing:
                assert self._reader is not None
                await self._reader
                self.close_code = ws.close_code or 1006
                log.info("connection %s closed (%s)", self.ws_id, self.close_code)
                self._ws = None
                if not self._reconnect or self._closing:
                    break
                if self.close_code == CLOSE_SESSION_TAKEN:
                    log.warning("session %s was resumed by another connection", self.ws_id)
                    break
                if self.close_code in CLOSE_NO_RECONNECT:
                    log.warning("the server closed %s for good (%d)", self.ws_id, self.close_code)
                    break
                await self._set_state(State.RECONNECTING)
                if self._closing:  # close() called by the callback
                    break
                await self._reopen()
                await self._set_state(State.OPEN)
                await self._release()
        except Exception:
            log.exception("pushgate client for %s failed", self.url)
        finally:
            if not self._closing:  # close() reports its own
                self._finish()
                await self._set_state(State.CLOSED)

    async def _reopen(self) -> None:
        """Open a new connection, retrying with full-jitter exponential backoff, and
        put a new session back in its own rooms."""
        initial, cap = self._backoff
        attempt = 0
        at_once = self.close_code == CLOSE_SERVICE_RESTART
        while True:
            if not at_once:
                await asyncio.sleep(random.uniform(0, min(cap, initial * 2**attempt)))
            at_once = False
            try:
                await self._open_once(resume=True)
            except ConnectError as exc:
                log.info("reconnect to %s failed: %s", self.url, exc)
                self._next_url()
            else:
                if not self.resumed:
                    self._redo_pending = True
                try:
                    await self._redo()
                    self._end_renewal()
                    return
                except _RedoFailed as exc:
                    # The next attempt resumes this session and finishes the work.
                    log.warning("putting %s back in its rooms failed: %s", self.ws_id, exc)
                    await self._stop_reading()
            attempt = min(attempt + 1, 30)
