"""The Python client (pushgate.client) and the terminal commands, against real servers."""

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from pushgate.client import (
    APIConnectionError,
    BadRequestError,
    ConflictError,
    ConnectError,
    Connection,
    NotFoundError,
    PayloadTooLargeError,
    Push,
    PushAPI,
    PushAPIError,
    State,
    UnauthorizedError,
    connect,
)
from tests.dropping_proxy import DroppingProxy
from tests.helpers import (
    FAST_TIMERS,
    LOOPBACK,
    UNIT,
    Running,
    free_port,
    pushgate_command,
    running_server,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
BACKOFF_INITIAL = 0.05 * UNIT  # quick retries, so that reconnect tests take little time
BACKOFF_MAX = 0.2 * UNIT


async def next_push(conn: Connection) -> Push:
    return await asyncio.wait_for(conn.recv(), 5 * UNIT)


def state_of(conn: Connection) -> State:
    """The state now (a call, so that the type checker does not narrow it)."""
    return conn.state


class StateLog:
    """An on_state_change callback that keeps what it saw, and lets a test await a state."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self._changed = asyncio.Condition()

    async def __call__(self, conn: Connection, state: State) -> None:
        async with self._changed:
            self.states.append(state)
            self._changed.notify_all()

    async def wait_for(self, state: State, count: int = 1) -> None:
        """Until ``state`` has been seen ``count`` times in all."""
        async with asyncio.timeout(10 * UNIT), self._changed:
            await self._changed.wait_for(lambda: self.states.count(state) >= count)


# The WebSocket client


async def test_pushes_to_all_and_to_a_joined_room_arrive_as_push_objects(server: Running) -> None:
    """The welcome gives ws_id and heartbeat; pushes arrive as Push(type, data, room)."""
    async with PushAPI(server.api_url) as api, connect(server.ws_url, api=api) as conn:
        assert UUID.match(conn.ws_id)
        assert conn.heartbeat == FAST_TIMERS["heartbeat"]
        assert conn.state is State.OPEN
        assert (await conn.join("news")).already_member is False
        assert conn.rooms == ("news",)

        assert (await api.push_all("to everyone", 3)).delivered == 1
        assert await next_push(conn) == Push(3, "to everyone", None)
        result = await api.push_room("news", {"headline": "hi", "n": [1, 2]}, 7)
        assert (result.delivered, result.room) == (1, "news")
        assert await next_push(conn) == Push(7, {"headline": "hi", "n": [1, 2]}, "news")

        assert (await conn.leave("news")).was_member is True
        assert not conn.rooms
        assert (await api.push_room("news", "gone", 3)).delivered == 0
    assert state_of(conn) is State.CLOSED


async def test_pings_every_heartbeat_and_swallows_the_pongs() -> None:
    """The client PINGs at the welcome's interval; PONGs never reach the caller."""
    pings: asyncio.Queue[str] = asyncio.Queue()

    async def gateway(ws: ServerConnection) -> None:
        await ws.send('{"type":0,"data":{"wsId":"w-1","heartbeat":0.05}}\n')
        for _ in range(2):
            message = await ws.recv()
            assert isinstance(message, str)
            await pings.put(message)
            await ws.send('{"type":1,"data":"PONG"}\n')
        await ws.send('{"type":5,"data":"after two pongs"}\n')
        await ws.wait_closed()

    async with serve(gateway, LOOPBACK, 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        async with connect(f"ws://{LOOPBACK}:{port}/connect", reconnect=False) as conn:
            assert (conn.ws_id, conn.heartbeat) == ("w-1", 0.05)
            assert await next_push(conn) == Push(5, "after two pongs")
    # Text frames, to the byte what a seed client sends.
    assert [pings.get_nowait(), pings.get_nowait()] == ['{"type":1,"data":"PING"}'] * 2


@pytest.mark.parametrize("session_ttl", [0.5, 0.0], ids=["sessions", "no sessions"])
async def test_a_dropped_connection_reconnects_and_is_back_in_its_rooms(
    session_ttl: float,
) -> None:
    """Cut under the client: it reconnects and is back in its rooms: the same wsId
    (its session resumed), or with sessions off a new wsId, the rooms joined again."""
    async with running_server(**{**FAST_TIMERS, "session_ttl": session_ttl}) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        states = StateLog()
        try:
            async with (
                PushAPI(server.api_url) as api,
                connect(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    api=api,
                    on_state_change=states,
                    backoff_initial=BACKOFF_INITIAL,
                    backoff_max=BACKOFF_MAX,
                ) as conn,
            ):
                await conn.join("news")
                first_id = conn.ws_id

                await proxy.drop()
                await states.wait_for(State.OPEN, count=2)

                assert (conn.ws_id == first_id) is (session_ttl > 0)
                assert conn.resumed is (session_ttl > 0)
                assert UUID.match(conn.ws_id)
                assert conn.connects == 2
                assert conn.close_code == 1006  # no close frame: the socket just ended
                assert states.states == [
                    State.CONNECTING,
                    State.OPEN,
                    State.RECONNECTING,
                    State.OPEN,
                ]
                await api.push_room("news", "still here", 3)
                assert await next_push(conn) == Push(3, "still here", "news")
        finally:
            await proxy.close()


async def test_a_restarted_server_is_reconnected_to() -> None:
    """The server stops (1001) and starts again on the same port: a new wsId."""
    states = StateLog()
    async with running_server(**FAST_TIMERS) as first:
        port = first.ws_port
        conn = connect(
            first.ws_url,
            on_state_change=states,
            backoff_initial=BACKOFF_INITIAL,
            backoff_max=BACKOFF_MAX,
        )
        await conn.open()
        first_id = conn.ws_id
    try:
        await states.wait_for(State.RECONNECTING)
        assert conn.close_code == 1001
        async with running_server(**{**FAST_TIMERS, "ws_port": port}) as second:
            await states.wait_for(State.OPEN, count=2)
            assert conn.ws_id != first_id
            async with PushAPI(second.api_url) as api:
                assert (await api.push_all("welcome back", 4)).delivered == 1
            assert await next_push(conn) == Push(4, "welcome back")
    finally:
        await conn.close()
    assert state_of(conn) is State.CLOSED


async def test_without_reconnect_iteration_ends_when_the_server_goes() -> None:
    """reconnect=False: `async for` ends on a drop, and close_code says why."""
    async with running_server(**FAST_TIMERS) as server:
        conn = connect(server.ws_url, reconnect=False)
        await conn.open()
    async with asyncio.timeout(5 * UNIT):
        assert [push async for push in conn] == []
    assert state_of(conn) is State.CLOSED
    assert conn.close_code == 1001
    await conn.close()


@pytest.mark.parametrize(
    ("end_session", "code", "closed_with"),
    [(True, None, 4410), (False, 4403, 4403)],
)
async def test_a_code_from_4400_to_4499_keeps_the_client_away(
    server: Running, end_session: bool, code: int | None, closed_with: int
) -> None:
    """An operator's disconnect that ends the session (4410 by default), or any code
    from 4400 to 4499: the client stops for good instead of coming straight back
    with a new wsId, which would undo the operator's act."""
    async with (
        PushAPI(server.api_url) as api,
        connect(server.ws_url, backoff_initial=BACKOFF_INITIAL, backoff_max=BACKOFF_MAX) as conn,
    ):
        done = await api.disconnect(ws_id=conn.ws_id, code=code, end_session=end_session)
        assert done.disconnected == [conn.ws_id]
        async with asyncio.timeout(5 * UNIT):
            assert [push async for push in conn] == []  # the end: no reconnect follows
        assert (state_of(conn), conn.close_code) == (State.CLOSED, closed_with)
        assert (await api.stats()).connections == 0


async def test_on_state_change_may_close_the_connection(server: Running) -> None:
    """A callback that closes the connection on the first drop ends it cleanly."""
    seen: list[State] = []

    async def give_up_on_drop(conn: Connection, state: State) -> None:
        seen.append(state)
        if state is State.RECONNECTING:
            await conn.close()

    proxy = DroppingProxy(LOOPBACK, server.ws_port)
    await proxy.start()
    try:
        conn = connect(f"ws://{LOOPBACK}:{proxy.port}/connect", on_state_change=give_up_on_drop)
        await conn.open()
        await proxy.drop()
        async with asyncio.timeout(5 * UNIT):
            assert [push async for push in conn] == []
        assert seen == [State.CONNECTING, State.OPEN, State.RECONNECTING, State.CLOSED]
        assert state_of(conn) is State.CLOSED
    finally:
        await proxy.close()


async def test_a_first_connection_that_fails_raises_connect_error() -> None:
    """Nothing listening: ConnectError at once, not a silent retry loop."""
    with pytest.raises(ConnectError, match="cannot connect to ws://"):
        async with asyncio.timeout(5 * UNIT), connect(f"ws://{LOOPBACK}:{free_port()}/connect"):
            pass


async def test_a_token_goes_as_the_pushgate_subprotocol_and_is_renewed_per_connect() -> None:
    """token=callable: called before each (re)connect; the gateway accepts the token."""
    secret = "a-test-secret-of-at-least-32-bytes!!"
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(jwt.encode({"sub": "alice", "n": len(issued)}, secret, algorithm="HS256"))
        return issued[-1]

    async with running_server(**FAST_TIMERS, token_secret=secret, require_token=True) as server:
        proxy = DroppingProxy(LOOPBACK, server.ws_port)
        await proxy.start()
        states = StateLog()
        try:
            async with (
                PushAPI(server.api_url) as api,
                connect(
                    f"ws://{LOOPBACK}:{proxy.port}/connect",
                    token=fresh_token,
                    on_state_change=states,
                    backoff_initial=BACKOFF_INITIAL,
                    backoff_max=BACKOFF_MAX,
                ) as conn,
            ):
                assert (await api.push_user("alice", "hi alice", 4)).delivered == 1
                assert await next_push(conn) == Push(4, "hi alice", user="alice")
                await proxy.drop()
                await states.wait_for(State.OPEN, count=2)
                assert len(issued) == 2
                status, out, err = await run_terminal(
                    "push", "user", "alice", "again", "--api", server.api_url
                )
                assert (status, out, err) == (0, "pushed to 1 connection of user alice\n", "")
                assert await next_push(conn) == Push(2, "again", user="alice")
        finally:
            await proxy.close()

    async with running_server(**FAST_TIMERS, token_secret=secret, require_token=True) as server:
        with pytest.raises(ConnectError, match="401"):
            async with connect(server.ws_url):
                pass


async def test_a_refused_handshake_raises_connect_error_with_the_servers_reason() -> None:
    """An expired token, a wrong path, the API's port: the message says what the server
    said, and ``refusal`` holds it; the API's port gets a hint at the gateway's."""
    secret = "a-test-secret-of-at-least-32-bytes!!"
    expired = jwt.encode({"sub": "alice", "exp": 1_000_000_000}, secret, algorithm="HS256")
    async with running_server(**FAST_TIMERS, token_secret=secret, require_token=True) as server:
        with pytest.raises(ConnectError) as refused:
            async with connect(server.ws_url, token=expired):
                pass
        assert str(refused.value) == (
            f"cannot connect to {server.ws_url}: HTTP 403: the token has expired"
        )
        assert refused.value.refusal is not None
        assert (refused.value.refusal.status, refused.value.refusal.reason) == (
            403,
            "the token has expired",
        )

        wrong_path = server.ws_url.removesuffix("/connect") + "/socket"
        with pytest.raises(ConnectError, match=r"HTTP 404: .*the WebSocket endpoint is /connect$"):
            async with connect(wrong_path):
                pass

        api_port = "ws" + server.api_url.removeprefix("http") + "/connect"
        with pytest.raises(ConnectError) as refused:
            async with connect(api_port):
                pass
        assert str(refused.value) == (
            f"cannot connect to {api_port}: HTTP 404: no such endpoint: /connect "
            "(is this the logic API's port? the gateway is on --ws-port, 8888 by default)"
        )

    with pytest.raises(ConnectError) as unanswered:
        async with connect(f"ws://{LOOPBACK}:{free_port()}/connect"):
            pass
    assert unanswered.value.refusal is None


async def test_listen_says_why_the_gateway_refused_it_and_what_to_do() -> None:
    """`listen` without the token a gateway requires: the reason and where a token
    goes, in one line, status 1."""
    secret = "a-test-secret-of-at-least-32-bytes!!"
    async with running_server(**FAST_TIMERS, token_secret=secret, require_token=True) as server:
        status, out, err = await run_terminal("listen", server.ws_url)
    assert (status, out) == (1, "")
    assert err == (
        f"pushgate: cannot connect to {server.ws_url}: HTTP 401: a connection token is "
        "required (?token=… or subprotocol) (give one with --token or $PUSHGATE_TOKEN; "
        "`pushgate token` makes one)\n"
    )


# PushAPI


async def test_the_api_raises_typed_errors_with_the_servers_message_and_field() -> None:
    """400, 404, 409 and 413 raise their subclasses; nothing returns an error body."""
    async with (
        running_server(**FAST_TIMERS, max_rooms_per_conn=1, max_body_bytes=256) as server,
        PushAPI(server.api_url) as api,
        connect(server.ws_url) as conn,
    ):
        with pytest.raises(BadRequestError) as bad:
            await api.push_all("x", 1)
        assert (bad.value.status, bad.value.field) == (400, "tag")
        assert "tag must be an integer" in bad.value.message

        unknown = "3cc97117-aa4d-45bb-86db-a1d77e51283b"
        with pytest.raises(NotFoundError) as missing:
            await api.join("news", unknown)
        assert (missing.value.status, missing.value.field) == (404, "wsId")
        assert unknown in missing.value.message

        await api.join("one", conn.ws_id)
        with pytest.raises(ConflictError) as full:
            await api.join("two", conn.ws_id)
        assert full.value.status == 409

        with pytest.raises(PayloadTooLargeError) as big:
            await api.push_all("x" * 1000, 3)
        assert big.value.status == 413

        assert await api.healthz() == "serving"
        stats = await api.stats()
        assert (stats.connections, stats.rooms) == (1, 1)
        assert isinstance(bad.value, PushAPIError)


async def test_with_api_keys_a_missing_or_wrong_key_raises_unauthorized() -> None:
    """Against a server with keys: none is 401, a wrong one 403, a right one works."""
    async with running_server(**FAST_TIMERS, api_key="old-key,new-key") as server:
        for key, status in ((None, 401), ("nope", 403)):
            async with PushAPI(server.api_url, api_key=key) as refused:
                with pytest.raises(UnauthorizedError) as error:
                    await refused.push_all("x", 3)
                assert error.value.status == status
        async with PushAPI(server.api_url, api_key="new-key") as api:
            assert (await api.push_all("x", 3)).delivered == 0
            assert await api.healthz() == "serving"


async def test_an_unreachable_api_raises_api_connection_error() -> None:
    """No server: APIConnectionError (a PushAPIError) with status None."""
    async with PushAPI(f"http://{LOOPBACK}:{free_port()}", timeout=5 * UNIT) as api:
        with pytest.raises(APIConnectionError) as error:
            await api.push_all("x", 3)
    assert error.value.status is None
    assert "cannot reach" in str(error.value)


async def test_an_api_key_is_sent_as_a_bearer_token() -> None:
    """api_key="k" sends Authorization: Bearer k; without one, no Authorization."""
    seen: list[str | None] = []

    async def healthz(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"ok": True, "status": "serving"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        url = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
        async with PushAPI(url, api_key="k-123") as with_key, PushAPI(url) as without:
            await with_key.healthz()
            await without.healthz()
    finally:
        await runner.cleanup()
    assert seen == ["Bearer k-123", None]


# The terminal commands, run as `python -m pushgate listen|push|join|leave`


def terminal_command(*args: str) -> list[str]:
    return pushgate_command(*args)


async def run_terminal(*args: str) -> tuple[int, str, str]:
    """Run a terminal command to its end; return (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *terminal_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 15 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@asynccontextmanager
async def listening(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``listen`` in a child process, once it has said it joined (or connected)."""
    process = await asyncio.create_subprocess_exec(
        *terminal_command("listen", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        ready = "pushgate: joined" if "--join" in args else "pushgate: connected"
        said: list[str] = []
        async with asyncio.timeout(15 * UNIT):
            while ready not in (line := (await process.stderr.readline()).decode()):
                said.append(line)
                assert line, "listen exited before it was ready:\n" + "".join(said)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def interrupt(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Ctrl-C: return (status, everything it printed on stdout)."""
    process.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(process.communicate(), 10 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_listen_prints_pushes_with_time_type_room_and_data(server: Running) -> None:
    """`listen --join news`: one readable line per push; Ctrl-C exits 0."""
    async with listening(server.ws_url, "--join", "news", "--api", server.api_url) as process:
        assert process.stdout is not None
        async with PushAPI(server.api_url) as api:
            await api.push_room("news", {"headline": "hi"}, 3)
            first = await asyncio.wait_for(process.stdout.readline(), 5 * UNIT)
            await api.push_all("to all", 4)
            second = await asyncio.wait_for(process.stdout.readline(), 5 * UNIT)
        status, rest = await interrupt(process)
    time = r"\d\d:\d\d:\d\d\.\d\d\d"
    assert re.fullmatch(time + r'  type 3  room news  \{"headline":"hi"\}\n', first.decode())
    assert re.fullmatch(time + r'  type 4  all  "to all"\n', second.decode())
    assert (status, rest) == (0, "")


async def test_listen_json_prints_one_json_object_per_push(server: Running) -> None:
    """`listen --json`: JSON lines, the message as received plus its time."""
    async with listening(server.ws_url, "--json") as process:
        assert process.stdout is not None
        async with PushAPI(server.api_url) as api:
            await api.push_all([1, "two"], 9)
            line = await asyncio.wait_for(process.stdout.readline(), 5 * UNIT)
        status, _ = await interrupt(process)
    message = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message.pop("time"))
    # Its position in the stream of pushes to all, as received.
    assert message.pop("seq") >= 1
    assert isinstance(message.pop("epoch"), str)
    assert message == {"type": 9, "data": [1, "two"]}
    assert status == 0


async def test_listen_to_nothing_is_one_line_and_status_1() -> None:
    """A gateway that is not there: one clear line on stderr, exit 1."""
    status, out, err = await run_terminal("listen", f"ws://{LOOPBACK}:{free_port()}/connect")
    assert (status, out) == (1, "")
    assert re.fullmatch(r"pushgate: cannot connect to ws://\S+: .+\n", err)


async def test_push_join_and_leave_commands_say_what_happened(server: Running) -> None:
    """push all|room, join and leave print one line each and exit 0."""
    api = ("--api", server.api_url)
    async with connect(server.ws_url) as conn:
        assert await run_terminal("join", "news", conn.ws_id, *api) == (
            0,
            f"{conn.ws_id} is now in room news\n",
            "",
        )
        assert await run_terminal("push", "all", "test push", "--tag", "3", *api) == (
            0,
            "pushed to 1 connection\n",
            "",
        )
        assert await next_push(conn) == Push(3, "test push")
        status, out, _ = await run_terminal("push", "room", "news", '{"a":1}', "--json-value", *api)
        assert (status, out) == (0, "pushed to 1 connection in room news\n")
        assert await next_push(conn) == Push(2, {"a": 1}, "news")
        assert await run_terminal("leave", "news", conn.ws_id, *api) == (
            0,
            f"{conn.ws_id} left room news\n",
            "",
        )


async def test_api_commands_fail_with_one_line_and_status_1_or_2(server: Running) -> None:
    """An error answer is one line naming the field (status 1); bad usage is status 2."""
    api = ("--api", server.api_url)
    status, out, err = await run_terminal("push", "all", "x", "--tag", "1", *api)
    assert (status, out) == (1, "")
    assert err.startswith("pushgate: HTTP 400: tag must be an integer")
    assert err.endswith(" (field tag)\n")
    assert err.count("\n") == 1

    unknown = "3cc97117-aa4d-45bb-86db-a1d77e51283b"
    status, _, err = await run_terminal("join", "news", unknown, *api)
    assert (status, err) == (
        1,
        f"pushgate: HTTP 404: no open connection with wsId {unknown} (field wsId)\n",
    )

    status, _, err = await run_terminal("push", "all", "{nope", "--json-value", *api)
    assert status == 2
    assert err.startswith("pushgate: VAL is not valid JSON")

    status, _, err = await run_terminal("push", "room", *api)  # no ROOM, no VAL
    assert status == 2
    assert "required" in err

    status, _, err = await run_terminal(
        "push", "all", "x", "--api", f"http://{LOOPBACK}:{free_port()}"
    )
    assert status == 1
    assert err.startswith("pushgate: cannot reach http://")


async def test_the_operators_commands(tmp_path: Path) -> None:
    """stats, rooms [ROOM], connection, user, push conn, push batch, join --user and
    disconnect: one readable answer each, "1 connection" never "1 connections" (or
    the API's JSON with --json)."""
    secret = "a-test-secret-of-at-least-32-bytes!!"
    async with running_server(**FAST_TIMERS, token_secret=secret) as server:
        api = ("--api", server.api_url)
        token = jwt.encode({"sub": "alice"}, secret, algorithm="HS256")
        async with connect(server.ws_url, token=token) as conn:
            assert await run_terminal("join", "vip", "--user", "alice", *api) == (
                0,
                "1 connection of user alice joined room vip\n",
                "",
            )
            status, out, _ = await run_terminal("stats", *api)
            assert (status, out.splitlines()[0]) == (0, "1 connection, 1 room, 1 user")
            status, out, _ = await run_terminal("rooms", "vip", *api)
            assert out.splitlines()[0] == "room vip: 1 member"
            assert (await run_terminal("rooms", *api))[1] == "       1  vip\n"
            status, out, _ = await run_terminal("rooms", "vip", "--json", *api)
            answer = json.loads(out)
            assert (answer["count"], answer["members"][0]["wsId"]) == (1, conn.ws_id)
            status, out, _ = await run_terminal("connection", conn.ws_id, *api)
            assert out.startswith(f"{conn.ws_id}: connected on gateway ")
            assert out.endswith("; alice; vip\n")
            status, out, _ = await run_terminal("user", "alice", *api)
            assert out.startswith(conn.ws_id)

            assert await run_terminal("push", "conn", conn.ws_id, "only you", *api) == (
                0,
                f"pushed to {conn.ws_id}\n",
                "",
            )
            assert await next_push(conn) == Push(2, "only you")
            batch = tmp_path / "batch.json"
            batch.write_text(
                json.dumps(
                    [
                        {"target": "room", "id": "vip", "val": 1, "tag": 3},
                        {"target": "moon", "val": 2, "tag": 3},
                    ]
                )
            )
            status, out, _ = await run_terminal("push", "batch", str(batch), *api)
            assert status == 1  # one of them failed
            assert out.splitlines() == [
                "1: pushed to 1 connection (room)",
                "2: HTTP 400: target must be one of all, room, user, conn; got 'moon' "
                "(field target)",
                "1 of 2 pushes done",
            ]
            assert await next_push(conn) == Push(3, 1, "vip")

            status, out, _ = await run_terminal(
                "disconnect", "--user", "alice", "--code", "4321", *api
            )
            assert (status, out) == (0, f"closed 1 connection with 4321\n{conn.ws_id}\n")
        status, _, err = await run_terminal("disconnect", *api)
        assert (status, err) == (
            2,
            "pushgate: disconnect: give a WSID or --user UID (one of them)\n",
        )


async def test_http_sessions_are_not_leaked_by_a_push_api_used_without_async_with(
    server: Running,
) -> None:
    """PushAPI opens its pool on first use; close() releases it; a shared session stays open."""
    api = PushAPI(server.api_url)
    await api.healthz()
    await api.close()
    async with aiohttp.ClientSession() as session:
        shared = PushAPI(server.api_url, session=session)
        await shared.healthz()
        await shared.close()
        assert not session.closed
