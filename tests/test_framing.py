"""Our text frames are byte for byte what the websockets library would send."""

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from pushgate.framing import text_frame


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
