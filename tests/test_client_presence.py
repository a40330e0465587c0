"""The Python client's presence (pushgate.client, docs/sdk.md): ``conn.presence(room)``
kept true from a reply's members and the room's join and leave events, each change
told to ``on_presence``, across resumes and new sessions. Real servers on loopback
(one process, presence on in ``chat``, ``team`` and ``desk``); what the client sends
is read off the wire by a recording proxy, and the server's frames can be held back
by it, to make a reply come after events it does not count."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from pushgate.client import (
    Connection,
    PresenceChange,
    PresenceMember,
    PushAPI,
    RoomChange,
    State,
)
from pushgate.ids import ConnId, RoomId
from pushgate.namespaces import grant_for
from pushgate.presence import Change, Identity, Present, Roster
from pushgate.streams import Position
from pushgate.wireclient import PresenceEvent, PresenceRoster, Reply, parse_server_message
from pushgate.wireops import encode_presence, encode_reply, encode_roster
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, running_server, until_gone
from tests.test_client import StateLog
from tests.test_client_subscriptions import RecordingProxy, _Tap, client

SECRET = "a-client-presence-test-secret-32-bytes"
GRANT_SECRET = "team-rooms-grant-secret-of-the-back-end"
NAMESPACES = (
    f"chat=public+presence,team=grant+presence:{GRANT_SECRET},desk=server+presence,lobby=public"
)
SETTINGS: dict[str, Any] = {**FAST_TIMERS, "namespaces": NAMESPACES, "token_secret": SECRET}
# Sessions that outlive a cut, for the tests that resume.
KEPT: dict[str, Any] = {**SETTINGS, "session_ttl": 30.0}


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")


def named(user: str, info: dict[str, object] | None = None) -> PresenceMember:
    return PresenceMember(user, info)


def joined(room: str, member: PresenceMember) -> PresenceChange:
    return PresenceChange(room, True, member)


def left(room: str, member: PresenceMember) -> PresenceChange:
    return PresenceChange(room, False, member)


class Told:
    """on_room_change and on_presence in one: what the client told, in order."""

    def __init__(self) -> None:
        self.seen: list[RoomChange | PresenceChange] = []
        self._told = asyncio.Condition()

    async def __call__(self, conn: Connection, change: RoomChange | PresenceChange) -> None:
        async with self._told:
            self.seen.append(change)
            self._told.notify_all()

    @property
    def presence(self) -> list[PresenceChange]:
        return [c for c in self.seen if isinstance(c, PresenceChange)]

    async def until(self, change: RoomChange | PresenceChange) -> None:
        async with asyncio.timeout(10 * UNIT), self._told:
            await self._told.wait_for(lambda: change in self.seen)

    async def after(self, start: int, change: PresenceChange) -> list[PresenceChange]:
        """The presence changes told from ``start`` (an index of ``presence``) up to and
        with ``change``, once it has been told."""
        async with asyncio.timeout(10 * UNIT), self._told:
            await self._told.wait_for(lambda: change in self.presence[start:])
        told = self.presence[start:]
        return told[: told.index(change) + 1]


def observed(url: str, told: Told, **options: Any) -> Connection:
    return client(url, on_room_change=told, on_presence=told, **options)


def operations(proxy: RecordingProxy) -> list[dict[str, Any]]:
    """Every operation the client sent through ``proxy``, in order (their ``data``)."""
    return [
        message["data"]
        for message in proxy.sent
        if message.get("type") == 0 and "op" in (message.get("data") or {})
    ]


def presence_ops(proxy: RecordingProxy) -> list[str]:
    """The rooms of the ``presence`` operations the client sent, in order."""
    return [op["room"] for op in operations(proxy) if op["op"] == "presence"]


def _cut_frame(buffer: bytes) -> tuple[bytes, int, bytes] | None:
    """The first whole frame of a server's bytes (unmasked): its bytes, its opcode
    and its payload; None until it has all come."""
    if len(buffer) < 2:
        return None
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = int.from_bytes(buffer[2:4]), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = int.from_bytes(buffer[2:10]), 10
    if len(buffer) < start + length:
        return None
    assert buffer[0] & 0x80, "a fragmented message"
    return buffer[: start + length], buffer[0] & 0x0F, buffer[start : start + length]


class HoldingProxy(RecordingProxy):
    """A RecordingProxy that also reads the server's frames: those ``hold`` picks are
    held back, while the rest go on, until :meth:`release`; ``passed`` is the text
    messages that went through to the client."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.hold: Callable[[Any], bool] = lambda message: False
        self.held: list[bytes] = []
        self.passed: list[Any] = []
        self._down: asyncio.StreamWriter | None = None
        self._moved = asyncio.Condition()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds of what was held and passed."""
        async with asyncio.timeout(10 * UNIT), self._moved:
            await self._moved.wait_for(condition)

    def release(self, hold: Callable[[Any], bool] = lambda message: False) -> None:
        """Send what was held, and from now on hold what ``hold`` picks."""
        self.hold = hold
        assert self._down is not None
        for frame in self.held:
            self._down.write(frame)
        self.held = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._down = writer
        tap = _Tap(self.sent)
        for pipe in (self._tapped(reader, up_writer, tap.feed), self._frames(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _frames(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        buffer, handshake = b"", True
        try:
            while data := await source.read(65536):
                await self.flowing.wait()
                buffer += data
                if handshake:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    sink.write(buffer[: end + 4])
                    buffer, handshake = buffer[end + 4 :], False
                while (frame := _cut_frame(buffer)) is not None:
                    raw, opcode, payload = frame
                    buffer = buffer[len(raw) :]
                    message = json.loads(payload) if opcode == 1 else None
                    if message is not None and self.hold(message):
                        self.held.append(raw)
                        continue
                    sink.write(raw)
                    if message is not None:
                        self.passed.append(message)
                await sink.drain()
                async with self._moved:
                    self._moved.notify_all()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


def is_presence_reply(message: Any) -> bool:
    data = message.get("data")
    return isinstance(data, dict) and data.get("op") == "presence" and "ok" in data


def is_event(message: Any, event: str, user: str) -> bool:
    data = message.get("data")
    return (
        isinstance(data, dict)
        and data.get("op") == "presence"
        and (data.get("event"), data.get("user")) == (event, user)
    )


# The wire, as a client reads it


def test_presence_events_and_a_replys_members_read_back_as_the_server_writes_them() -> None:
    ann = Identity(ConnId("w-ann"), "ann", '{"name":"Ann"}')
    anon = Identity(ConnId("w-anon"), None)
    room = RoomId("chat:1")
    frame = encode_presence(Change(room, True, ann))[:-2] + b',"seq":7,"epoch":"e1"}'
    event = parse_server_message(frame)
    assert event == PresenceEvent("chat:1", True, named("ann", {"name": "Ann"}))
    assert isinstance(event, PresenceEvent)
    assert (event.seq, event.epoch, event.member.key) == (7, "e1", "ann")
    gone = parse_server_message(encode_presence(Change(room, False, anon)))
    assert gone == PresenceEvent("chat:1", False, PresenceMember(None, None, "w-anon"))
    assert isinstance(gone, PresenceEvent)
    assert (gone.seq, gone.member.key) == (0, "w-anon")

    members = [Present("ann", ann.info, (ann.conn,)), Present(None, None, (anon.conn,))]
    told = encode_roster(Roster(members, Position("e1", 9)))
    roster = PresenceRoster(
        (named("ann", {"name": "Ann"}), PresenceMember(None, None, "w-anon")), ("e1", 9)
    )
    reply = encode_reply("presence", 4, "chat:1", presence=told)
    assert parse_server_message(reply) == Reply("presence", 4, True, "chat:1", presence=roster)
    without_history = encode_reply("subscribe", 5, "chat:1", presence=encode_roster(Roster([])))
    assert parse_server_message(without_history) == Reply(
        "subscribe", 5, True, "chat:1", presence=PresenceRoster(())
    )
    odd = {"op": "presence", "room": "r", "event": "join", "user": 5}
    assert parse_server_message(json.dumps({"type": 0, "data": odd})) is None
    nobody = {"op": "presence", "room": "r", "event": "join", "user": None}
    assert parse_server_message(json.dumps({"type": 0, "data": nobody})) is None


# Views kept true


async def test_a_subscribe_gives_the_members_and_others_joins_and_leaves_follow() -> None:
    """Bob is there: Ann's subscribe says so (with his info), and her view has them
    both; an anonymous connection joins and leaves, Bob leaves: each is told, in
    order; Ann unsubscribes: her view goes, each member told gone."""
    told = Told()
    bob_info: dict[str, object] = {"name": "Bob"}
    async with running_server(**SETTINGS) as server:
        url = server.ws_url
        async with (
            client(url, token=token("bob", info=bob_info)) as bob,
            observed(url, told, token=token("ann")) as ann,
        ):
            await bob.subscribe("chat:1")
            done = await ann.subscribe("chat:1")
            bob_member, ann_member = named("bob", bob_info), named("ann")
            assert done.presence is not None
            assert done.presence.members == (bob_member, ann_member)
            assert ann.presence("chat:1") == {"bob": bob_member, "ann": ann_member}

            async with client(url) as anon:
                await anon.subscribe("chat:1")
                stranger = PresenceMember(None, None, anon.ws_id)
                await told.until(joined("chat:1", stranger))
                assert ann.presence("chat:1") == {
                    "bob": bob_member,
                    "ann": ann_member,
                    anon.ws_id: stranger,
                }
            await told.until(left("chat:1", stranger))  # sessions end 0.5 s after a close
            await bob.unsubscribe("chat:1")
            await told.until(left("chat:1", bob_member))
            assert ann.presence("chat:1") == {"ann": ann_member}
            await ann.unsubscribe("chat:1")
            assert ann.presence("chat:1") is None
            await told.until(left("chat:1", ann_member))
            assert told.seen == [
                RoomChange("chat:1", True, "subscribe"),
                joined("chat:1", bob_member),
                joined("chat:1", ann_member),
                joined("chat:1", stranger),
                left("chat:1", stranger),
                left("chat:1", bob_member),
                RoomChange("chat:1", False, "unsubscribe"),
                left("chat:1", ann_member),
            ]


async def test_a_users_second_tab_changes_nothing() -> None:
    """Ann's second connection enters the room: her view and Bob's do not change,
    and nothing is told before the next real change (Cay's join)."""
    told = Told()
    async with running_server(**SETTINGS) as server:
        url = server.ws_url
        async with (
            observed(url, told, token=token("bob")) as bob,
            client(url, token=token("ann")) as ann,
            client(url, token=token("ann")) as ann_tab,
        ):
            await bob.subscribe("chat:1")
            await ann.subscribe("chat:1")
            await told.until(joined("chat:1", named("ann")))
            start = len(told.presence)
            tab = await ann_tab.subscribe("chat:1")
            assert tab.presence is not None
            assert [m.user for m in tab.presence.members] == ["bob", "ann"]
            assert ann_tab.presence("chat:1") == ann.presence("chat:1")
            async with client(url, token=token("cay")) as cay:
                await cay.subscribe("chat:1")
                assert await told.after(start, joined("chat:1", named("cay"))) == [
                    joined("chat:1", named("cay"))
                ]
            assert bob.presence("chat:1") == {
                "bob": named("bob"),
                "ann": named("ann"),
                "cay": named("cay"),
            }


async def test_a_grant_signs_the_info_the_subscribe_sends() -> None:
    """In a grant namespace the info is the text the back end signed, sent as it is."""
    async with (
        running_server(**SETTINGS) as server,
        client(server.ws_url, token=token("ann")) as ann,
    ):
        info = '{"role": "agent"}'
        grant = grant_for(GRANT_SECRET, ann.ws_id, "team:7", info)
        done = await ann.subscribe("team:7", grant=grant, info=info)
        agent = named("ann", {"role": "agent"})
        assert done.presence is not None
        assert done.presence.members == (agent,)
        assert ann.presence("team:7") == {"ann": agent}


async def test_events_around_the_reply_are_counted_by_their_seq(
    http: aiohttp.ClientSession,
) -> None:
    """The back end puts Ann in a room while her frames are held: Bob joins, leaves
    and joins again meanwhile. Her client asks who is there; the answer (which counts
    Bob) is held while Cay's join goes past it. Once it arrives: Bob's three events,
    which the answer counts, are passed over; Cay's, which came before it but after
    its position, is applied. Told: Ann, Bob, Cay, once each."""
    told = Told()
    async with running_server(**SETTINGS) as server, PushAPI(server.api_url) as api:
        proxy = HoldingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                observed(f"ws://{LOOPBACK}:{proxy.port}/connect", told, token=token("ann")) as ann,
                client(server.ws_url, token=token("bob")) as bob,
                client(server.ws_url, token=token("cay")) as cay,
            ):
                proxy.hold = lambda message: message.get("type") == 0  # not the PONGs
                await api.join("desk:1", ann.ws_id)
                await api.join("desk:1", bob.ws_id)
                await api.leave("desk:1", bob.ws_id)
                await api.join("desk:1", bob.ws_id)
                # Ann's join, her joined event, then Bob's join, leave and join.
                await proxy.until(lambda: len(proxy.held) == 5)
                proxy.release(hold=is_presence_reply)
                await proxy.until(lambda: len(proxy.held) == 1)
                await api.join("desk:1", cay.ws_id)
                await proxy.until(lambda: any(is_event(m, "join", "cay") for m in proxy.passed))
                proxy.release()
                ann_, bob_, cay_ = named("ann"), named("bob"), named("cay")
                assert await told.after(0, joined("desk:1", cay_)) == [
                    joined("desk:1", ann_),
                    joined("desk:1", bob_),
                    joined("desk:1", cay_),
                ]
                assert ann.presence("desk:1") == {"ann": ann_, "bob": bob_, "cay": cay_}
                assert presence_ops(proxy) == ["desk:1"]
                await api.leave("desk:1", bob.ws_id)
                assert await told.after(3, left("desk:1", bob_)) == [left("desk:1", bob_)]
        finally:
            await proxy.close()


