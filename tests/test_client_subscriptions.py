"""The Python client's rooms (pushgate.client, docs/sdk.md): subscribe, unsubscribe and
refresh, ``conn.rooms`` kept from the server's word, each change told, and what a
reconnect does with them (a resume nothing, a new session what the client had put
itself in). Real servers on loopback; what the client sends is read off the wire by
a recording proxy."""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from pushgate.client import (
    Connection,
    NoReplyError,
    Push,
    PushAPI,
    RoomChange,
    State,
    Subscribed,
    SubscribeError,
    connect,
)
from pushgate.ids import ConnId, RoomId
from pushgate.namespaces import grant_for
from pushgate.wire import PING, PONG, encode_welcome
from pushgate.wireclient import (
    Reply,
    RoomEvent,
    Welcome,
    is_pong,
    parse_server_message,
    parse_welcome,
)
from pushgate.wireops import Operation, encode_event, encode_reply, parse_operation
from tests.dropping_proxy import DroppingProxy
from tests.helpers import FAST_TIMERS, LOOPBACK, UNIT, running_server, until_gone
from tests.redis_server import RedisServer
from tests.test_client import BACKOFF_INITIAL, BACKOFF_MAX, StateLog, next_push

SECRET = "a-client-subscription-secret-32-bytes"
GRANT_SECRET = "chat-rooms-grant-secret-of-the-back-end"
NAMESPACES = f"lobby=public,chat=grant:{GRANT_SECRET},private=grant"
SETTINGS: dict[str, Any] = {**FAST_TIMERS, "namespaces": NAMESPACES, "token_secret": SECRET}
# Sessions that outlive a cut, for the tests that resume.
KEPT: dict[str, Any] = {**SETTINGS, "session_ttl": 30.0}


def subscription_token(*rooms: str, **claims: Any) -> str:
    return jwt.encode({"subscribe": list(rooms), **claims}, SECRET, algorithm="HS256")


def grant(ws_id: str, room: str) -> str:
    """What the back end gives a client for ``room``."""
    return grant_for(GRANT_SECRET, ws_id, room)


class Changes:
    """An on_room_change callback that keeps what it was told; a test awaits them."""

    def __init__(self) -> None:
        self.seen: list[RoomChange] = []
        self._told = asyncio.Condition()

    async def __call__(self, conn: Connection, change: RoomChange) -> None:
        async with self._told:
            self.seen.append(change)
            self._told.notify_all()

    async def until(self, change: RoomChange) -> None:
        async with asyncio.timeout(10 * UNIT), self._told:
            await self._told.wait_for(lambda: change in self.seen)

    async def count(self, n: int) -> list[RoomChange]:
        async with asyncio.timeout(10 * UNIT), self._told:
            await self._told.wait_for(lambda: len(self.seen) >= n)
        return self.seen


