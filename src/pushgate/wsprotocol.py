"""The gateway's WebSocket protocol: ``websockets``' sans-I/O ``ServerProtocol``,
with one correction.

RFC 6455 5.4 lets control frames arrive between the fragments of a message, a close
frame included. ``websockets`` fails the connection with 1002 when a close frame
arrives there ("incomplete fragmented message"); RFC 6455 1.4 says the peer that
receives a close "discards any further data", so the right answer is the ordinary
closing handshake, echoing the peer's code (Autobahn|Testsuite case 7.1.5). The
unfinished message is dropped: it never completed, so it was never a message.
"""

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol


class GatewayProtocol(ServerProtocol):
    """``ServerProtocol`` that closes normally on a close inside a fragmented message."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is dropped, not an error
        super().recv_frame(frame)