async def test_the_back_ends_rooms_and_a_tokens_rooms_are_asked_for() -> None:
    """Rooms the connection is in without subscribing (its token's, the back end's
    join): the client asks who is there, once each, and keeps it true."""
    told = Told()
    async with running_server(**SETTINGS) as server, PushAPI(server.api_url) as api:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(server.ws_url, token=token("bob", rooms=["desk:1"])) as bob:
                url = f"ws://{LOOPBACK}:{proxy.port}/connect"
                async with observed(
                    url, told, token=token("ann", rooms=["desk:1"]), api=api
                ) as ann:
                    await told.until(joined("desk:1", named("ann")))
                    assert ann.presence("desk:1") == {"bob": named("bob"), "ann": named("ann")}
                    await ann.join("desk:2")
                    await told.until(joined("desk:2", named("ann")))
                    await api.join("desk:2", bob.ws_id)
                    await told.until(joined("desk:2", named("bob")))
                    assert ann.presence("desk:2") == {"ann": named("ann"), "bob": named("bob")}
                    assert presence_ops(proxy) == ["desk:1", "desk:2"]
        finally:
            await proxy.close()


async def test_a_room_without_presence_has_no_view_and_its_namespace_is_asked_once() -> None:
    """The token's three rooms of the default namespace: one is asked about, refused
    (404: its namespace keeps no presence), and that tells for the others. A subscribe's reply
    without members says its namespace keeps none: no view, and the back end's join to
    another room of it asks nothing; nor does a later room of the default namespace."""
    async with running_server(**SETTINGS) as server, PushAPI(server.api_url) as api:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(
                f"ws://{LOOPBACK}:{proxy.port}/connect",
                api=api,
                token=token("ann", rooms=["news", "sports", "weather"]),
            ) as conn:
                done = await conn.subscribe("lobby:1")  # replies in order: news's is read
                assert done.presence is None
                assert presence_ops(proxy) == ["news"]
                await conn.join("lobby:2")
                await conn.join("tv")
                await conn.subscribe("chat:2")
                assert presence_ops(proxy) == ["news"]
                for room in ("news", "sports", "weather", "lobby:1", "lobby:2", "tv"):
                    assert conn.presence(room) is None, room
                assert conn.presence("chat:2") == {"ann": named("ann")}
        finally:
            await proxy.close()