class _Tap:
    """Reads a client's bytes as the server does (websockets' sans-I/O ServerProtocol,
    its own answers thrown away) and keeps each text message."""

    def __init__(self, sent: list[Any]) -> None:
        self.protocol = ServerProtocol(max_size=None)
        self.sent = sent

    def feed(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                protocol.send_response(protocol.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.sent.append(json.loads(bytes(event.data)))
        protocol.data_to_send()


class RecordingProxy(DroppingProxy):
    """A DroppingProxy that keeps every message a client sent through it to the server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.sent: list[Any] = []

    def operations(self) -> list[dict[str, Any]]:
        """The operations the server was sent, in order (their ``data``)."""
        return [
            message["data"]
            for message in self.sent
            if message.get("type") == 0
            and "op" in (message.get("data") or {})
            and message["data"]["op"] != "presence"
        ]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        tap = _Tap(self.sent)
        for source, sink, seen in ((reader, up_writer, tap.feed), (up_reader, writer, None)):
            task = asyncio.create_task(self._tapped(source, sink, seen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tapped(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        seen: Callable[[bytes], None] | None,
    ) -> None:
        try:
            while data := await source.read(65536):
                await self.flowing.wait()
                sink.write(data)
                await sink.drain()
                if seen is not None:
                    seen(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


def client(url: str, **options: Any) -> Connection:
    return connect(url, backoff_initial=BACKOFF_INITIAL, backoff_max=BACKOFF_MAX, **options)


def rooms_of(conn: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``conn.rooms`` and ``conn.own_rooms`` now (a call: the type checker narrows neither)."""
    return conn.rooms, conn.own_rooms


def subscribes(operations: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """Each subscribe: its room, and the grant and token it showed."""
    return [
        (op["room"], op.get("grant"), op.get("token"))
        for op in operations
        if op["op"] == "subscribe"
    ]


# The wire, as a client reads it


def test_replies_events_and_the_welcomes_rooms_read_back_as_the_server_writes_them() -> None:
    """What the server encodes, a client parses back field for field; what a client
    encodes, the server parses back."""
    ok = encode_reply("subscribe", 3, "chat:1", position=("e1", 41), expires=1764950400)
    assert parse_server_message(ok) == Reply("subscribe", 3, True, "chat:1", ("e1", 41), 1764950400)
    refused = encode_reply("subscribe", "x", "news", code=403, reason="no")
    assert parse_server_message(refused) == Reply(
        "subscribe", "x", False, "news", code=403, reason="no"
    )
    malformed = encode_reply("unknown", None, None, code=400, reason='"op" must be ...')
    assert parse_server_message(malformed) == Reply(
        "unknown", None, False, code=400, reason='"op" must be ...'
    )
    assert parse_server_message(encode_event("joined", "news", "server")) == RoomEvent(
        True, "news", "server"
    )
    assert parse_server_message(encode_event("left", "p:1", "expired")) == RoomEvent(
        False, "p:1", "expired"
    )
    welcome = encode_welcome(ConnId("w"), 10, session="s", rooms=["news", "lobby:1"])
    assert parse_welcome(welcome).rooms == ("news", "lobby:1")
    assert parse_welcome(encode_welcome(ConnId("w"), 10)) == Welcome(ConnId("w"), 10.0)
    for op in (
        Operation("subscribe", RoomId("chat:1"), 7, grant="ab12"),
        Operation("subscribe", RoomId("lobby:1")),
        Operation("refresh", RoomId("private:a"), "r-1", token="t.o.k"),
        Operation("unsubscribe", RoomId("lobby:1"), 8),
    ):
        assert parse_operation(op.as_message()["data"]) == op
    assert is_pong(PONG)
    assert is_pong(PONG.decode())
    assert not is_pong(PING)
    assert not is_pong(encode_event("left", "a", "server"))


# Subscribing


async def test_a_public_room_is_subscribed_and_unsubscribed() -> None:
    """subscribe returns where the room's stream stood; conn.rooms and own_rooms have
    the room, its pushes arrive; after unsubscribe neither, and none arrive."""
    changes = Changes()
    async with (
        running_server(**SETTINGS) as server,
        PushAPI(server.api_url) as api,
        client(server.ws_url, on_room_change=changes) as conn,
    ):
        done = await conn.subscribe("lobby:1")
        assert (done.room, done.expires) == ("lobby:1", None)
        assert done.position is not None
        epoch, seq = done.position
        assert isinstance(epoch, str)
        assert seq == 0
        assert rooms_of(conn) == (("lobby:1",), ("lobby:1",))
        assert (await api.push_room("lobby:1", "hello", 5)).delivered == 1
        assert await next_push(conn) == Push(5, "hello", "lobby:1")

        await conn.unsubscribe("lobby:1")
        assert rooms_of(conn) == ((), ())
        assert (await api.push_room("lobby:1", "gone", 5)).delivered == 0
        assert await changes.count(2) == [
            RoomChange("lobby:1", True, "subscribe"),
            RoomChange("lobby:1", False, "unsubscribe"),
        ]


async def test_a_refusal_raises_subscribe_error_with_the_servers_code_and_reason() -> None:
    """401, 403, 400 and 409 come back as SubscribeError (not retryable); the
    connection stays open and its rooms as they were."""
    async with (
        running_server(**SETTINGS, max_rooms_per_conn=2) as server,
        client(server.ws_url) as conn,
    ):

        async def refused(call: Any) -> SubscribeError:
            with pytest.raises(SubscribeError) as info:
                await call
            assert not isinstance(info.value, NoReplyError)
            assert not info.value.retryable
            return info.value

        server_room = await refused(conn.subscribe("news"))
        assert (server_room.op, server_room.room, server_room.code) == ("subscribe", "news", 403)
        assert server_room.reason == "only the back end may put a connection in news"
        assert str(server_room) == f"subscribe news: 403 {server_room.reason}"
        assert (await refused(conn.subscribe("chat:1"))).code == 401
        foreign = grant("00000000-0000-4000-8000-000000000000", "chat:1")
        assert (await refused(conn.subscribe("chat:1", grant=foreign))).code == 403
        assert (await refused(conn.subscribe("bad room!"))).code == 400
        assert (await refused(conn.unsubscribe("news"))).code == 403
        refresh = await refused(conn.refresh("private:x", subscription_token("private:x")))
        assert (refresh.op, refresh.code) == ("refresh", 409)
        await conn.subscribe("lobby:1")
        await conn.subscribe("lobby:2")
        assert (await refused(conn.subscribe("lobby:3"))).code == 409
        with pytest.raises(ValueError, match="not both"):
            await conn.subscribe("chat:1", grant="a", token="b")
        assert conn.rooms == ("lobby:1", "lobby:2")
        assert conn.state is State.OPEN


async def test_a_broker_away_is_a_503_that_may_be_retried(redis: RedisServer) -> None:
    """With Redis gone, a subscription cannot be made now: 503, retryable."""
    async with (
        running_server(**SETTINGS, broker=redis.url) as server,
        client(server.ws_url) as conn,
    ):
        await conn.subscribe("lobby:1")
        redis.kill()
        with pytest.raises(SubscribeError) as info:
            await conn.subscribe("lobby:2")
        assert (info.value.code, info.value.retryable) == (503, True)
        assert conn.rooms == ("lobby:1",)


async def test_a_grant_and_a_token_subscribe_and_a_refresh_renews() -> None:
    """A grant made for this wsId opens its room; a token's subscription says when
    it ends, and a refresh with a later token moves that."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as conn:
        by_grant = await conn.subscribe("chat:1", grant=grant(conn.ws_id, "chat:1"))
        assert (by_grant.room, by_grant.expires) == ("chat:1", None)
        soon = int(time.time()) + 600
        by_token = await conn.subscribe(
            "private:a", token=subscription_token("private:a", exp=soon)
        )
        assert by_token.expires == soon
        later = soon + 600
        renewed = await conn.refresh("private:a", subscription_token("private:*", exp=later))
        assert renewed == Subscribed("private:a", renewed.position, later)
        assert conn.rooms == ("chat:1", "private:a")


# Rooms kept true


async def test_rooms_follow_the_welcome_the_back_end_and_an_expiry() -> None:
    """The connection token's rooms from the welcome; the back end's joins and leaves
    as they happen (a room it takes away is not put back); a token's subscription
    gone at its exp."""
    changes = Changes()
    token = jwt.encode({"sub": "ann", "rooms": ["news"]}, SECRET, algorithm="HS256")
    async with (
        running_server(**SETTINGS) as server,
        PushAPI(server.api_url) as api,
        client(server.ws_url, token=token, on_room_change=changes) as conn,
    ):
        assert rooms_of(conn) == (("news",), ())
        await changes.until(RoomChange("news", True, "welcome"))

        await api.join("sports", conn.ws_id)
        await changes.until(RoomChange("sports", True, "server"))
        assert rooms_of(conn) == (("news", "sports"), ())
        await api.leave("sports", conn.ws_id)
        await changes.until(RoomChange("sports", False, "server"))
        assert conn.rooms == ("news",)

        await conn.subscribe("lobby:1")
        await api.leave("lobby:1", conn.ws_id)
        await changes.until(RoomChange("lobby:1", False, "server"))
        assert rooms_of(conn) == (("news",), ())

        end = int(time.time()) + 2  # waiting for a token's exp is waiting for time
        await conn.subscribe("private:a", token=subscription_token("private:a", exp=end))
        assert conn.own_rooms == ("private:a",)
        await changes.until(RoomChange("private:a", False, "expired"))
        assert rooms_of(conn) == (("news",), ())
        assert (await api.push_room("private:a", "after", 3)).delivered == 0


async def test_join_returns_once_the_rooms_say_so() -> None:
    """conn.join (through the API) returns only once the server's event has been
    read: with the WebSocket held in a frozen proxy, it waits for it."""
    async with running_server(**{**SETTINGS, "idle_timeout": 10.0}) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                PushAPI(server.api_url) as api,
                client(f"ws://{LOOPBACK}:{proxy.port}/connect", api=api) as conn,
            ):

                async def join_and_look() -> tuple[str, ...]:
                    await conn.join("news")
                    return conn.rooms

                proxy.freeze()
                joining = asyncio.create_task(join_and_look())
                # The API answers at once; the event is held: join must still wait.
                done, _ = await asyncio.wait({joining}, timeout=0.5 * UNIT)
                assert not done, f"join returned, rooms {joining.result()}"
                assert server.server.node.room_sizes() == {"news": 1}
                proxy.thaw()
                assert await asyncio.wait_for(joining, 5 * UNIT) == ("news",)
        finally:
            proxy.thaw()
            await proxy.close()


# Reconnects


async def test_a_resume_keeps_the_rooms_and_subscribes_nothing_again() -> None:
    """Cut, and resumed: the same wsId in the same rooms, and not one more
    operation on the wire, nor a grant asked for."""
    asked: list[tuple[str, str]] = []

    def grants(room: str, ws_id: str) -> str:
        asked.append((room, ws_id))
        return grant(ws_id, room)

    changes = Changes()
    states = StateLog()
    async with running_server(**KEPT) as server:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                PushAPI(server.api_url) as api,
                client(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    api=api,
                    grant_for=grants,
                    on_state_change=states,
                    on_room_change=changes,
                ) as conn,
            ):
                first_id = conn.ws_id
                await conn.subscribe("lobby:1")
                await conn.subscribe("chat:1", grant=grant(first_id, "chat:1"))
                await conn.subscribe("private:t", token=subscription_token("private:t"))
                await conn.join("news")
                rooms = ("lobby:1", "chat:1", "private:t", "news")
                assert conn.rooms == rooms
                before = proxy.operations()
                assert len(before) == 3

                await proxy.drop()
                await states.wait_for(State.OPEN, count=2)
                assert (conn.resumed, conn.ws_id) == (True, first_id)
                assert rooms_of(conn) == (rooms, rooms)
                assert proxy.operations() == before
                assert asked == []
                assert [c for c in changes.seen if c.reason == "welcome"] == []
                assert (await api.push_room("lobby:1", "still in", 3)).delivered == 1
                assert await next_push(conn) == Push(3, "still in", "lobby:1")
        finally:
            await proxy.close()


async def test_a_new_session_is_put_back_in_the_rooms_the_client_had_put_itself_in(
    http: aiohttp.ClientSession,
) -> None:
    """The session expired while the client was cut off: the new wsId subscribes
    again (a public room as it was; a grant room and a token room with what grant_for
    makes for the new wsId) and joins again; a room its connection token puts it in
    is not subscribed again, and the back end's room is the back end's to redo."""
    asked: list[tuple[str, str]] = []

    async def grants(room: str, ws_id: str) -> str:
        """The back end's answer: a grant, or a token bound to the connection."""
        asked.append((room, ws_id))
        if room.startswith("chat:"):
            return grant(ws_id, room)
        return subscription_token(room, wsId=ws_id)

    states = StateLog()
    changes = Changes()
    token = jwt.encode({"sub": "ann", "rooms": ["lobby:1"]}, SECRET, algorithm="HS256")
    async with running_server(**SETTINGS) as server:
        proxy = RecordingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with (
                PushAPI(server.api_url) as api,
                client(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    api=api,
                    token=token,
                    grant_for=grants,
                    on_state_change=states,
                    on_room_change=changes,
                ) as conn,
            ):
                first_id = conn.ws_id
                await conn.subscribe("lobby:1")  # in it already, by the token: its own too
                await conn.subscribe("lobby:2")
                await conn.subscribe("chat:1", grant=grant(first_id, "chat:1"))
                await conn.subscribe("private:t", token=await grants("private:t", first_id))
                await conn.join("news")
                await api.join("backend", first_id)
                await changes.until(RoomChange("backend", True, "server"))
                assert len(proxy.operations()) == 4

                proxy.freeze()
                await proxy.drop()
                await until_gone(http, server.api_url, first_id)
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)

                new_id = conn.ws_id
                assert new_id != first_id
                assert not conn.resumed
                assert asked == [("private:t", first_id), ("chat:1", new_id), ("private:t", new_id)]
                assert subscribes(proxy.operations()[4:]) == [
                    ("lobby:2", None, None),
                    ("chat:1", grant(new_id, "chat:1"), None),
                    ("private:t", None, subscription_token("private:t", wsId=new_id)),
                ]
                own = ("lobby:1", "lobby:2", "chat:1", "private:t", "news")
                assert sorted(conn.rooms) == sorted(own)
                assert conn.own_rooms == own
                for room in own:
                    assert (await api.push_room(room, room, 3)).delivered == 1
                    assert await next_push(conn) == Push(3, room, room)
                assert (await api.push_room("backend", "no", 3)).delivered == 0
                assert RoomChange("backend", False, "welcome") in changes.seen
        finally:
            await proxy.close()


async def test_a_new_session_cut_short_is_resumed_and_finished(
    http: aiohttp.ClientSession,
) -> None:
    """grant_for fails once: the client reconnects, resumes the new session (the
    same new wsId) and subscribes the rest again then."""
    asked: list[str] = []

    async def grants(room: str, ws_id: str) -> str:
        asked.append(ws_id)
        if len(asked) == 1:
            raise RuntimeError("the back end is busy")
        return grant(ws_id, room)

    states = StateLog()
    async with running_server(**{**SETTINGS, "session_ttl": 1.0}) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(
                f"ws://{LOOPBACK}:{proxy.port}/connect", grant_for=grants, on_state_change=states
            ) as conn:
                first_id = conn.ws_id
                await conn.subscribe("chat:1", grant=grant(first_id, "chat:1"))
                proxy.freeze()
                await proxy.drop()
                await until_gone(http, server.api_url, first_id)
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)
                assert len(asked) == 2
                assert asked == [conn.ws_id, conn.ws_id]
                assert conn.ws_id != first_id
                assert conn.rooms == ("chat:1",)
        finally:
            await proxy.close()


async def test_a_room_refused_in_a_new_session_is_given_up(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """No grant_for: a grant room cannot be subscribed again, nor a room whose token
    was bound to the old wsId (403): both are given up, and said so. A token bound to
    no wsId is shown again; the rest are back and the connection open."""
    states = StateLog()
    async with running_server(**SETTINGS) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(
                f"ws://{LOOPBACK}:{proxy.port}/connect", on_state_change=states
            ) as conn:
                first_id = conn.ws_id
                await conn.subscribe("chat:1", grant=grant(first_id, "chat:1"))
                bound = subscription_token("private:b", wsId=first_id)
                await conn.subscribe("private:b", token=bound)
                await conn.subscribe("lobby:1")
                await conn.subscribe("private:u", token=subscription_token("private:*"))
                proxy.freeze()
                await proxy.drop()
                await until_gone(http, server.api_url, first_id)
                with caplog.at_level(logging.WARNING, logger="pushgate.client"):
                    proxy.thaw()
                    await states.wait_for(State.OPEN, count=2)
                assert conn.ws_id != first_id
                back = ("lobby:1", "private:u")
                assert (sorted(conn.rooms), conn.own_rooms) == (sorted(back), back)
                given_up = [r.getMessage() for r in caplog.records if "not subscribed" in r.message]
                assert len(given_up) == 2
                assert given_up[0] == (
                    f"{conn.ws_id} is not subscribed to chat:1 again: "
                    "it was subscribed with a grant, and there is no grant_for"
                )
                assert given_up[1].startswith(
                    f"{conn.ws_id} is not subscribed to private:b again: subscribe private:b: 403 "
                )
                assert conn.state is State.OPEN
        finally:
            await proxy.close()


async def test_no_reply_while_reconnecting_or_when_the_connection_drops_first() -> None:
    """A subscribe cut off before its reply, or asked while reconnecting, raises
    NoReplyError (code None, retryable); once open again it works."""
    states = StateLog()
    async with running_server(**KEPT) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        try:
            async with client(
                f"ws://{LOOPBACK}:{proxy.port}/connect", on_state_change=states
            ) as conn:
                proxy.freeze()
                cut_off = asyncio.create_task(conn.subscribe("lobby:1"))
                await proxy.drop()
                with pytest.raises(NoReplyError) as info:
                    await asyncio.wait_for(cut_off, 5 * UNIT)
                assert (info.value.code, info.value.retryable) == (None, True)
                await states.wait_for(State.RECONNECTING)
                with pytest.raises(NoReplyError, match="not open"):
                    await conn.subscribe("lobby:2")
                proxy.thaw()
                await states.wait_for(State.OPEN, count=2)
                assert rooms_of(conn) == ((), ())  # the first never reached the server
                await conn.subscribe("lobby:2")
                assert conn.rooms == ("lobby:2",)
        finally:
            await proxy.close()


async def test_operations_are_paced_under_the_servers_message_rate() -> None:
    """60 subscribes at once, against the default 50 messages a second: every one
    is done, none refused for the rate, and the connection is the first."""
    async with running_server(**SETTINGS) as server, client(server.ws_url) as conn:
        rooms = [f"lobby:{n}" for n in range(60)]
        async with asyncio.timeout(10 * UNIT):
            await asyncio.gather(*(conn.subscribe(room) for room in rooms))
        assert sorted(conn.rooms) == sorted(rooms)
        assert conn.connects == 1
