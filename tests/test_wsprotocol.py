"""The gateway's WebSocket protocol parks its parser between frames, and reads the
same stream after as before (wsprotocol.py)."""

import logging
from types import GeneratorType

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from pushgate.connection import DEFLATE
from pushgate.framing import lone_client_close
from pushgate.wsprotocol import (
    NO_EXTENSIONS,
    NO_WRITES,
    PARKED_EVENTS,
    PARKED_READER,
    SHARED_ID,
    GatewayProtocol,
    new_protocol,
)


def opened() -> tuple[GatewayProtocol, ClientProtocol]:
    """A server protocol through its handshake, and its client."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"))
    client.send_request(client.connect())
    server = GatewayProtocol()
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    [request] = server.events_received()
    server.send_response(server.accept(request))  # type: ignore[arg-type]
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    client.events_received()
    assert server.state is State.OPEN
    return server, client


def sent(client: ClientProtocol) -> bytes:
    return b"".join(client.data_to_send())


def frames(server: GatewayProtocol) -> list[tuple[Opcode, bytes]]:
    return [(e.opcode, bytes(e.data)) for e in server.events_received() if isinstance(e, Frame)]


def test_parks_between_frames_and_reads_on() -> None:
    """Parked after the handshake, it lets its parser, reader and events go; the next
    bytes make them again, and frames read as before."""
    server, client = opened()
    assert server.park()
    assert server.parked
    assert server.reader is PARKED_READER
    assert server.events is PARKED_EVENTS
    client.send_text(b"one")
    client.send_text(b"two")
    server.receive_data(sent(client))
    assert not server.parked
    assert frames(server) == [(Opcode.TEXT, b"one"), (Opcode.TEXT, b"two")]
    assert server.park()
    client.send_ping(b"p")
    server.receive_data(sent(client))
    assert frames(server) == [(Opcode.PING, b"p")]
    assert PARKED_READER.buffer == bytearray()
    assert PARKED_EVENTS == []


def test_does_not_park_inside_a_frame() -> None:
    """Half a frame read (or its events not taken): not parked, and the frame still
    completes."""
    server, client = opened()
    client.send_text(b"hello")
    data = sent(client)
    server.receive_data(data[:2])  # the header, not the mask nor the payload
    assert server.reader.buffer == bytearray()  # taken by the parser, which waits on
    assert not server.park()
    server.receive_data(data[2:])
    assert not server.park()  # its event is not taken yet
    assert frames(server) == [(Opcode.TEXT, b"hello")]
    assert server.park()


def test_a_fragmented_message_survives_a_park() -> None:
    """Between the fragments of a message it may park: what the message needs is the
    protocol's, not the parser's."""
    server, client = opened()
    client.send_text(b"he", fin=False)
    server.receive_data(sent(client))
    assert frames(server) == [(Opcode.TEXT, b"he")]
    assert server.park()
    client.send_continuation(b"llo", fin=True)
    server.receive_data(sent(client))
    assert frames(server) == [(Opcode.CONT, b"llo")]
    assert server.current_size is None  # the message ended


def test_end_of_stream_while_parked() -> None:
    """The client's EOF while parked fails the connection as it would have (1006)."""
    server, _ = opened()
    assert server.park()
    server.receive_eof()
    assert server.state is State.CLOSED
    assert isinstance(server.parser_exc, EOFError)
    assert PARKED_READER.eof is False


def test_failing_while_parked() -> None:
    """Failed while parked: what follows is discarded by discard() with a reader of
    its own, never the shared one."""
    server, client = opened()
    assert server.park()
    server.fail(1008, "policy")
    assert server.reader is not PARKED_READER
    client.send_text(b"late")
    server.receive_data(sent(client))
    assert frames(server) == []
    assert PARKED_READER.buffer == bytearray()