# Reconnects


async def test_a_resume_keeps_the_views_and_asks_nothing_again(
    http: aiohttp.ClientSession,
) -> None:
    """Cut off, Ann misses Bob's leave and Cay's join: her resume replays them from
    history, her views follow, and not one more operation is sent."""
    told = Told()
    states = StateLog()
    async with running_server(**KEPT) as server, PushAPI(server.api_url) as api:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                observed(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    told,
                    token=token("ann", rooms=["desk:1"]),
                    on_state_change=states,
                ) as ann,
                client(server.ws_url, token=token("bob", rooms=["desk:1"])) as bob,
                client(server.ws_url, token=token("cay")) as cay,
            ):
                await bob.subscribe("chat:1")
                await ann.subscribe("chat:1")
                await told.until(joined("desk:1", named("bob")))
                before = operations(proxy)
                assert [op["op"] for op in before] == ["presence", "subscribe"]
                # The events count as the rooms' positions, as pushes do: a resume
                # goes on after them.
                positions = dict(ann.positions)
                assert positions["room:chat:1"][1] == 2  # Bob's join, Ann's
                assert positions["room:desk:1"][1] == 2  # Ann's, Bob's
                start = len(told.presence)

                proxy.freeze()
                await proxy.drop()
                await bob.unsubscribe("chat:1")
                await api.leave("desk:1", bob.ws_id)
                await cay.subscribe("chat:1")
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)
                assert ann.resumed
                await told.after(start, joined("chat:1", named("cay")))
                await told.after(start, left("desk:1", named("bob")))
                # In order per room (a resume keeps no order across streams).
                assert [c for c in told.presence[start:] if c.room == "chat:1"] == [
                    left("chat:1", named("bob")),
                    joined("chat:1", named("cay")),
                ]
                assert [c for c in told.presence[start:] if c.room == "desk:1"] == [
                    left("desk:1", named("bob")),
                ]
                assert ann.presence("chat:1") == {"ann": named("ann"), "cay": named("cay")}
                assert ann.presence("desk:1") == {"ann": named("ann")}
                assert operations(proxy) == before
                resumes = [m["data"] for m in proxy.sent if "since" in m.get("data", {})]
                assert [r["since"] for r in resumes] == [
                    {name: list(at) for name, at in positions.items()}
                ]
        finally:
            await proxy.close()


