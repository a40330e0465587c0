"""The two fan-out paths (pushgate/speedups.py): the compiled one does what the
Python methods do for an open WebSocket connection, and hands every other case to
them. The unit tests run on both paths (the ``fanout`` fixture); the last ones run
``pushgate serve`` in a child process with the compiled path and without it."""

import asyncio
import logging
import os
import subprocess
import sys
import types
from typing import Any

import aiohttp
import pytest
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

import pushgate
from pushgate import speedups
from pushgate.broker.memory import MemoryBroker
from pushgate.config import Config
from pushgate.connection import WebSocketConnection
from pushgate.framing import deflated_text_frame, text_frame
from pushgate.gatekeeper import Gatekeeper
from pushgate.gatewayhttp import GatewayRoutes
from pushgate.hub import Encoding, Hub, Outgoing
from pushgate.ids import ConnId, RoomId
from pushgate.meters import Meters
from pushgate.node import Node
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.phase import Phase
from tests.helpers import (
    UNIT,
    RawClient,
    open_client,
    post,
    pushgate_command,
    require_compiled,
    server_process,
    without_position,
)
from tests.test_connection import FakeTransport, frames_in

both_paths = pytest.mark.usefixtures("fanout")

# Messages (what the hub is handed) and the frames a WebSocket connection writes.
PUSH = b'{"type":2,"data":"x"}\n'
LONG_PUSH = b'{"type":2,"data":"%s"}\n' % (b"compressible " * 40)


class Gateway:
    """A node, one outbox with meters, and open connections on fake transports."""

    def __init__(self, node: Node, outbox: Outbox) -> None:
        self.node = node
        self.outbox = outbox
        self.conns: list[WebSocketConnection] = []
        self.transports: list[FakeTransport] = []
        self.clients: list[ClientProtocol] = []
        self._counted = (0, 0, 0)

    @property
    def hub(self) -> Hub:
        return self.node.hub

    @property
    def meters(self) -> Meters:
        assert self.outbox.meters is not None
        return self.outbox.meters

    def counted(self) -> tuple[int, int, int]:
        """Writes, frames and bytes counted since the last look (the handshakes' too)."""
        m = self.meters
        now = (m.writes, m.frames_written, m.bytes_written)
        then, self._counted = self._counted, now
        return (now[0] - then[0], now[1] - then[1], now[2] - then[2])

    def connect(self, kind: type[WebSocketConnection] = WebSocketConnection) -> int:
        """Open one more connection through its handshake; its index."""
        conn = kind(
            self.node,
            Config(session_ttl=0).connection_settings(),
            self.outbox,
            ConnectionRegistry(),
            GatewayRoutes(self.node, Gatekeeper()),
        )
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"), max_size=None)
        client.send_request(client.connect())
        for chunk in client.data_to_send():
            conn.data_received(chunk)
        frames_in(client, b"".join(transport.writes))  # the 101 and the welcome
        transport.writes.clear()
        assert conn._phase is Phase.OPEN
        self.conns.append(conn)
        self.transports.append(transport)
        self.clients.append(client)
        return len(self.conns) - 1

    def received(self, i: int) -> list[bytes]:
        """The messages connection ``i`` was sent since the last look."""
        data = b"".join(self.transports[i].writes)
        self.transports[i].writes.clear()
        return [bytes(frame.data) for frame in frames_in(self.clients[i], data)]


async def gateway(conns: int) -> Gateway:
    node = Node(Hub(max_rooms_per_conn=10), MemoryBroker())
    await node.start()
    gw = Gateway(node, Outbox(asyncio.get_running_loop(), Meters()))
    for _ in range(conns):
        gw.connect()
    gw.counted()
    return gw


async def next_turn() -> None:
    """One turn of the event loop: the outbox writes what was queued."""
    await asyncio.sleep(0)


