"""The reading half of a client connection (a mixin of
:class:`~pushgate.connection.WebSocketConnection`): bytes in, through the websockets
library's sans-I/O protocol, to whole messages for the wire protocol, within the
limits one connection may cost.

- **Bounded work per turn.** Input is parsed :data:`INPUT_SLICE` bytes at a time, and
  the frame and byte budgets checked between slices, so a flood is cut off within
  about a millisecond of work; at most :data:`INPUT_PER_TURN` bytes of one
  connection are handled per turn of the event loop, the rest left (its socket not
  read) until the next turn.
- **Every frame counts**, pings, pongs and continuations included
  (``--max-client-frames-per-second``, ``--max-client-bytes-per-second``), and a
  message is at most :data:`MAX_FRAGMENTS` frames; whole messages also count
  against ``--max-client-messages-per-second``. Past any: closed (1008, or 1009).
- **Between frames the library's parser is parked** (wsprotocol.py): once the
  handshake is answered, after a read that ends with a ping or a pong, and when the
  sweeper checks the connection; the next read that needs it makes it again.
- **Small frames skip the library's parser.** A read that holds nothing but whole,
  small, final data frames (framing.small_client_frames: heartbeats, operations,
  chat messages) while that parser waits at a frame boundary with nothing buffered
  is cut into messages here, counted against the same budgets; every other read
  (control frames, fragments, long frames, compression) goes through the parser,
  which is left exactly where it was.
- **A plain upgrade skips the library's parser.** A first read that is one whole,
  plain upgrade to ``/connect`` the gateway admits at once is answered without it
  (plainupgrade.py); anything else it is not plainly sure of goes through the
  parser and the full answer (gatewayhttp.py), as before.
- **A lone close frame skips it too** (a client saying goodbye): read whole here,
  checked as the parser checks it, and handed to the protocol as the parser would
  (wsprotocol.py); one the parser would refuse goes through the parser.
- **Handshakes** are bounded in bytes (431 past ``--max-handshake-bytes``), and a
  refusal made before the request was read is answered, then the connection is
  left to the client to close (closing a socket with input unread resets it, and
  the client could lose the answer).
"""

import logging
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.streams import StreamReader

from pushgate.connstate import ConnectionState
from pushgate.framing import SMALL_FRAME_MAX, lone_client_close, small_client_frames
from pushgate.gatewayhttp import SERVER_HEADER
from pushgate.phase import Phase
from pushgate.security import Refusal
from pushgate.wire import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
)
from pushgate.wsprotocol import GatewayProtocol

if TYPE_CHECKING:
    pass

log = logging.getLogger("pushgate.gateway")

# 4 KiB holds at most ~680 empty frames: a flood is stopped within a millisecond.
INPUT_SLICE = 4 * 1024
INPUT_PER_TURN = 64 * 1024
# A message may come in at most this many frames (the first and its continuations).
MAX_FRAGMENTS = 64
# A client answered with a refusal before its request was read is dropped this
# soon if it does not close (it normally does at once, once it read the answer).
REFUSAL_LINGER = 1.0
# Control frames that end a read of an otherwise quiet connection.
HEARTBEATS = (Opcode.PING, Opcode.PONG)
# Where the websockets parser waits between frames (Protocol.parse, first thing in
# its loop): in StreamReader.at_eof. Another library version may wait elsewhere: then
# the fast path is never taken, and the parser reads everything.
_AT_EOF = StreamReader.at_eof.__code__


def at_frame_boundary(proto: GatewayProtocol) -> bool:
    """The parser has nothing buffered and waits for the first byte of a frame that
    is not part of a fragmented message (or it is parked there, wsprotocol.py): bytes
    it is not given leave it as it is."""
    if proto.reader.buffer or proto.current_size is not None:
        return False
    if proto.parked:
        return True
    waiting_in = getattr(proto.parser, "gi_yieldfrom", None)
    return getattr(waiting_in, "gi_code", None) is _AT_EOF


