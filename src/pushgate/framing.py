"""WebSocket framing of server messages, done once per message.

The server sends unmasked frames and negotiates no extension, so a frame's bytes
are the same for every connection: a push is framed once per node and those very
bytes are written to every recipient's socket. The framing itself is the
``websockets`` library's.
"""

from websockets.frames import Frame, Opcode


def text_frame(payload: bytes) -> bytes:
    """Frame a UTF-8 payload as one unmasked, final WebSocket text frame."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)
