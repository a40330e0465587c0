"""WebSocket framing of server messages, done once per message.

The server sends unmasked frames and negotiates no extension, so a frame's bytes
are the same for every connection: a push is framed once per node and those very
bytes are written to every recipient's socket. A resume frames every push it
replays, so framing is written out here (RFC 6455 5.2: FIN and the opcode, then the
payload length in 7, 7+16 or 7+64 bits) rather than built through a ``Frame``
object; tests/test_framing.py checks it against the ``websockets`` library's.
"""

import struct

_TEXT_FIN = 0x81  # FIN set, opcode 1 (text)
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """Frame a UTF-8 payload as one unmasked, final WebSocket text frame."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_TEXT_FIN, length) + payload
    if length < 65536:
        return _MEDIUM.pack(_TEXT_FIN, 126, length) + payload
    return _LONG.pack(_TEXT_FIN, 127, length) + payload