class Input(ConnectionState):
    """Read, bound and dispatch what one client sends."""

    __slots__ = ()

    def _on_handshake(self, request: Request) -> None:
        raise NotImplementedError

    def _take_plain(self, data: bytes) -> bool:
        raise NotImplementedError

    def _write_protocol_output(self) -> None:
        raise NotImplementedError

    def _context(self, code: int | None = None) -> dict[str, object]:
        raise NotImplementedError

    def _abort_by(self, when: float) -> None:
        raise NotImplementedError

    # Bytes in

    def _take_input(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, checking the limits between slices; at
        most INPUT_PER_TURN bytes now, the rest on the next turns of the loop."""
        proto = self._proto
        if (
            proto.state is State.CONNECTING
            and not proto.eof_sent  # not answered yet (a refusal discards what follows)
            and not self._handshake_fits(len(data))
        ):
            return
        asking = self._asking
        if asking is not None:  # the connect hook decides: what follows waits for it
            asking.data += data
            return
        if len(data) > INPUT_PER_TURN and self._transport is not None:
            data, self._unread = data[:INPUT_PER_TURN], data[INPUT_PER_TURN:]
            self._transport.pause_reading()
            self._loop.call_soon(self._read_on)
        try:
            if (
                self._handshake_bytes == len(data)  # the first read: the request, all of it?
                and proto.state is State.CONNECTING
                and not proto.eof_sent
                and self._take_plain(data)
            ):
                self._write_protocol_output()
                return
            if len(data) <= INPUT_SLICE and self._fast_path_open():
                payload = lone_client_close(data)
                if payload is not None and proto.receive_close(payload):
                    # A client saying goodbye: as the parser's frame (its own reader
                    # and parser were not made again for it).
                    self._on_events(proto.events_received(), data)
                    self._write_protocol_output()
                    return
                max_size = self._proto.max_message_size
                frames = small_client_frames(
                    data, SMALL_FRAME_MAX if max_size is None else max_size
                )
                if frames is not None:
                    self._on_small_frames(frames, len(data))
                    self._write_protocol_output()
                    return
            for start in range(0, len(data), INPUT_SLICE):
                chunk = data[start : start + INPUT_SLICE]
                proto.receive_data(chunk)
                if not self._on_events(proto.events_received(), chunk):
                    if self._asking is not None:  # the rest waits for the hook's verdict
                        self._asking.data += data[start + INPUT_SLICE :]
                    break
        except Exception:
            # A bug here must cost this connection only, and say so.
            log.exception("internal error on the connection from %s; closing it", self.peer)
            if proto.state is State.OPEN:
                proto.fail(CLOSE_INTERNAL_ERROR, "internal error")
            elif self._transport is not None:
                self._transport.abort()
        self._write_protocol_output()

    def _on_events(self, events: list[Request | Response | Frame], chunk: bytes) -> bool:
        """Handle one slice's events; False once the connection should read no more."""
        if (
            self._abort_at is None
            and self._phase is not Phase.ECHO
            and self._proto.state is State.OPEN
        ):
            frames = len(events) - (1 if events and isinstance(events[0], Request) else 0)
            if not self._within_budget(frames, len(chunk)):
                return False
        for i, event in enumerate(events):
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Request):
                self._on_handshake(event)
                if self._asking is not None:  # frames sent early wait for the verdict
                    self._asking.frames = [e for e in events[i + 1 :] if isinstance(e, Frame)]
                    return False
            if self._proto.state is not State.OPEN and self._proto.state is not State.CONNECTING:
                return False  # closing: what came after the close (or the error) is moot
        if events and isinstance(last := events[-1], Frame) and last.opcode in HEARTBEATS:
            # A ping or a pong (a silent client's answer to the sweeper's ping) read
            # last: the parser is parked again until the next frame (wsprotocol.py).
            self._proto.park()
        return True

    def _fast_path_open(self) -> bool:
        """Whether a read of small frames may skip the parser (module docstring)."""
        proto = self._proto
        return (
            proto.state is State.OPEN
            and self._abort_at is None
            and self._phase is not Phase.ECHO
            and not proto.extensions  # compressed frames are the parser's to inflate
            and at_frame_boundary(proto)
        )

    def _on_small_frames(self, frames: list[tuple[bool, bytes]], size: int) -> None:
        """The messages of a read cut by framing.small_client_frames, counted as
        _on_events counts the parser's frames."""
        if not self._within_budget(len(frames), size):
            return
        for is_text, payload in frames:
            self._on_message(payload, is_text)
            if self._proto.state is not State.OPEN:
                return  # closing: what came after is moot

    def _within_budget(self, frames: int, size: int) -> bool:
        """Count a read's frames and bytes against the connection's input budget;
        over it, the connection is closed (limit_close) and this is False."""
        # The clock read when this input came (data_received): one float kept.
        over = self.count_input(self.last_seen, frames, size, self._settings.input)
        if over is not None:
            self.limit_close(*over)
            return False
        return True

    def _read_on(self) -> None:
        """The next turn: take the next part of what was left, and read again once
        nothing is left."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self._unread = b""
            return
        self._take_input(self._take_unread())
        if not self._unread and not transport.is_closing() and not self._proto.eof_sent:
            transport.resume_reading()

    def _take_unread(self) -> bytes:
        data, self._unread = self._unread, b""
        return data

    # Frames and messages

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._on_message(bytes(frame.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            # The protocol has checked that a fragmented message is in progress.
            fragments = self._fragments
            assert fragments is not None
            fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._on_message(b"".join(fragments), self._fragmented_text)
            elif len(fragments) >= MAX_FRAGMENTS and self._phase is not Phase.ECHO:
                # Empty continuation frames add no bytes: without this bound a
                # message that never ends would grow this list without limit.
                self._fragments = None
                reason = f"message too big: over {MAX_FRAGMENTS} frames"
                self.limit_close("max_message_fragments", reason, CLOSE_MESSAGE_TOO_BIG)

    def _on_message(self, data: bytes, is_text: bool) -> None:
        if self._proto.state is not State.OPEN:
            return  # a close or an error earlier in the same read
        if self._phase is Phase.ECHO:
            self._echo(data, is_text)
            return
        client = self._client
        if client is None:
            return
        limits = self._settings.input
        now = self.last_seen  # when this message came
        over = self._phase is not Phase.AWAITING and self.count_message(now, limits)
        if over and self.abusing(limits):
            self.limit_close(
                "max_messages_per_second",
                f"rate limit: over {limits.messages_per_second} messages per second",
            )
            return
        # Over the rate, but not twice over: the message is refused, not the client.
        client.on_message(data, self._settings.max_message_bytes, over_rate=over)

    def _echo(self, data: bytes, is_text: bool) -> None:
        """--conformance-echo: send the message back as it came, once checked."""
        if is_text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                # RFC 6455 section 8.1: text must be UTF-8.
                self._proto.fail(CLOSE_INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
                return
            self._proto.send_text(data)
        else:
            self._proto.send_binary(data)

    # Closing for what was sent

    def fail(self, code: int, reason: str) -> None:
        """Close for something the client sent: the close frame goes out at once."""
        self._proto.fail(code, reason)

    def limit_close(self, limit: str, reason: str, code: int = CLOSE_POLICY_VIOLATION) -> None:
        """Close this connection for passing one of its input limits (1008 unless
        ``code`` says otherwise), counted under the limit's option."""
        self._node.meters.limits[limit] += 1
        log.info(
            "closing %s from %s: %s", self.conn_id, self.peer, reason, extra=self._context(code)
        )
        self._proto.fail(code, reason)

    # Refusals before the request is read

    def _handshake_fits(self, size: int) -> bool:
        """Count bytes received before the handshake is answered; past the bound,
        answer 431 without parsing them."""
        self._handshake_bytes += size
        limit = self._settings.max_handshake_bytes
        if self._handshake_bytes <= limit:
            return True
        self._node.meters.limits["max_handshake_bytes"] += 1
        self._routes.gatekeeper.refusals.refused(
            "handshake_size",
            f"answered a connection from {self.peer} with 431: handshake over {limit} bytes",
            self._loop.time(),
        )
        reason = f"Request Header Fields Too Large: over {limit} bytes of handshake\n"
        self._answer_and_linger(self._proto.reject(431, reason))
        return False

    def _refuse_at_accept(self, refusal: Refusal) -> None:
        """Over a connection limit at the TCP accept: answer at once, and linger."""
        self._routes.refused(refusal, self.peer, self._loop.time())
        self._answer_and_linger(self._proto.reject(refusal.status, refusal.reason + "\n"))

    def _answer_and_linger(self, response: Response) -> None:
        """Answer an HTTP request that was not (or not all) read, then send nothing
        more and read nothing more, and drop the connection REFUSAL_LINGER seconds
        later: closing a socket at once, with input unread, would reset the
        connection and the client could lose the answer; reading on would let a
        client that keeps sending (a never-ending handshake) cost the loop."""
        response.headers["Server"] = SERVER_HEADER
        self._phase = Phase.ANSWERED
        if self._asking is not None:  # answered: the connect hook's verdict is moot
            self._asking.task.cancel()
            self._asking = None
        self._proto.send_response(response)  # the parser now discards all input
        transport = self._transport
        assert transport is not None
        for chunk in self._proto.data_to_send():
            if chunk:
                transport.write(chunk)
        if transport.can_write_eof():
            transport.write_eof()
        transport.pause_reading()
        self._unread = b""
        self._abort_by(self._loop.time() + min(REFUSAL_LINGER, self._settings.close_timeout))
