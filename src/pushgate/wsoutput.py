"""The writing half of a client connection (a mixin of
:class:`~pushgate.connection.WebSocketConnection`): its queue, held output, and
backpressure.

Outgoing frames take two paths that share one queue, so order is kept:

- **Fan-out** (:meth:`Output.send`, the hub's :class:`~pushgate.hub.Sink`): the frame,
  already framed once for all recipients, is appended and the connection marked in
  the :class:`~pushgate.outbox.Outbox`, which writes each marked queue with one
  ``transport.write`` per turn of the event loop.
- **Replies** (welcome, PONG, the protocol's own frames): appended (the welcome and
  a resume's replay in front), and written at once unless output is held.

Backpressure never waits. A connection whose transport holds more than a little
(its high-water mark) is watched: each write checks its own bound
(``--max-output-bytes``), and the process-wide :class:`~pushgate.backlog.OutputBudget`
closes the largest holders first when all of them together hold too much. A client
over either bound is closed with 1008, its close frame queued behind what it has.
"""

import logging
from typing import TYPE_CHECKING

from pushgate.connstate import ConnectionState
from pushgate.framing import text_frame
from pushgate.phase import HELD, Phase
from pushgate.wire import CLOSE_POLICY_VIOLATION

if TYPE_CHECKING:
    pass

log = logging.getLogger("pushgate.gateway")

OPEN, WELCOMING = Phase.OPEN, Phase.WELCOMING
# A connection closed for holding too much of the process's output budget is
# dropped this soon if it does not read its close frame (it was not reading).
OVERFLOW_GRACE = 1.0


class Output(ConnectionState):
    """Queue, hold, write and bound what is sent to one client."""

    __slots__ = ()

    def close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def _context(self, code: int | None = None) -> dict[str, object]:
        raise NotImplementedError

    def _abort_by(self, when: float) -> None:
        raise NotImplementedError

    # Sink: fan-out

    def send(self, frame: bytes) -> None:
        """Queue a frame (made once for every connection of this encoding, hub.py);
        the outbox writes it on this turn of the event loop."""
        phase = self._phase
        if phase is OPEN or phase is WELCOMING:
            deflate_bits = self._deflate_bits
            if deflate_bits:
                frame = self._outbox.deflated(frame, deflate_bits)
            pending = self._pending
            pending.append(frame)
            if len(pending) == 1:
                self._outbox.mark(self)
            if phase is WELCOMING:  # held output counts against the same bound
                self._held_bytes += len(frame)
                if self._held_bytes > self._settings.max_output_bytes:
                    self._check_output_bound()

    def flush(self) -> None:
        """Write everything queued for this connection in one write."""
        pending = self._pending
        if not pending:
            return
        phase = self._phase
        if phase is not OPEN and phase in HELD:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            pending.clear()
            self._head = 0
            return
        frames = len(pending)
        data = pending[0] if frames == 1 else b"".join(pending)
        pending.clear()
        self._head = 0
        transport.write(data)
        if self._backlogged:  # it holds more than a little: within its own bound?
            self._check_output_bound()
        meters = self._outbox.meters
        if meters is not None:
            meters.writes += 1
            meters.frames_written += frames
            meters.bytes_written += len(data)

    # Replies

    def send_first(self, messages: list[bytes]) -> None:
        """Queue messages ahead of anything queued already (the welcome first)."""
        head = self._head  # behind the handshake's 101, if it is waiting (connection.py)
        self._pending[head:head] = [text_frame(message) for message in messages]

    def send_message(self, message: bytes) -> None:
        """Queue a message behind what is queued (a reply); written this turn."""
        self._pending.append(text_frame(message))

    def release(self) -> None:
        """Let held output go: the welcome may be sent, and all behind it."""
        if self._phase is WELCOMING:
            self._phase = OPEN
            self._held_bytes = 0
            self.flush()

    # Backpressure

    def pause_writing(self) -> None:
        """The transport holds more than a little for this client: from now on its
        own bound is checked on each write, and it counts in the output budget."""
        phase = self._phase
        if (phase is OPEN or phase is WELCOMING) and not self._backlogged:
            self._backlogged = True
            self._outbox.budget.watch(self)
            self._check_output_bound()

    def resume_writing(self) -> None:
        """It drained: it holds little again."""
        self._leave_budget()

    def unsent(self) -> int:
        """Bytes held for this client, not yet taken by the kernel."""
        transport = self._transport
        held = self._held_bytes
        return held if transport is None else held + transport.get_write_buffer_size()

    def overflow(self, reason: str) -> None:
        """The process's output budget closes this connection (1008); it is dropped
        OVERFLOW_GRACE seconds later if it does not read its close frame."""
        self._node.meters.limits["max_output_total_bytes"] += 1
        self._stop_output(reason, OVERFLOW_GRACE)

    def _check_output_bound(self) -> None:
        limit = self._settings.max_output_bytes
        if self.unsent() > limit:
            self._node.meters.limits["max_output_bytes"] += 1
            self._stop_output(f"slow consumer: over {limit} bytes unsent", None)

    def _stop_output(self, reason: str, grace: float | None) -> None:
        """No more fan-out to this client, from this instant; close it with 1008 on
        the next turn of the loop (not from inside a write, nor from inside the
        hub's fan-out), its close frame queued behind what it already has, so that
        a client that is merely slow learns why."""
        if not (self._phase is OPEN or self._phase is WELCOMING):
            return
        self._phase = Phase.STOPPED
        self._leave_budget()
        log.info(
            "closing %s from %s: %s",
            self.conn_id,
            self.peer,
            reason,
            extra=self._context(CLOSE_POLICY_VIOLATION),
        )
        self._loop.call_soon(self._close_with_grace, CLOSE_POLICY_VIOLATION, reason, grace)

    def _close_with_grace(self, code: int, reason: str, grace: float | None) -> None:
        self.close(code, reason)
        if grace is not None and self._abort_at is not None:
            self._abort_by(min(self._abort_at, self._loop.time() + grace))

    def _leave_budget(self) -> None:
        if self._backlogged:
            self._backlogged = False
            self._outbox.budget.forget(self)
