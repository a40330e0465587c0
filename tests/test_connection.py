"""One connection's output path, driven through a fake transport (no sockets):
frames queued in one turn of the event loop leave in one write, in order."""

import asyncio
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from pushgate.broker.memory import MemoryBroker
from pushgate.config import Config
from pushgate.connection import INPUT_PER_TURN, WebSocketConnection
from pushgate.gatekeeper import Gatekeeper
from pushgate.gatewayhttp import GatewayRoutes
from pushgate.hub import Hub
from pushgate.memorysessions import MemorySessions
from pushgate.namespaces import Namespaces, parse_namespace
from pushgate.node import Node
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.streams import TOPIC_ALL, Publication
from pushgate.wire import PONG
from pushgate.wsinput import at_frame_boundary

# Each test runs on both fan-out paths, compiled and pure Python (conftest.py).
pytestmark = pytest.mark.usefixtures("fanout")


class FakeTransport:
    """Records writes; implements the slice of asyncio.Transport a connection uses."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False
        self.reading = asyncio.Event()

    def pause_reading(self) -> None:
        self.paused = True
        self.reading.clear()

    def resume_reading(self) -> None:
        self.paused = False
        self.reading.set()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default


async def new_connection(
    config: Config | None = None,
    *,
    node: Node | None = None,
    namespaces: Namespaces | None = None,
) -> tuple[Node, WebSocketConnection, FakeTransport, ClientProtocol]:
    """A TCP connection made (to ``node``, by default one on the memory broker without
    sessions), and a client whose handshake request is ready to send."""
    if node is None:
        node = Node(Hub(max_rooms_per_conn=10), MemoryBroker())
    await node.start()
    conn = WebSocketConnection(
        node,
        (config or Config()).connection_settings(),
        Outbox(asyncio.get_running_loop()),
        ConnectionRegistry(),
        GatewayRoutes(node, Gatekeeper(), namespaces=namespaces),
    )
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"))
    client.send_request(client.connect())
    return node, conn, transport, client


async def open_connection(
    config: Config | None = None,
) -> tuple[Node, WebSocketConnection, FakeTransport, ClientProtocol]:
    """A connection through its handshake; the transport's record starts empty after it."""
    node, conn, transport, client = await new_connection(config)
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    handshake = b"".join(transport.writes)
    transport.writes.clear()
    assert handshake.startswith(b"HTTP/1.1 101 ")
    welcome = frames_in(client, handshake)
    assert [f.opcode for f in welcome] == [Opcode.TEXT]
    assert bytes(welcome[0].data).startswith(b'{"type":0,"data":{"wsId":"')
    return node, conn, transport, client


def frames_in(client: ClientProtocol, data: bytes) -> list[Frame]:
    client.receive_data(data)
    return [event for event in client.events_received() if isinstance(event, Frame)]


async def test_a_subscribe_to_a_room_without_pushes_is_answered_in_the_turn_that_read_it() -> None:
    """On the memory broker, with sessions: a client's subscribe to a room no push
    has reached yet (its stream's position is read for the session and the reply)
    is answered in the same turn, without a task to wait for."""
    node, conn, transport, client = await new_connection(
        Config(session_ttl=60.0),
        node=Node(Hub(max_rooms_per_conn=10), MemoryBroker(), sessions=MemorySessions(ttl=60.0)),
        namespaces=Namespaces([parse_namespace("=public")]),
    )
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    await asyncio.sleep(0)  # the session is written: the welcome goes
    client.receive_data(b"".join(transport.writes))
    client.events_received()
    transport.writes.clear()
    client.send_text(b'{"type":0,"data":{"op":"subscribe","room":"lobby","id":1}}')
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    [reply] = frames_in(client, b"".join(transport.writes))
    assert bytes(reply.data).startswith(b'{"type":0,"data":{"op":"subscribe","id":1,"ok":true')
    assert b'"position":' in bytes(reply.data)
    await node.close()


async def test_handshake_then_welcome_in_that_order() -> None:
    """The 101 response goes out before the welcome frame, and nothing else."""
    await open_connection()  # asserts the order itself


@pytest.mark.parametrize("session_ttl", [0.0, 60.0])
async def test_the_101_and_the_welcome_share_one_write(session_ttl: float) -> None:
    """A connection welcomed at once costs one write for its handshake and welcome:
    without a session, and with one on the memory broker (written in the same turn:
    nothing to wait for)."""
    _, conn, transport, client = await new_connection(Config(session_ttl=session_ttl))
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 101 ")
    assert [bytes(f.data)[:20] for f in frames_in(client, transport.writes[0])] == [
        b'{"type":0,"data":{"w'
    ]


async def test_a_resuming_clients_101_goes_at_once() -> None:
    """A client that resumes speaks first: its 101 cannot wait for a welcome."""
    node = Node(Hub(max_rooms_per_conn=10), MemoryBroker())
    await node.start()
    conn = WebSocketConnection(
        node,
        Config().connection_settings(),
        Outbox(asyncio.get_running_loop()),
        ConnectionRegistry(),
        GatewayRoutes(node, Gatekeeper()),
    )
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = ClientProtocol(parse_uri("ws://127.0.0.1/connect?resume=1"))
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 101 ")
    assert frames_in(client, transport.writes[0]) == []  # no welcome: it waits