@both_paths
async def test_pushes_of_one_turn_reach_each_connection_in_one_write_in_order() -> None:
    """Three pushes to five connections: one write each, the frames in order, and
    the writes, frames and bytes counted."""
    gw = await gateway(5)
    messages = [b'{"type":2,"data":%d}\n' % i for i in range(3)]
    for message in messages:
        assert gw.hub.broadcast(Outgoing(message)) == 5
    assert all(t.writes == [] for t in gw.transports)  # nothing written inside the fan-out
    await next_turn()
    assert [len(t.writes) for t in gw.transports] == [1] * 5
    for i in range(5):
        assert gw.received(i) == [b'{"type":2,"data":%d}\n' % n for n in range(3)]
    assert gw.counted() == (5, 15, 5 * sum(len(text_frame(m)) for m in messages))
    assert gw.hub.delivered[gw.conns[0].encoding] == 15


@both_paths
async def test_a_push_skips_the_connection_it_names() -> None:
    """A push that skips its sender reaches the others and counts them only."""
    gw = await gateway(3)
    assert gw.hub.broadcast(Outgoing(PUSH), skip=gw.conns[1]) == 2
    await next_turn()
    assert [len(gw.received(i)) for i in range(3)] == [1, 0, 1]


@both_paths
async def test_a_connection_whose_welcome_waits_holds_its_pushes_and_counts_them() -> None:
    """Fan-out to a connection still WELCOMING is queued, not written, and counted
    against its output bound; released, it is written in order."""
    gw = await gateway(2)
    gw.conns[0]._phase = Phase.WELCOMING
    gw.hub.broadcast(Outgoing(PUSH))
    await next_turn()
    assert gw.transports[0].writes == []
    assert gw.conns[0]._held_bytes == len(text_frame(PUSH))
    assert len(gw.received(1)) == 1
    gw.conns[0].release()
    assert gw.received(0) == [b'{"type":2,"data":"x"}\n']


@both_paths
async def test_a_closing_transport_is_not_written_and_its_queue_is_dropped() -> None:
    """A connection whose transport is closing gets no write; what waited is dropped."""
    gw = await gateway(2)
    gw.transports[0].closed = True
    gw.hub.broadcast(Outgoing(PUSH))
    await next_turn()
    assert gw.transports[0].writes == []
    assert gw.conns[0]._pending == []
    assert len(gw.received(1)) == 1
    assert gw.counted()[:2] == (1, 1)


@both_paths
async def test_a_write_that_raises_drops_that_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transport whose write raises is aborted and logged; the others are written."""
    gw = await gateway(3)

    def broken(data: bytes) -> None:
        raise OSError("broken pipe")

    gw.transports[1].write = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "pushgate.gateway"):
        gw.hub.broadcast(Outgoing(PUSH))
        await next_turn()
    assert gw.transports[1].closed
    assert [len(gw.received(i)) for i in (0, 2)] == [1, 1]
    assert gw.counted()[:2] == (2, 2)
    (record,) = [r for r in caplog.records if "failed; dropping it" in r.getMessage()]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], OSError)


@both_paths
async def test_a_backlogged_connection_over_its_bound_is_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that holds more than a little is checked at each write; over
    --max-output-bytes it takes no more fan-out and is closed with 1008."""
    gw = await gateway(2)
    slow, transport = gw.conns[0], gw.transports[0]
    slow.pause_writing()  # the transport holds more than a little
    assert slow._backlogged
    held = slow._settings.max_output_bytes + 1
    transport.get_write_buffer_size = lambda: held  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, "pushgate.gateway"):
        gw.hub.broadcast(Outgoing(PUSH))
        await next_turn()
    assert slow._phase is Phase.STOPPED
    assert any("slow consumer" in r.getMessage() for r in caplog.records)
    gw.hub.broadcast(Outgoing(PUSH))  # stopped: no more fan-out
    await next_turn()
    await next_turn()  # the close, queued on the turn after the write
    assert [f for f in gw.received(0) if f.startswith(b"{")] == [b'{"type":2,"data":"x"}\n']
    assert gw.clients[0].close_rcvd is not None
    assert gw.clients[0].close_rcvd.code == 1008
    assert len(gw.received(1)) == 2