async def test_a_room_whose_missed_events_are_lost_is_asked_again() -> None:
    """History holds 2 events a room: Ann, cut off, misses 4. Her resume cannot
    recover them, so her client asks who is there again (and is told the differences)."""
    told = Told()
    states = StateLog()
    async with running_server(**{**KEPT, "history_size": 2}) as server:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                observed(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    told,
                    token=token("ann"),
                    on_state_change=states,
                ) as ann,
                client(server.ws_url, token=token("bob")) as bob,
            ):
                await bob.subscribe("chat:1")
                await ann.subscribe("chat:1")
                start = len(told.presence)
                proxy.freeze()
                await proxy.drop()
                others = [
                    client(server.ws_url, token=token(user)) for user in ("cay", "dan", "eve")
                ]
                for other in others:
                    await other.open()
                    await other.subscribe("chat:1")
                await bob.unsubscribe("chat:1")
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)
                assert (ann.resumed, ann.recovered) == (True, False)
                await told.after(start, left("chat:1", named("bob")))
                await told.after(start, joined("chat:1", named("cay")))
                assert ann.presence("chat:1") == {
                    "ann": named("ann"),
                    "cay": named("cay"),
                    "dan": named("dan"),
                    "eve": named("eve"),
                }
                assert presence_ops(proxy) == ["chat:1"]
                for other in others:
                    await other.close()
        finally:
            await proxy.close()