async def test_pushes_in_one_loop_turn_leave_in_one_write() -> None:
    """Three pushes handed over in one turn of the loop cost one write, in order."""
    node, _conn, transport, client = await open_connection()
    for i in range(3):
        node.on_publication(TOPIC_ALL, Publication(0, "", b'{"type":2,"data":%d}\n' % i))
    assert transport.writes == []  # nothing written inside the fan-out
    await asyncio.sleep(0)  # one turn of the event loop
    assert len(transport.writes) == 1
    frames = frames_in(client, transport.writes[0])
    assert [f.data for f in frames] == [b'{"type":2,"data":%d}\n' % i for i in range(3)]


async def test_a_pong_goes_out_behind_pushes_already_queued() -> None:
    """A reply to PING never overtakes a push queued before it."""
    node, conn, transport, client = await open_connection()
    node.on_publication(TOPIC_ALL, Publication(0, "", b'{"type":2,"data":"first"}\n'))
    client.send_text(b'{"type":1,"data":"PING"}')
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    frames = frames_in(client, b"".join(transport.writes))
    assert [f.data for f in frames] == [
        b'{"type":2,"data":"first"}\n',
        b'{"type":1,"data":"PONG"}\n',
    ]


async def test_an_open_connection_keeps_no_handshake_request() -> None:
    """Once open, a connection holds no copy of its handshake request (memory per
    connection), and frames still parse."""
    import gc

    from websockets.http11 import Request

    _node, conn, transport, client = await open_connection()
    gc.collect()
    assert [obj for obj in gc.get_objects() if isinstance(obj, Request)] == []
    client.send_text(b'{"type":1,"data":"PING"}')
    for chunk in client.data_to_send():
        conn.data_received(chunk)
    assert [f.data for f in frames_in(client, b"".join(transport.writes))] == [
        b'{"type":1,"data":"PONG"}\n'
    ]


def frame_parsers() -> set[int]:
    """The ids of the gateway's WebSocket parsers alive now (generators: the
    collector tracks them), not its clients'."""
    import gc
    from types import GeneratorType

    from pushgate.wsprotocol import GatewayProtocol

    gc.collect()
    return {
        id(o)
        for o in gc.get_objects()
        if isinstance(o, GeneratorType)
        and o.gi_frame is not None
        and isinstance(o.gi_frame.f_locals.get("self"), GatewayProtocol)
    }


async def test_an_idle_connection_holds_no_parser() -> None:
    """Between frames a connection keeps no parser (wsprotocol.py): not once its
    handshake is answered, nor after a sweep of its timers, nor after a read that
    ends with a pong; one read in the middle of a frame keeps it until the frame is
    whole, and a read of a data frame until the sweeper looks."""
    others = frame_parsers()  # other tests' connections
    _node, conn, transport, client = await open_connection()
    assert frame_parsers() - others == set()
    client.send_text(b'{"type":1,"data":"PING"}')
    data = b"".join(client.data_to_send())
    conn.data_received(data[:3])
    conn.check_timers(asyncio.get_running_loop().time())
    assert len(frame_parsers() - others) == 1  # inside a frame: kept
    conn.data_received(data[3:])
    assert [f.data for f in frames_in(client, b"".join(transport.writes))] == [
        b'{"type":1,"data":"PONG"}\n'
    ]
    conn.check_timers(asyncio.get_running_loop().time())
    assert frame_parsers() - others == set()
    client.send_text(b'{"type":1,', fin=False)  # fragments: parsed, not the fast path's
    client.send_continuation(b'"data":"PING"}', fin=True)
    conn.data_received(b"".join(client.data_to_send()))
    assert len(frame_parsers() - others) == 1
    client.send_pong(b"")  # as a silent client answers the sweeper's ping
    conn.data_received(b"".join(client.data_to_send()))
    assert frame_parsers() - others == set()


async def test_a_frame_sent_with_the_handshake_is_not_lost() -> None:
    """A client that sends a message in the same packet as its handshake is answered."""
    _node, conn, transport, client = await new_connection()
    client.state = State.OPEN  # pretend the 101 came, to frame a message at once
    client.send_text(b'{"type":1,"data":"PING"}')
    conn.data_received(b"".join(client.data_to_send()))
    data = b"".join(transport.writes)
    body = data[data.index(b"\r\n\r\n") + 4 :]
    reader = ClientProtocol(parse_uri("ws://127.0.0.1/connect"), state=State.OPEN)
    assert [f.data for f in frames_in(reader, body)][-1] == b'{"type":1,"data":"PONG"}\n'


