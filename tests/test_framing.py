"""Our text frames are byte for byte what the websockets library would send."""

import zlib

from hypothesis import given
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from pushgate.framing import (
    MIN_DEFLATE_BYTES,
    SMALL_FRAME_MAX,
    deflated_text_frame,
    small_client_frames,
    text_frame,
)


def reference(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@given(st.binary(max_size=300))
def test_short_and_medium_payloads_frame_as_websockets_does(payload: bytes) -> None:
    assert text_frame(payload) == reference(payload)


def test_each_length_encoding_at_its_boundaries() -> None:
    # 7-bit length up to 125, 16-bit from 126 to 65535, 64-bit from 65536.
    for length in (0, 125, 126, 127, 65535, 65536, 70000):
        payload = b"x" * length
        assert text_frame(payload) == reference(payload), length


@given(st.binary(max_size=5000), st.integers(min_value=9, max_value=15))
def test_a_deflated_frame_inflates_to_the_message(payload: bytes, window_bits: int) -> None:
    """What websockets' own permessage-deflate decoder reads from our compressed
    frame is the message; a frame deflate cannot shrink is sent as it is."""
    plain = text_frame(payload)
    frame = deflated_text_frame(plain, window_bits)
    if len(payload) < MIN_DEFLATE_BYTES:
        assert frame is plain
        return
    if frame is plain:  # only when deflate does not shrink it (random bytes)
        encoder = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
        assert len(encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)) - 4 >= len(payload)
        return
    decoder = PerMessageDeflate(True, True, window_bits, window_bits)
    parsed = parse(frame)
    assert parsed.rsv1
    assert decoder.decode(parsed).data == payload
    assert len(frame) < len(plain)


def test_a_json_push_shrinks() -> None:
    message = (
        b'{"type":3,"data":{"items":['
        + b",".join(
            b'{"id":%d,"name":"item number %d","price":%d.5}' % (i, i, i) for i in range(30)
        )
        + b"]}}\n"
    )
    frame = deflated_text_frame(text_frame(message), 15)
    assert len(frame) < len(message) / 3


def parse(frame: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(frame)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        result: Frame = done.value
        return result
    raise AssertionError("the frame did not parse")


def masked(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """A client's frame, as the websockets library masks it."""
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=700)), max_size=5))
def test_small_client_frames_unmask_what_a_client_sent(
    messages: list[tuple[bool, bytes]],
) -> None:
    data = b"".join(
        masked(Opcode.TEXT if is_text else Opcode.BINARY, payload) for is_text, payload in messages
    )
    assert small_client_frames(data) == messages


def test_anything_but_whole_small_data_frames_is_left_to_the_parser() -> None:
    ping = masked(Opcode.TEXT, b'{"type":1,"data":"PING"}')
    others = {
        "a control frame": masked(Opcode.PING, b""),
        "a close frame": masked(Opcode.CLOSE, b"\x03\xe8"),
        "a fragment": masked(Opcode.TEXT, b"part", fin=False),
        "a continuation": masked(Opcode.CONT, b"rest"),
        "a frame over the size": masked(Opcode.TEXT, b"x" * (SMALL_FRAME_MAX + 1)),
        "a frame with a 64-bit length": masked(Opcode.TEXT, b"x" * 65536),
        "a compressed frame": bytes([0x81 | 0x40]) + masked(Opcode.TEXT, b"x")[1:],  # RSV1
        "an unmasked frame": Frame(Opcode.TEXT, b"x").serialize(mask=False),
        "half a header": ping[:1],
        "a header and half its mask": ping[:4],
        "a frame cut short": ping[:-1],
    }
    for what, data in others.items():
        assert small_client_frames(data) is None, what
        assert small_client_frames(ping + data) is None, f"a ping, then {what}"
    assert small_client_frames(ping + ping) == [(True, b'{"type":1,"data":"PING"}')] * 2
    medium = masked(Opcode.TEXT, b"m" * 300)  # a 16-bit length
    assert small_client_frames(medium) == [(True, b"m" * 300)]
    assert small_client_frames(medium, max_size=299) is None  # over the client's limit
    assert small_client_frames(medium[:3]) is None  # its length cut
