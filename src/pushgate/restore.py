"""Writing a gateway's sessions back into a store that lost them (a Redis restarted
empty, without persistence).

Redis keeps the cluster's sessions, but a gateway holds every live connection with
its session in memory: its user, rooms and holder, and its token's hash
(sessioncore.py). When Redis comes back empty, every session is gone from it, and a
client that drops afterwards could not resume. So when the broker reconnects, the
node asks its directory whether Redis still had its entries (``Directory.verify``:
one round trip); when it had not, every session held here is written back where it
is missing (``Sessions.restore``: a pipeline of script calls per chunk), and the
presence entries of its connections are entered again. A directory refresh that
finds its entries gone on its own (``Directory.watch``) does the same.

Meanwhile the node reports not ready (``/readyz`` 503), so that a load balancer or
an operator waiting for it knows that a client cut then might not resume yet; and
until the streams the reconnect repairs are caught up, so that a client resuming
then is told it was recovered wherever the node can tell (epochends.py): for at most
``RESTORE_WAIT`` seconds in all, which a store that is still away cannot hold it past.

What is not written back, and why, is in docs/cluster.md ("Redis restarted empty").
"""

import asyncio
import logging
from collections.abc import Iterable
from itertools import islice

from pushgate.directory import Directory
from pushgate.errors import BrokerUnavailable
from pushgate.ids import ConnId
from pushgate.presencerooms import PresenceRooms
from pushgate.sessioncore import SessionCore
from pushgate.sessions import Sessions

log = logging.getLogger("pushgate.node")

# Sessions per Sessions.restore call (each one a pipeline, one after another).
CHUNK = 1000
# The longest a check holds the node not ready.
RESTORE_WAIT = 10.0
# Waits between attempts to write the sessions back while the store is still away.
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 1.0, 1.0)


class Restorer:
    """Checks, after the broker reconnected, whether the store lost this node's
    entries, and writes its sessions and presence back if it did."""

    def __init__(
        self,
        *,
        core: SessionCore,
        directory: Directory,
        sessions: Sessions,
    ) -> None:
        self._core = core
        self._directory = directory
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None
        self._again = False  # another check was asked for while one ran
        self._holding = False  # the node is not ready while this is true
        self._repairs: set[asyncio.Task[None]] = set()  # catching streams up, waited for
        self.restored = 0  # sessions written back, since the start (for tests and logs)

    @property
    def holding(self) -> bool:
        """A check or a restore is under way: the node is not ready yet."""
        return self._holding

    def reconnected(self, repairs: Iterable["asyncio.Task[None]"] = ()) -> None:
        """The broker rebuilt its subscriptions: the store may have restarted empty.
        ``repairs``: the node's, catching its streams up meanwhile."""
        self._repairs.update(repairs)
        self._start(verify=True)

    def lost(self) -> None:
        """The directory found this node's entries gone (Directory.watch)."""
        self._start(verify=False)

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _start(self, *, verify: bool) -> None:
        self._holding = True
        if self._task is not None and not self._task.done():
            self._again = True  # the one running may have looked before this loss
            return
        self._task = asyncio.create_task(self._run(verify), name="pushgate-restore")

    async def _run(self, verify: bool) -> None:
        try:
            while True:
                self._again = False
                try:
                    async with asyncio.timeout(RESTORE_WAIT):
                        if not verify or await self._directory.verify():
                            await self._restore()
                        await self._caught_up()
                except TimeoutError:
                    log.warning(
                        "could not tell within %g s whether Redis lost this node's sessions "
                        "(or catch its streams up); reporting ready again",
                        RESTORE_WAIT,
                    )
                if not self._again:
                    return
                verify = True
        finally:
            self._holding = False
            self._repairs.clear()

    async def _caught_up(self) -> None:
        """Wait for the repairs of the streams (each ends, filled or given up on)."""
        while self._repairs:
            repairs = list(self._repairs)
            self._repairs.clear()
            await asyncio.wait(repairs)

    async def _restore(self) -> None:
        """Write back every session held here, then enter the presence entries again."""
        conns = iter(self._core.holding())
        written = 0
        while chunk := list(islice(conns, CHUNK)):
            written += await self._write(chunk)
        self.restored += written
        log.warning(
            "Redis had lost the sessions of this node (restarted empty?): wrote %d back", written
        )
        presence = self._core.presence
        if presence is not None:
            await self._enter_again(presence)

    async def _write(self, chunk: list[ConnId]) -> int:
        """One chunk, written again as the store comes back (the directory may see
        it before the sessions' connection does)."""
        for delay in (*RETRY_DELAYS, None):
            # Taken again on each attempt: what changed meanwhile is written as it is now.
            held = self._core.held(chunk)
            try:
                return await self._sessions.restore(held)
            except BrokerUnavailable as exc:
                if delay is None:
                    log.warning("could not write %d sessions back: %s", len(held), exc)
                    return 0
                await asyncio.sleep(delay)
        return 0

    async def _enter_again(self, presence: PresenceRooms) -> None:
        try:
            await presence.enter_again(self._core.holding())
        except BrokerUnavailable as exc:
            log.warning("could not enter this node's connections in presence again: %s", exc)
