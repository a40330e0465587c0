"""WebSocket framing of server messages, done once per message.

The server sends unmasked frames, so a frame's bytes are the same for every
connection: a push is framed once per node and those very bytes are written to every
recipient's socket. With permessage-deflate (RFC 7692) negotiated without context
takeover on the server's side, a compressed message depends on nothing but itself:
it too is made once per push (:func:`deflated_text_frame`) and shared by every
connection that negotiated compression. A resume frames every push it
replays, so framing is written out here (RFC 6455 5.2: FIN and the opcode, then the
payload length in 7, 7+16 or 7+64 bits) rather than built through a ``Frame``
object; tests/test_framing.py checks it against the ``websockets`` library's.

Reading, the ``websockets`` library's parser reads every client frame, except where
:func:`small_client_frames` can cut a read into whole, small data frames (a PING, an
operation, a chat message: most of what clients send): those skip a generator-based
parse of each frame, which cost a connection's heartbeat more than its JSON.
"""

import struct
import zlib

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

_TEXT_FIN = 0x81  # FIN set, opcode 1 (text)
_TEXT_FIN_RSV1 = 0xC1  # the same, RSV1 set: the payload is compressed (RFC 7692 6)
_SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"
# Messages shorter than this are sent as they are: deflate saves nothing on them.
MIN_DEFLATE_BYTES = 128
DEFLATE_LEVEL = 6
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """Frame a UTF-8 payload as one unmasked, final WebSocket text frame."""
    return _frame(_TEXT_FIN, payload)


def _frame(first: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return _SHORT.pack(first, length) + payload
    if length < 65536:
        return _MEDIUM.pack(first, 126, length) + payload
    return _LONG.pack(first, 127, length) + payload


# A client frame the fast path takes: FIN, no reserved bit, text (1) or binary (2);
# masked, with a 7-bit length or a 16-bit one (RFC 6455 5.2), then its 4-byte mask.
_FAST_TEXT, _FAST_BINARY = 0x81, 0x82
_MASKED_SHORT_MAX = 0x80 | 125  # 0x80: the mask bit
_MASKED_MEDIUM = 0x80 | 126  # the length in the next two bytes
SMALL_FRAME_MAX = 4096  # the longest payload it takes (a read is at most 4 KiB too)


def small_client_frames(
    data: bytes, max_size: int = SMALL_FRAME_MAX
) -> list[tuple[bool, bytes]] | None:
    """The messages in ``data`` as (is text, unmasked payload), when ``data`` is
    nothing but whole, final, masked text or binary frames of at most ``max_size``
    (and :data:`SMALL_FRAME_MAX`) bytes with no reserved bit set; else None
    (anything else: a control frame, a fragment, a longer or unmasked frame, a frame
    cut by the read), and the caller's full parser reads it."""
    limit = min(max_size, SMALL_FRAME_MAX)
    frames: list[tuple[bool, bytes]] = []
    at, end = 0, len(data)
    while at < end:
        if end - at < 6:
            return None
        first, second = data[at], data[at + 1]
        if first != _FAST_TEXT and first != _FAST_BINARY:
            return None
        if 0x80 <= second <= _MASKED_SHORT_MAX:
            length, start = second & 0x7F, at + 6
        elif second == _MASKED_MEDIUM and end - at >= 8:
            length, start = (data[at + 2] << 8) | data[at + 3], at + 8
        else:
            return None
        stop = start + length
        if length > limit or stop > end:
            return None
        frames.append((first == _FAST_TEXT, apply_mask(data[start:stop], data[start - 4 : start])))
        at = stop
    return frames


_CLOSE = 0x88  # FIN, no reserved bit, close (8)


def lone_client_close(data: bytes) -> bytes | None:
    """The unmasked payload of the close frame ``data`` is, when it is that and
    nothing more: final, masked, no reserved bit, at most 125 bytes (RFC 6455 5.5);
    else None (the full parser reads it). The payload itself is not checked."""
    if len(data) < 6 or data[0] != _CLOSE or not 0x80 <= data[1] <= _MASKED_SHORT_MAX:
        return None
    if (data[1] & 0x7F) != len(data) - 6:
        return None
    return apply_mask(data[6:], data[2:6])


def payload_of(frame: bytes) -> bytes:
    """The payload of an unmasked frame made by :func:`text_frame`."""
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10 :]


def deflated_text_frame(frame: bytes, window_bits: int) -> bytes:
    """``frame`` (from :func:`text_frame`) compressed for permessage-deflate without
    context takeover, with a ``window_bits`` window; ``frame`` itself when it is too
    short to gain, or does not get shorter (an uncompressed frame is always allowed)."""
    payload = payload_of(frame)
    if len(payload) < MIN_DEFLATE_BYTES:
        return frame
    encoder = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -window_bits)
    data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
    if data.endswith(_SYNC_FLUSH_TAIL):
        data = data[:-4]
    if len(data) >= len(payload):
        return frame
    return _frame(_TEXT_FIN_RSV1, data)
