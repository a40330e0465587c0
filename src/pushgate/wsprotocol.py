"""The gateway's WebSocket protocol: ``websockets``' sans-I/O ``ServerProtocol``,
with one correction, and lighter while it waits.

**The correction.** RFC 6455 5.4 lets control frames arrive between the fragments
of a message, a close frame included. ``websockets`` fails the connection with 1002
when a close frame arrives there ("incomplete fragmented message"); RFC 6455 1.4
says the peer that receives a close "discards any further data", so the right
answer is the ordinary closing handshake, echoing the peer's code (Autobahn|Testsuite
case 7.1.5). The unfinished message is dropped: it never completed, so it was never
a message.

**Nothing held for nothing.** A protocol with nothing to send, or no extension
negotiated, holds one shared empty list instead of a list of its own; the Origin of
its request is interned.

**Made parked, read whole.** :func:`new_protocol` copies a template instead of
running ``Protocol.__init__`` (a UUID, a reader and the handshake's parser, each
connection): its first read makes what it needs. A plain upgrade answered without
the parser (plainupgrade.py) opens it with :meth:`GatewayProtocol.open_plain`, and a
lone close frame read whole by the connection is handed over with
:meth:`GatewayProtocol.receive_close`; both leave it as the parser would.

**Parked between frames.** Most connections of a gateway are idle most of the time,
and ``websockets`` keeps, for each, a parser suspended between two frames: two
generator frames (the handshake's parser and the frame loop under it, or the frame
loop alone), the last frame received (a local of that loop), a reader with its
buffer, and an empty event list: about 600 bytes. :meth:`GatewayProtocol.park` lets
all of that go while the connection is open, nothing is buffered and the parser
waits for a frame's first byte; the next :meth:`receive_data` (or
:meth:`receive_eof`) makes them again, as ``Protocol.__init__`` does (a few
microseconds, once per park). The gateway parks a connection once its handshake is
answered and then on each sweep of its timers (connection.py), never on the path of
a read.
"""

import logging
import sys
import uuid
from collections.abc import Generator, Sequence
from types import GeneratorType
from typing import Any

from websockets.exceptions import ProtocolError
from websockets.extensions import Extension, ServerExtensionFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event, Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import Origin

# websockets gives every protocol a UUID (``id``) for the logs of its own connection
# classes, which the gateway does not use: one shared by all instead (112 bytes each).
SHARED_ID = uuid.UUID(int=0)


def _parked() -> Generator[None]:
    raise AssertionError("a parked parser is made again before it is stepped")
    yield


# What a parked protocol holds instead of its own: never stepped, fed, nor appended
# to (receive_data, receive_eof and discard make its own again first).
PARKED_PARSER = _parked()
PARKED_READER = StreamReader()
PARKED_EVENTS: list[Event] = []
# What a protocol with nothing to send holds instead of a list of its own, and one
# that negotiated no extension: never appended to (send_frame, send_eof and
# send_response make a list of its own first). data_to_send returns it too.
NO_WRITES: list[bytes] = []
NO_EXTENSIONS: list[Extension] = []
_FRAME_LOOP = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__


def _between_frames(parser: Generator[None]) -> bool:
    """Whether the frame loop waits in the reader's ``at_eof``, for a frame's first
    byte (not inside a frame, nor in ``discard()``): the generators each one waits on
    (``yield from``), followed down to the reader's."""
    above: GeneratorType[Any, Any, Any] | None = None
    waiting: object = parser
    while isinstance(waiting, GeneratorType) and waiting.gi_yieldfrom is not None:
        above, waiting = waiting, waiting.gi_yieldfrom
    return (
        isinstance(waiting, GeneratorType)
        and waiting.gi_code is _AT_EOF
        and above is not None
        and above.gi_code is _FRAME_LOOP
    )