def test_closing_while_parked() -> None:
    """A close sent while parked: the client's answer is read."""
    server, client = opened()
    assert server.park()
    server.send_close(1001, "going away")
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    server.receive_data(sent(client))  # the client's close frame, echoed
    assert server.close_rcvd == Close(1001, "going away")
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.parser_exc is None  # a clean close


def test_not_parked_once_closing() -> None:
    """A protocol that left OPEN never parks (its parser discards)."""
    server, client = opened()
    client.send_close(1000, "bye")
    server.receive_data(sent(client))
    server.events_received()
    assert server.state is not State.OPEN
    assert not server.park()


def test_one_id_for_all() -> None:
    """websockets' per-connection UUID, which pushgate never reads, is one shared id."""
    assert opened()[0].id is SHARED_ID


def test_nothing_to_send_holds_no_list_of_its_own() -> None:
    """Its output taken, and no extension negotiated, a protocol holds the shared
    empty lists; what it sends next is its own (a pong, a close) and goes out."""
    server, client = opened()
    assert server.writes is NO_WRITES
    assert server.extensions is NO_EXTENSIONS
    client.send_ping(b"x")
    server.receive_data(sent(client))
    server.events_received()
    client.receive_data(b"".join(server.data_to_send()))
    [pong] = client.events_received()
    assert isinstance(pong, Frame)
    assert (pong.opcode, bytes(pong.data)) == (Opcode.PONG, b"x")
    server.send_close(1000, "bye")
    client.receive_data(b"".join(server.data_to_send()))
    assert client.close_rcvd == Close(1000, "bye")
    assert NO_WRITES == []
    assert NO_EXTENSIONS == []


def test_one_origin_string_per_site() -> None:
    """Browsers' pages of one site: their protocols share one Origin string."""
    origins = []
    for _ in range(2):
        client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"))
        request = client.connect()
        request.headers["Origin"] = "".join(["https://app.", "example"])  # a new string
        server = GatewayProtocol()
        server.send_response(server.accept(request))
        origins.append(server.origin)
    assert origins[0] == "https://app.example"
    assert origins[0] is origins[1]


def test_a_new_protocol_is_made_parked_and_shares_nothing_it_changes() -> None:
    """new_protocol copies a template: the same attributes as a protocol made anew,
    and no mutable value of its own but the shared sentinels (and the extension
    factories the caller shares anyway): a websockets version that adds one fails
    here rather than leak state from one connection into another."""
    logger = logging.getLogger("pushgate.websocket")
    made = new_protocol(max_size=1000, logger=logger, extensions=DEFLATE)
    fresh = GatewayProtocol(max_size=1000, logger=logger, extensions=DEFLATE)
    assert vars(made).keys() == vars(fresh).keys()
    mutable = {
        name
        for name, value in vars(made).items()
        if isinstance(value, list | dict | set | bytearray | StreamReader | GeneratorType)
    }
    assert mutable == {
        "available_extensions",
        "events",
        "extensions",
        "parser",
        "reader",
        "writes",
    }
    assert made.parked
    assert made.state is State.CONNECTING
    assert (made.reader, made.events, made.writes) == (PARKED_READER, PARKED_EVENTS, NO_WRITES)
    assert made.available_extensions is DEFLATE
    assert made.extensions is NO_EXTENSIONS
    assert (made.max_message_size, made.id) == (1000, SHARED_ID)
    assert new_protocol(max_size=1000, logger=logger, extensions=DEFLATE) is not made


def test_a_new_protocol_reads_its_handshake_as_any() -> None:
    """Its first bytes make the handshake's parser: a request is read, accepted (with
    compression negotiated) and the frames after it read; or refused, and the rest
    discarded."""
    logger = logging.getLogger("pushgate.websocket")
    client = ClientProtocol(parse_uri("ws://127.0.0.1/connect"))
    client.send_request(client.connect())
    server = new_protocol(max_size=2**20, logger=logger, extensions=DEFLATE)
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    [request] = server.events_received()
    server.send_response(server.accept(request))  # type: ignore[arg-type]
    assert server.state is State.OPEN
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    client.events_received()
    client.send_text(b"after")
    server.receive_data(sent(client))
    assert frames(server) == [(Opcode.TEXT, b"after")]
    refused = new_protocol(max_size=2**20, logger=logger, extensions=None)
    refused.send_response(refused.reject(429, "too many\n"))
    assert refused.data_to_send()[0].startswith(b"HTTP/1.1 429 ")
    refused.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert refused.events_received() == []
    refused.receive_eof()
    assert refused.state is State.CLOSED