async def test_a_new_session_asks_again_and_tells_only_what_differs(
    http: aiohttp.ClientSession,
) -> None:
    """Ann's session ends while she is cut off, and Bob leaves both rooms meanwhile.
    Her new session subscribes again (the reply's members) and asks for her token's
    room: her views are true again, and what is told is Bob's leaves only."""
    told = Told()
    states = StateLog()
    async with running_server(**SETTINGS) as server, PushAPI(server.api_url) as api:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                observed(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    told,
                    token=token("ann", rooms=["desk:1"]),
                    on_state_change=states,
                ) as ann,
                client(server.ws_url, token=token("bob", rooms=["desk:1"])) as bob,
            ):
                await bob.subscribe("chat:1")
                await ann.subscribe("chat:1")
                await told.until(joined("desk:1", named("bob")))
                first_id = ann.ws_id
                start = len(told.presence)

                proxy.freeze()
                await proxy.drop()
                await until_gone(http, server.api_url, first_id)
                await bob.unsubscribe("chat:1")
                await api.leave("desk:1", bob.ws_id)
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)
                assert ann.ws_id != first_id
                ops = operations(proxy)[2:]
                assert sorted((op["op"], op["room"]) for op in ops) == [
                    ("presence", "desk:1"),
                    ("subscribe", "chat:1"),
                ]
                await told.after(start, left("desk:1", named("bob")))
                await told.after(start, left("chat:1", named("bob")))
                assert ann.presence("desk:1") == {"ann": named("ann")}
                assert ann.presence("chat:1") == {"ann": named("ann")}
                assert sorted(told.presence[start:], key=lambda c: c.room) == [
                    left("chat:1", named("bob")),
                    left("desk:1", named("bob")),
                ]
        finally:
            await proxy.close()