class GatewayProtocol(ServerProtocol):
    """``ServerProtocol`` that closes normally on a close inside a fragmented message,
    and parks its parser between frames (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id = SHARED_ID

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is dropped, not an error
        super().recv_frame(frame)

    # Nothing held for nothing

    def data_to_send(self) -> list[bytes]:
        """What to write (the caller only reads the list)."""
        writes, self.writes = self.writes, NO_WRITES
        return writes

    def send_frame(self, frame: Frame) -> None:
        if self.writes is NO_WRITES:
            self.writes = []
        super().send_frame(frame)

    def send_eof(self) -> None:
        if self.writes is NO_WRITES:
            self.writes = []
        super().send_eof()

    def send_response(self, response: Response) -> None:
        if self.writes is NO_WRITES:
            self.writes = []
        super().send_response(response)
        if not self.extensions:
            self.extensions = NO_EXTENSIONS
        if self.origin is not None:  # a browser's page: one string per site, not per tab
            self.origin = Origin(sys.intern(self.origin))

    # Parking

    @property
    def parked(self) -> bool:
        return self.parser is PARKED_PARSER

    def park(self) -> bool:
        """Let the parser, the reader and the event list go, if the connection is open
        and its parser waits, with nothing buffered, for the first byte of a frame;
        whether it is parked now."""
        parser = self.parser
        if parser is PARKED_PARSER:
            return True
        if self.state is not State.OPEN or self.reader.buffer or self.events:
            return False
        if not _between_frames(parser):
            return False
        self._let_parser_go()
        return True

    def _let_parser_go(self) -> None:
        """Close the parser; hold the shared parked parser, reader and event list."""
        if self.parser is not PARKED_PARSER:
            self.parser.close()
        self.parser, self.reader, self.events = PARKED_PARSER, PARKED_READER, PARKED_EVENTS

    def _unpark(self) -> None:
        """Make the parser, reader and event list again, as Protocol.__init__ does: the
        handshake's parser (then the frame loop under it) for a protocol made parked
        (:func:`new_protocol`), the frame loop alone once the handshake is over."""
        self.reader = StreamReader()
        self.events = []
        self.parser = self.parse() if self.state is State.CONNECTING else Protocol.parse(self)
        next(self.parser)

    def receive_close(self, payload: bytes) -> bool:
        """Take a close frame read whole by the caller (framing.lone_client_close:
        ``payload``, unmasked) as the parser would, while the protocol is open, its
        parser parked or parkable (between frames, nothing buffered), with no
        extension and no message in progress: the close echoed, EOF sent, the rest
        discarded, the frame in :meth:`events_received`. False
        (nothing done) otherwise, or when the payload is one the parser refuses (a
        bad code, a reason not UTF-8, too long for ``max_size``): then the parser
        must read the frame, and fail the connection as it does."""
        if self.extensions or self.current_size is not None:
            return False
        for max_size in (self.max_message_size, self.max_fragment_size):
            if max_size is not None and len(payload) > max_size:
                return False
        try:
            Close.parse(payload)
        except (ProtocolError, UnicodeDecodeError):
            return False
        if not self.park():  # open, nothing buffered, the parser between frames
            return False
        # recv_frame parses it again, and does all the rest: the close echoed, its
        # state, EOF, the discarding parser (discard() makes its own reader).
        self.recv_frame(Frame(Opcode.CLOSE, payload))
        return True

    def open_plain(self, response: bytes, origin: str | None) -> None:
        """Open as :meth:`send_response` does with a 101, for a handshake answered
        without the websockets parser (plainupgrade.py): ``response`` is queued, the
        protocol is OPEN and its parser parked (it never read the request). What
        ``accept`` sets besides is set as it sets it for such a request: its Origin,
        no extension, no subprotocol."""
        assert self.state is State.CONNECTING
        assert not self.reader.buffer
        self._let_parser_go()
        self.accept_called = True
        self.origin = None if origin is None else Origin(sys.intern(origin))
        self.extensions = NO_EXTENSIONS
        self.subprotocol = None
        if self.writes is NO_WRITES:
            self.writes = []
        self.writes.append(response)
        self.state = State.OPEN
        self.logger.info("connection open")

    def receive_data(self, data: bytes | bytearray) -> None:
        if self.parser is PARKED_PARSER:
            self._unpark()
        super().receive_data(data)

    def receive_eof(self) -> None:
        if self.parser is PARKED_PARSER:
            self._unpark()
        super().receive_eof()

    def discard(self) -> Generator[None]:
        """Failing or closing while parked: discard() reads a reader of its own."""
        if self.reader is PARKED_READER:
            self.reader = StreamReader()
            self.events = []
        return super().discard()


# Templates of new protocols, by what they are made with (new_protocol).
_TEMPLATES: dict[
    tuple[int | None, Any, tuple[ServerExtensionFactory, ...] | None], GatewayProtocol
] = {}


def new_protocol(
    *,
    max_size: int | None,
    logger: Any,
    extensions: "Sequence[ServerExtensionFactory] | None",
) -> GatewayProtocol:
    """A new protocol, as ``GatewayProtocol(max_size=..., logger=..., extensions=...)``
    makes it, but parked from the start: its attributes copied from a template
    made once with the same arguments, without the UUID, the reader and the
    handshake's parser each ``Protocol.__init__`` makes (its first read makes
    them; a plain upgrade never does, plainupgrade.py). Nothing the copy shares
    with the template is changed in place (tests/test_wsprotocol.py checks that
    the template holds no other mutable value)."""
    key = (max_size, logger, None if extensions is None else tuple(extensions))
    template = _TEMPLATES.get(key)
    if template is None:
        template = GatewayProtocol(max_size=max_size, logger=logger, extensions=extensions)
        template._let_parser_go()
        template.writes = NO_WRITES
        template.extensions = NO_EXTENSIONS
        _TEMPLATES[key] = template
    proto = GatewayProtocol.__new__(GatewayProtocol)
    # One attribute at a time, in the template's order: the instance keeps its
    # values inline beside the class's shared keys (64 bytes less per connection
    # than the dict that touching ``proto.__dict__`` would make it).
    for name, value in template.__dict__.items():
        object.__setattr__(proto, name, value)
    # As Protocol.__init__ reads it: the log level may have changed since.
    proto.debug = template.logger.isEnabledFor(logging.DEBUG)
    return proto
