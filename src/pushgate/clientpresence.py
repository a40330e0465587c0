"""The Python client's presence views: who is in each presence room the connection
is in (``conn.presence(room)``), taken from the members a reply carries and kept
true by the room's join and leave events (the module docstring of
:mod:`pushgate.client`, "Presence"). A layer of :class:`~pushgate.client.Connection`."""

import asyncio
import contextlib
from typing import TYPE_CHECKING

from pushgate.clientstate import ClientState, _View
from pushgate.clienttypes import PresenceChange, RoomChange, SubscribeError
from pushgate.streams import ROOM_TOPIC_PREFIX
from pushgate.wireclient import PresenceEvent, PresenceRoster, Reply


def _namespace(room: str) -> str:
    """A room's namespace: what comes before its first ``:`` (none: the default)."""
    return room.partition(":")[0] if ":" in room else ""


class PresenceViews(ClientState):
    """Who is in each presence room, as far as the client knows."""

    # Calls up the layers (clientconnection.py, clientoperations.py), declared for
    # the type checker only.
    if TYPE_CHECKING:

        def _tell(self, change: RoomChange | PresenceChange) -> None: ...

        async def _operate(self, op: str, room: str, *, redo: bool = False) -> Reply: ...

    def _want_roster(self, room: str) -> None:
        """The connection is in ``room``: know who is there, if its namespace keeps
        presence (or may: then one room of it asks, and the answer tells for all)."""
        if room in self._views or self._namespaces.get(_namespace(room)) is False:
            return
        self._views[room] = _View(buffer=[])
        self._flush_asks()

    def _roster_asked(self, room: str, ws: object, op_id: int, op: str) -> None:
        """An operation whose reply may carry ``room``'s members is being sent."""
        view = self._views.get(room)
        if op == "subscribe":
            if self._namespaces.get(_namespace(room)) is False:
                return
            if view is None:
                view = self._views[room] = _View(buffer=[])
            elif view.buffer is None:
                return  # known, and kept true: the reply's members tell nothing new
        elif view is None or view.buffer is None:
            return
        view.ask = (ws, op_id)

    def _flush_asks(self) -> None:
        """Ask for the members of each room that waits for them and has no ask under
        way on this connection (one room at a time of a namespace not known to keep
        presence); forget the views of rooms the connection is not in."""
        ws = self._ws
        if ws is None or self._done:
            return
        views = self._views
        probing = {
            _namespace(room)
            for room, view in views.items()
            if view.ask is not None and view.ask[0] is ws
        }
        for room, view in list(views.items()):
            if view.buffer is None or (view.ask is not None and view.ask[0] is ws):
                continue
            namespace = _namespace(room)
            keeps = self._namespaces.get(namespace)
            if room not in self._rooms or keeps is False:
                if room in self._rooms or not self._renewing:
                    self._drop_view(room)
                continue
            if keeps is None:
                if namespace in probing:
                    continue  # its answer tells for this one too
                probing.add(namespace)
            view.ask = (ws, 0)
            task = asyncio.create_task(self._ask(room, ws))
            self._asks.add(task)
            task.add_done_callback(self._asks.discard)

    async def _ask(self, room: str, ws: object) -> None:
        """The ``presence`` operation (unless a subscribe sent meanwhile took it over):
        its reply is read by :meth:`_presence_reply`."""
        view = self._views.get(room)
        if view is None or view.ask != (ws, 0) or ws is not self._ws:
            return
        with contextlib.suppress(SubscribeError):
            await self._operate("presence", room, redo=True)

    def _presence_reply(self, room: str, reply: Reply) -> None:
        """A reply that may carry ``room``'s members, or say it has none."""
        namespace = _namespace(room)
        view = self._views.get(room)
        mine = view is not None and view.ask is not None and view.ask[1] == reply.id
        if reply.ok and reply.presence is not None:
            self._namespaces[namespace] = True
            if mine:
                assert view is not None
                self._take_roster(room, view, reply.presence)
        elif reply.ok:
            if reply.op != "presence":  # a subscription in a room without presence
                self._namespaces[namespace] = False
                if mine:
                    self._drop_view(room)
        elif reply.op == "presence":
            if reply.code == 404:  # the room's namespace keeps no presence
                self._namespaces[namespace] = False
            if not mine:
                return
            assert view is not None
            if reply.code in (409, 429, 503):  # not now: ask again in a moment
                view.ask = None
                asyncio.get_running_loop().call_later(1.0, self._flush_asks)
            else:
                self._drop_view(room)
        elif mine:
            assert view is not None
            view.ask = None  # a subscribe refused: ask, if the connection is in the room

    def _take_roster(self, room: str, view: _View, roster: PresenceRoster) -> None:
        """The members as of the roster's position; tell what differs from the view
        (all of them, the first time), then apply the events held meanwhile that came
        after it (without history: none, it is after them all)."""
        before = view.members if view.known else {}
        held = (view.buffer or []) if roster.position is not None else []
        members = {member.key: member for member in roster.members}
        view.members, view.known, view.position = members, True, roster.position
        view.buffer = view.ask = None
        for key, member in before.items():
            if key not in members:
                self._tell(PresenceChange(room, False, member))
        for key, member in members.items():
            if before.get(key) != member:
                self._tell(PresenceChange(room, True, member))
        for event in held:
            self._on_presence_event(event)

    def _on_presence_event(self, event: PresenceEvent) -> None:
        view = self._views.get(event.room)
        if view is None:
            return  # not asked for: the members, when asked, count it
        if view.buffer is not None:
            view.buffer.append(event)
            return
        position = view.position
        if event.seq and position is not None:
            if event.epoch != position[0]:  # the stream started over: ask again
                view.buffer, view.ask = [], None
                return
            if event.seq <= position[1]:
                return  # the members told of it already
        member, key = event.member, event.member.key
        if event.joined:
            if view.members.get(key) != member:
                view.members[key] = member
                self._tell(PresenceChange(event.room, True, member))
        elif (gone := view.members.pop(key, None)) is not None:
            self._tell(PresenceChange(event.room, False, gone))
        if event.seq:
            view.position = (event.epoch, event.seq)

    def _drop_view(self, room: str) -> None:
        """Forget ``room``'s view: each member it had leaves it."""
        view = self._views.pop(room, None)
        if view is not None and view.known:
            for member in view.members.values():
                self._tell(PresenceChange(room, False, member))

    def _stream_lost(self, stream: str) -> None:
        """Events of ``stream`` may have been lost: ask for its room's members again."""
        if not stream.startswith(ROOM_TOPIC_PREFIX):
            return
        view = self._views.get(stream[len(ROOM_TOPIC_PREFIX) :])
        if view is not None and view.buffer is None:
            view.buffer, view.ask = [], None

    def _renew_presence(self) -> None:
        """A new session: what it is in, and whether a namespace keeps presence, is to
        be learnt again; every view waits for its members, asked again."""
        self._namespaces.clear()
        self._renewing = True
        for view in self._views.values():
            view.buffer, view.ask = [], None

    def _end_renewal(self) -> None:
        """The new session is back in its rooms: the views of the others go."""
        self._renewing = False
        self._flush_asks()
