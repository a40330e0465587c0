"""The Python client's rooms: ``conn.rooms`` kept from what the server says, and a
new session put back in the rooms the client put itself in (``conn.own_rooms``). A
layer of :class:`~pushgate.client.Connection`."""

import asyncio
import logging
from typing import TYPE_CHECKING

from pushgate.clientpresence import PresenceViews
from pushgate.clientstate import _Own
from pushgate.clienttypes import RoomChange, SubscribeError
from pushgate.pushapi import PushAPI, PushAPIError
from pushgate.wireclient import Reply, room_stream
from pushgate.wireops import Operation

log = logging.getLogger("pushgate.client")  # one logger for the whole SDK


class _RedoFailed(Exception):
    """Putting a new session back in its rooms failed for now: reconnect and retry."""


class Rooms(PresenceViews):
    """The rooms the connection is in, and those a new session is put back in."""

    # Calls up the layers (clientconnection.py, clientoperations.py), declared for
    # the type checker only.
    if TYPE_CHECKING:

        def _require_api(self) -> PushAPI: ...

        async def _settle(self, rooms: list[str], *, joined: bool) -> None: ...

        async def _operate(
            self,
            op: str,
            room: str,
            *,
            grant: str | None = None,
            token: str | None = None,
            info: str | None = None,
            redo: bool = False,
        ) -> Reply: ...

    def _enter(self, room: str, reason: str) -> None:
        if room not in self._rooms:
            self._rooms[room] = None
            self._tell(RoomChange(room, True, reason))
            self._want_roster(room)

    def _exit(self, room: str, reason: str) -> None:
        self.positions.pop(room_stream(room), None)  # a later join starts afresh
        if room in self._rooms:
            del self._rooms[room]
            self._tell(RoomChange(room, False, reason))
        if not self._renewing:  # a new session keeps them, to tell only what differs
            self._drop_view(room)

    # Internals: a new session put back in its own rooms

    async def _redo(self) -> None:
        """Put a new session back in the rooms the client had put itself in and it is
        not in. A room refused for good is given up; anything else raises _RedoFailed."""
        if not self._redo_pending:
            return
        missing = [(room, own) for room, own in self._own.items() if room not in self._rooms]
        joins = [room for room, own in missing if own.via == "join"]
        if joins:
            api = self._require_api()
            try:
                for room in joins:
                    await api.join(room, self.ws_id)
            except PushAPIError as exc:
                raise _RedoFailed(str(exc)) from None
            await self._settle(joins, joined=True)
        shown: dict[str, dict[str, str]] = {}  # all asked for first: then all sent
        for room, own in missing:
            if own.via == "join":
                continue
            try:
                credentials = await self._credentials(room, own)
            except Exception as exc:
                raise _RedoFailed(f"grant_for({room!r}, ...) failed: {exc!r}") from None
            if credentials is None:
                self._give_up(room, "it was subscribed with a grant, and there is no grant_for")
            else:
                shown[room] = credentials
        operations = [
            asyncio.create_task(
                self._operate(
                    "subscribe",
                    room,
                    grant=credentials.get("grant"),
                    token=credentials.get("token"),
                    info=credentials.get("info"),
                    redo=True,
                )
            )
            for room, credentials in shown.items()
        ]
        failed: BaseException | None = None
        for outcome in await asyncio.gather(*operations, return_exceptions=True):
            if isinstance(outcome, SubscribeError) and not outcome.retryable:
                self._give_up(outcome.room, str(outcome))
            elif isinstance(outcome, BaseException):
                failed = outcome
        if failed is not None:
            raise _RedoFailed(str(failed))
        self._redo_pending = False

    async def _credentials(self, room: str, own: _Own) -> dict[str, str] | None:
        """What to show to subscribe to ``room`` again (None: nothing will do)."""
        if own.via == "subscribe":
            return {}
        if self._grant_for is not None:
            made = self._grant_for(room, self.ws_id)
            shown = {own.via: made if isinstance(made, str) else await made}
            if own.info is not None:
                shown["info"] = own.info  # the grant_for must sign it again
            return shown
        if own.via == "token" and own.token is not None:
            return {"token": own.token}  # good unless bound to the old wsId, or expired
        return None

    def _give_up(self, room: str, why: str) -> None:
        self._own.pop(room, None)
        log.warning("%s is not subscribed to %s again: %s", self.ws_id, room, why)


def _own_of(operation: Operation) -> _Own:
    """How a subscription was made, from its operation."""
    if operation.grant is not None:
        return _Own("grant", info=operation.info)
    if operation.token is not None:
        return _Own("token", operation.token)
    return _Own("subscribe")