@both_paths
async def test_a_push_is_compressed_once_for_every_connection_that_compresses() -> None:
    """Connections that negotiated permessage-deflate get the push compressed, the
    same bytes for each; the others get it plain."""
    gw = await gateway(4)
    for conn in gw.conns[:3]:
        conn._deflate_bits = 15
    gw.hub.broadcast(Outgoing(LONG_PUSH))
    await next_turn()
    written = [t.writes[0] for t in gw.transports]
    plain = text_frame(LONG_PUSH)
    assert written[0] == deflated_text_frame(plain, 15) != plain
    assert written[0] is written[1] is written[2]
    assert written[3] == plain


@both_paths
async def test_a_connection_of_another_class_gets_its_own_methods() -> None:
    """The compiled path does the work of WebSocketConnection's own send and flush
    only; a subclass's are called, as any other sink's are."""
    calls: list[str] = []

    class Recording(WebSocketConnection):
        __slots__ = ()

        def send(self, frame: bytes) -> None:
            calls.append("send")
            super().send(frame)

        def flush(self) -> None:
            calls.append("flush")
            super().flush()

    gw = await gateway(1)
    gw.connect(Recording)
    calls.clear()
    gw.hub.broadcast(Outgoing(PUSH))
    await next_turn()
    assert calls == ["send", "flush"]
    assert [len(gw.received(i)) for i in range(2)] == [1, 1]


@both_paths
async def test_connections_of_two_encodings_each_get_theirs_and_are_counted() -> None:
    """Beside another protocol's sink, an open WebSocket connection still gets its
    frame; each encoding's recipients are counted, the skipped one not."""
    gw = await gateway(3)
    other = Encoding("other", lambda message: b"other:" + message, bytes)

    class Other:
        connected_at = 0.0
        encoding = other

        def __init__(self) -> None:
            self.got: list[bytes] = []

        def send(self, frame: bytes) -> None:
            self.got.append(frame)

        def close(self, code: int, reason: str) -> None:
            raise AssertionError("not closed here")

        def member(self, room: RoomId, joined: bool, reason: str) -> None:
            raise AssertionError("not moved here")

    others = [Other(), Other()]
    for n, sink in enumerate(others):
        gw.hub.register(ConnId(f"other-{n}"), sink)
    assert gw.hub.broadcast(Outgoing(PUSH), skip=gw.conns[2]) == 4
    await next_turn()
    assert [len(gw.received(i)) for i in range(3)] == [1, 1, 0]
    assert [sink.got for sink in others] == [[b"other:" + PUSH]] * 2
    assert gw.hub.delivered == {gw.conns[0].encoding: 2, other: 2}