def masked_close(payload: bytes, *, first: int = 0x88) -> bytes:
    mask = b"\x0f\x1e\x2d\x3c"
    return (
        bytes([first, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


GOODBYES = [b"", b"\x03\xe8", b"\x03\xe8bye", b"\x03\xe9going", b"\x0f\xa0" + "é".encode()]


@pytest.mark.parametrize("payload", GOODBYES)
def test_a_lone_close_frame_is_taken_as_the_parser_takes_it(payload: bytes) -> None:
    """receive_close leaves the protocol as the parser does with the same frame:
    the close echoed, EOF sent, CLOSING, the frame among the events, the rest
    discarded."""
    data = masked_close(payload)
    assert lone_client_close(data) == payload
    short, _ = opened()
    assert short.park()
    assert short.receive_close(payload)
    parsed, _ = opened()
    parsed.receive_data(data)
    for proto in (short, parsed):
        assert proto.state is State.CLOSING
        assert proto.close_rcvd == Close.parse(payload)
        assert proto.close_rcvd_then_sent
    assert short.data_to_send() == parsed.data_to_send()
    assert frames(short) == frames(parsed) == [(Opcode.CLOSE, payload)]
    for proto in (short, parsed):
        proto.receive_data(b"after the close: discarded")
        assert proto.events_received() == []
        proto.receive_eof()
        assert proto.state is State.CLOSED


@pytest.mark.parametrize(
    "payload",
    [b"\x03", b"\x03\xe7", b"\x03\xed", b"\x03\xe8\xff", b"\x0b\xb8" + b"x" * 123],
    ids=["one byte", "code 999", "code 1005", "not UTF-8", "too long for max_size"],
)
def test_a_close_frame_the_parser_refuses_is_left_to_it(payload: bytes) -> None:
    server, _ = opened()
    server.max_message_size = 100
    assert server.park()
    assert not server.receive_close(payload)
    assert server.state is State.OPEN
    assert server.parked
    assert server.data_to_send() == []


def test_only_a_whole_masked_final_close_is_lone() -> None:
    data = masked_close(b"\x03\xe8")
    assert lone_client_close(data + b"\x81") is None  # more after it
    assert lone_client_close(data[:-1]) is None  # cut
    assert lone_client_close(masked_close(b"\x03\xe8", first=0x08)) is None  # not final
    assert lone_client_close(masked_close(b"\x03\xe8", first=0xC8)) is None  # RSV1
    assert lone_client_close(b"\x88\x02\x03\xe8") is None  # not masked
    assert lone_client_close(masked_close(b"", first=0x89)) is None  # a ping


def test_a_close_between_frames_is_taken_parked_or_not() -> None:
    """An unparked parser waiting between frames is parked for it."""
    server, _ = opened()
    assert not server.parked
    assert server.receive_close(b"\x03\xe8")
    assert server.state is State.CLOSING
    assert frames(server) == [(Opcode.CLOSE, b"\x03\xe8")]


def test_a_close_is_left_to_the_parser_inside_a_message_or_a_frame() -> None:
    server, client = opened()
    server.receive_data(b"\x81")  # a frame begun
    assert not server.receive_close(b"\x03\xe8")
    server, client = opened()
    client.send_text(b"part", fin=False)
    server.receive_data(sent(client))
    server.events_received()
    assert not server.receive_close(b"\x03\xe8")
    assert server.state is State.OPEN