async def test_a_connection_parses_a_bounded_slice_of_input_per_turn() -> None:
    """However much one read brings, a connection parses at most INPUT_PER_TURN bytes
    of it in one turn of the event loop and stops reading its socket until the
    next turn, so one connection can never hold the loop; nothing is dropped."""
    unlimited = Config(
        max_client_messages_per_second=0,
        max_client_frames_per_second=0,
        max_client_bytes_per_second=0,
    )
    node, conn, transport, client = await open_connection(unlimited)
    ping = b'{"type":1,"data":"PING"}'
    for _ in range(3 * INPUT_PER_TURN // 30):
        client.send_text(ping)
    data = b"".join(client.data_to_send())
    frames = len(data) // 30
    conn.data_received(data)
    answered = len(frames_in(client, b"".join(transport.writes)))
    seen = len(transport.writes)
    assert transport.paused
    assert 0 < answered <= INPUT_PER_TURN // 30 + 1
    await asyncio.wait_for(transport.reading.wait(), 5)  # a slice a turn, then reading again
    answered += len(frames_in(client, b"".join(transport.writes[seen:])))
    assert answered == frames
    await node.close()


async def test_a_token_sent_as_the_subprotocol_is_answered_then_not_kept() -> None:
    """A browser that offers its token alone gets it back as the subprotocol; the
    upgrade (and so the connection's protocol) keeps its claims, not the token."""
    import jwt
    from websockets.typing import Subprotocol

    from pushgate.security import TokenVerifier
    from pushgate.wsprotocol import GatewayProtocol

    secret = "s3cret-for-tests-only-0123456789abcdef"
    token = jwt.encode({"sub": "alice"}, secret, algorithm="HS256")
    node = Node(Hub(max_rooms_per_conn=10), MemoryBroker())
    routes = GatewayRoutes(node, Gatekeeper(tokens=TokenVerifier(secret=secret)))
    client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"), subprotocols=[Subprotocol(token)])
    response, upgrade = routes.answer(GatewayProtocol(), client.connect(), "peer", 0.0)
    assert response.headers["Sec-WebSocket-Protocol"] == token
    assert upgrade is not None
    assert upgrade.admitted is not None
    assert upgrade.admitted.subprotocol is None
    assert upgrade.admitted.claims is not None
    assert upgrade.admitted.claims.user == "alice"


async def test_small_frames_skip_the_parser_which_stays_at_a_frame_boundary() -> None:
    """A read of whole small frames is answered without the websockets parser (a
    PING here); a read it cannot take (a frame cut in two, a control frame) goes
    through the parser, after which small frames skip it again."""
    _node, conn, transport, client = await open_connection()
    proto = conn._proto
    assert at_frame_boundary(proto)  # this websockets version waits where we look
    parsed: list[bytes] = []
    parse = proto.receive_data

    def counting(data: bytes | bytearray) -> None:
        parsed.append(bytes(data))
        parse(data)

    proto.receive_data = counting  # type: ignore[method-assign]

    def send(*chunks: bytes) -> list[bytes]:
        transport.writes.clear()
        for chunk in chunks:
            conn.data_received(chunk)
        return [bytes(f.data) for f in frames_in(client, b"".join(transport.writes))]

    client.send_text(b'{"type":1,"data":"PING"}')
    ping = b"".join(client.data_to_send())
    assert send(ping) == [PONG]
    assert parsed == []
    assert send(ping[:5], ping[5:]) == [PONG]  # cut: the parser reads both halves
    assert parsed == [ping[:5], ping[5:]]
    parsed.clear()
    client.send_ping(b"")
    control = b"".join(client.data_to_send())
    assert [f.opcode for f in frames_in(client, b"")] == []
    transport.writes.clear()
    conn.data_received(control + ping)
    assert parsed == [control + ping]  # a control frame: the whole read is parsed
    assert at_frame_boundary(proto)
    parsed.clear()
    assert send(ping + ping) == [PONG, PONG]
    assert parsed == []


async def test_the_fast_path_counts_frames_against_the_same_budget() -> None:
    """Frames cut by the fast path count as the parser's do: past the frame rate the
    connection is closed (1008)."""
    _node, conn, transport, client = await open_connection(Config(max_client_frames_per_second=5))
    for _ in range(12):
        client.send_text(b'{"type":1,"data":"PING"}')
    conn.data_received(b"".join(client.data_to_send()))
    frames = frames_in(client, b"".join(transport.writes))
    assert frames[-1].opcode is Opcode.CLOSE
    assert Close.parse(frames[-1].data).code == 1008


async def test_an_open_connection_is_next_looked_at_when_its_heartbeat_is_due() -> None:
    """The sweeper's wheel: an open connection heard from just now is due at its
    ping time, not at every sweep; a close brings it to its close timeout."""
    config = Config()
    _node, conn, _transport, _client = await open_connection(config)
    settings = config.connection_settings()
    now = asyncio.get_running_loop().time()
    conn.last_seen = now
    assert conn.check_timers(now) == now + settings.ping_after
    wheel = conn._registry.wheel
    wheel.schedule(conn, now + settings.ping_after)
    conn.close(1000, "bye")
    abort_at = conn._abort_at
    assert abort_at is not None
    assert abort_at <= now + settings.close_timeout + 1
    assert conn.check_timers(now) == abort_at
    assert wheel.take_due(abort_at + wheel.interval) == [conn]  # not at its ping time