async def test_the_compiled_path_does_the_common_case_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiled, an open connection's send and flush (compressing or not) are done
    without calling the Python methods: the tests above test the compiled code."""
    monkeypatch.setattr(speedups, "compiled", require_compiled())
    gw = await gateway(2)
    gw.conns[1]._deflate_bits = 15

    def not_called(*args: object) -> None:
        raise AssertionError("the Python method was called")

    monkeypatch.setattr(WebSocketConnection, "send", not_called)
    monkeypatch.setattr(WebSocketConnection, "flush", not_called)
    gw.hub.broadcast(Outgoing(LONG_PUSH))
    await next_turn()
    assert gw.received(0) == [LONG_PUSH]
    assert gw.transports[1].writes == [deflated_text_frame(text_frame(LONG_PUSH), 15)]


# The switch, and a server in a child process on each path


def test_the_switch_is_read_from_the_environment() -> None:
    """PUSHGATE_NO_SPEEDUPS=1 chooses the pure-Python path, and --version says
    which path a process takes."""
    env = {**os.environ, "PUSHGATE_NO_SPEEDUPS": "1"}
    result = subprocess.run(
        pushgate_command("--version"), env=env, capture_output=True, text=True, check=True
    )
    assert "(fan-out: pure Python" in result.stdout
    require_compiled()
    env["PUSHGATE_NO_SPEEDUPS"] = "0"
    result = subprocess.run(
        pushgate_command("--version"), env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.endswith("(fan-out: compiled)\n")


def test_a_build_of_another_interface_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """An extension built from another version of _speedups.c (an editable install
    not rebuilt since) is not used, and the reason says what to do."""
    stale = types.ModuleType("pushgate._speedups")
    stale.INTERFACE = speedups.INTERFACE - 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pushgate._speedups", stale)
    monkeypatch.setattr(pushgate, "_speedups", stale, raising=False)
    assert speedups._load() == (None, "pushgate._speedups out of date: reinstall pushgate")


def test_the_compiled_path_is_used_where_it_was_built() -> None:
    """Built, and not turned off, the extension is what fan-out uses."""
    built = require_compiled()
    assert speedups.compiled is (None if speedups.DISABLED else built)


@pytest.mark.parametrize("path", ["compiled", "python"])
async def test_a_server_fans_out_in_order_and_closes_a_client_that_does_not_read(
    path: str, http: aiohttp.ClientSession
) -> None:
    """``pushgate serve`` on each path: 200 clients get every push in order; a client
    that does not read is closed with 1008 while the others go on receiving."""
    if path == "compiled":
        require_compiled()
    env = {"PUSHGATE_NO_SPEEDUPS": "1" if path == "python" else "0"}
    limit = 256 * 1024
    args = ("--max-output-bytes", str(limit), "--session-ttl", "0", "--log-level", "info")
    async with server_process(*args, env=env) as server:
        described = "fan-out compiled" if path == "compiled" else "fan-out pure Python"
        assert any(described in line for line in server.log), server.log
        api = f"http://127.0.0.1:{server.api_port}"
        async with http.get(api + "/metrics") as response:
            assert f'fanout="{path}"' in await response.text()
        clients = await asyncio.gather(
            *(open_client(server.ws_url, max_size=None) for _ in range(200))
        )
        slow = RawClient(server.ws_url, answer_pings=True, receive_buffer=4096)
        await slow.connect()  # and then reads nothing
        slow_id = (await slow.next_message())["data"]["wsId"]
        readers = [ws_id for _, ws_id in clients[:3]]
        for ws_id in [slow_id, *readers]:
            status, _ = await post(http, api + "/room/join", data={"id": "big", "wsId": ws_id})
            assert status == 200
        val, sent = "x" * 64 * 1024, 0
        async with asyncio.timeout(30 * UNIT):
            while True:  # to all, small; to the room, big, until the slow one is closed
                status, _ = await post(http, api + "/push/all", json={"val": sent, "tag": 2})
                assert status == 200
                status, _ = await post(
                    http, api + "/push/room", json={"id": "big", "val": [sent, val], "tag": 3}
                )
                assert status == 200
                sent += 1
                status, _ = await post(
                    http, api + "/room/join", data={"id": "probe", "wsId": slow_id}
                )
                if status == 404:  # the server has let go of the slow client
                    break
                assert sent < 1000, "the client that does not read was never closed"
        for i, (ws, _) in enumerate(clients):
            got: list[Any] = []
            for _ in range(sent * (2 if i < 3 else 1)):
                got.append(without_position(await asyncio.wait_for(ws.recv(), 5 * UNIT)))
            small = [m for m in got if m.startswith('{"type":2,')]
            assert small == [f'{{"type":2,"data":{n}}}\n' for n in range(sent)]
            if i < 3:  # the room's readers: every big push too, in order
                big = [m[:30] for m in got if m.startswith('{"type":3,')]
                assert big == [(f'{{"type":3,"data":[{n},"' + val)[:30] for n in range(sent)]
        close = await slow.close_frame(timeout=10 * UNIT)
        assert close.code == 1008
        assert "slow consumer" in close.reason
        await slow.aclose()
        await asyncio.gather(*(ws.close() for ws, _ in clients))
