"""One Server-Sent Events stream (``GET /events``): the transport beside the WebSocket
one, from the moment the request hook answered 200 to the end of the socket.

Theory of operation
-------------------

The connection begins as any gateway connection (connection.py: the TCP accept is
counted by the gatekeeper, the one HTTP request answered by the request hook);
for ``/events`` it then hands its socket to an :class:`SseConnection`
(``transport.set_protocol``), which writes the 200 and from then on only writes.
Nothing the client sends after its request is read for meaning.

- **Opening** (sseopen.py): the stream is registered in the hub and caught up
  from its Last-Event-ID, or from now; meanwhile fan-out is dropped (the catch-up
  captures it). Then, in one step: ``pushgate:open``, the pushes it missed, a
  ``pushgate:lost`` if some could not be given, and fan-out from then on.
- **Fan-out** (:meth:`SseConnection.send`, the hub's Sink): the event body was made
  once per push for every stream of the gateway (sse.py); the connection puts its
  own ``id:`` line (its position in each stream) in front and marks itself in the
  :class:`~pushgate.outbox.Outbox`, which writes each marked queue once per turn
  of the loop. Nothing awaits.
- **Backpressure**, as a WebSocket's (wsoutput.py): past its transport's high-water
  mark a stream is watched; over ``--max-output-bytes`` unsent, or among the
  largest holders of ``--max-output-total-bytes``, it stops getting pushes at once
  and is closed, with a ``pushgate:close`` event (1008) behind what it has.
- **Timers**, from the gateway's sweeper: a ``: ping`` comment after
  ``--idle-timeout``/2 with nothing written, so that proxies keep an idle stream
  open; the end of a subscription token; a close not completed in time is dropped.
- **Closing**: a ``pushgate:close`` event with the code a WebSocket would get
  (1001 stop, 1012 drain, 1008 limit, 4000-4999 the back end's), then the end of the
  response. ``EventSource`` reconnects by itself with its Last-Event-ID and resumes.
"""

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from pushgate.backlog import WATCH_BYTES
from pushgate.connsettings import ConnectionSettings
from pushgate.errors import BrokerUnavailable
from pushgate.gatekeeper import Gatekeeper
from pushgate.hub import Encoding
from pushgate.ids import ConnId, RoomId
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.phase import Phase
from pushgate.pushgateproto import encode
from pushgate.sse import (
    PING,
    SseFrame,
    StreamSet,
    close_event,
    frame,
    lost_event,
    open_event,
    position_bytes,
    stream_set,
)
from pushgate.sseopen import Caught, StreamGone, open_stream
from pushgate.ssequery import SseStart
from pushgate.streams import Position
from pushgate.wire import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    StreamReport,
)

if TYPE_CHECKING:
    from pushgate.hub import Sink
    from pushgate.node import Node
    from pushgate.outbox import Writable

log = logging.getLogger("pushgate.gateway")

# The pushgate protocol over Server-Sent Events: its messages as SSE events.
PUSHGATE_OVER_SSE = Encoding("pushgate over SSE", encode, frame, "pushgate", "sse")
# A stream closed for holding too much of the process's output budget is dropped
# this soon if it does not read its close event (it was not reading), as wsoutput's.
OVERFLOW_GRACE = 1.0

OPEN, RESUMING, STOPPED, CLOSING = Phase.OPEN, Phase.RESUMING, Phase.STOPPED, Phase.CLOSING
_IN_HUB = (RESUMING, OPEN, STOPPED)
# The streams opening now (each catches and logs its own failure).
_opening: set["asyncio.Task[None]"] = set()


class SseConnection(asyncio.Protocol):
    """One client's event stream, once its request was answered 200."""

    __slots__ = (
        "_abort_at",
        "_admitted_ip",
        "_backlogged",
        "_close_code",
        "_events",
        "_expires_at",
        "_gatekeeper",
        "_loop",
        "_node",
        "_outbox",
        "_pending",
        "_phase",
        "_positions",
        "_quiet_since",
        "_registry",
        "_set",
        "_settings",
        "_transport",
        "_wrote",
        "conn_id",
        "connected_at",
        "ip",
        "peer",
        "sweep_tick",
    )

    encoding = PUSHGATE_OVER_SSE

    def __init__(
        self,
        node: "Node",
        settings: ConnectionSettings,
        outbox: Outbox,
        registry: "ConnectionRegistry[Any]",
        gatekeeper: Gatekeeper,
        *,
        peer: str,
        ip: str,
        admitted_ip: str | None,
        connected_at: float,
    ) -> None:
        self._node = node
        self._settings = settings
        self._outbox = outbox
        self._registry = registry
        self._gatekeeper = gatekeeper
        self._admitted_ip = admitted_ip  # released when the socket ends
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._phase = Phase.HANDSHAKE
        self._pending: list[bytes] = []
        self._events = 0  # events in _pending (it holds their id lines too)
        self._backlogged = False  # holds enough unsent to be in the output budget
        # Its streams, and its position in each (what its next id says).
        self._set: StreamSet = stream_set(())
        self._positions: list[bytes] = []
        self._expires_at: float | None = None  # a subscription token's end (Unix seconds)
        self._close_code: int | None = None  # the code of its pushgate:close, once sent
        self._abort_at: float | None = None  # closing: drop the TCP connection then
        self.sweep_tick: int | None = None  # its bucket in the gateway sweeper's wheel
        # Heartbeat: written since the last sweep; nothing written since (loop clock).
        self._wrote = False
        self._quiet_since = connected_at
        self.conn_id: ConnId | None = None
        self.peer, self.ip = peer, ip
        self.connected_at = connected_at

    def start(self, transport: asyncio.Transport, head: bytes, start: SseStart) -> None:
        """Take the socket over (the caller set this as its protocol): write the
        response's ``head`` (status and headers), then open the stream."""
        self._transport = transport
        transport.set_write_buffer_limits(high=min(WATCH_BYTES, self._settings.max_output_bytes))
        self._registry.add(self, self.connected_at)
        transport.write(head)
        self.conn_id = start.conn_id
        self._expires_at = start.expires_at
        self._set = stream_set(start.streams)
        self._phase = RESUMING
        task = self._loop.create_task(self._open(start))
        _opening.add(task)  # the loop holds tasks weakly
        task.add_done_callback(_opening.discard)

    async def _open(self, start: SseStart) -> None:
        if self._phase is not RESUMING:
            return  # gone before it began
        try:
            caught = await open_stream(self._node, start, self)
        except StreamGone:
            return
        except BrokerUnavailable as exc:
            log.info("stream %s from %s could not open: %s", self.conn_id, self.peer, exc)
            self.close(CLOSE_TRY_AGAIN_LATER, "the broker cannot be reached now; retry")
            return
        except Exception:  # a bug must cost this connection only, and say so
            log.exception("opening the stream from %s failed; closing it", self.peer)
            self.close(CLOSE_INTERNAL_ERROR, "internal error")
            return
        if self._phase is RESUMING:
            self._opened(start, caught)

    def _opened(self, start: SseStart, caught: Caught) -> None:
        """Queue the open event, what was missed and what was lost; take fan-out."""
        assert self.conn_id is not None
        history = self._node.broker.keeps_history
        names = start.streams
        starts = caught.starts  # empty when history is off: no ids, no positions
        positions = self._positions = [position_bytes(starts[name]) for name in starts]
        reports = caught.reports
        resumed = start.since is not None or start.mismatch
        if start.mismatch or (resumed and not history):
            # Nothing could be resumed: the id was made for other streams (or
            # history is off); each stream starts from where it is now.
            now = {name: starts.get(name, Position("", 0)) for name in names}
            reports = {name: StreamReport(False, p.epoch, p.seq) for name, p in now.items()}
        id_line = self._set.id_line(positions) if history else b""
        pending = self._pending
        pending.append(open_event(self.conn_id, resumed, reports, id_line))
        for message in caught.messages:
            self._append(cast(SseFrame, frame(message)), pending)
        lost = {name: report for name, report in reports.items() if not report.recovered}
        if lost:
            for name, report in lost.items():
                if history:  # where the stream is once what it kept is sent
                    where = Position(report.epoch, report.seq)
                    positions[self._set.slots[name]] = position_bytes(where)
            pending.append(lost_event(lost, self._set.id_line(positions) if history else b""))
        self._events += 1 + bool(lost)
        if resumed:
            self._node.meters.resumes["not_recovered" if lost else "recovered"] += 1
        self._phase = OPEN
        self._outbox.mark(self)
        log.debug(
            "opened stream %s from %s: %d streams, %d pushes caught up%s",
            self.conn_id,
            self.peer,
            len(names),
            len(caught.messages),
            ", some NOT recovered" if lost else "",
            extra=self._context(),
        )

    # Sink: fan-out

    def send(self, frame: bytes) -> None:
        """Queue an event (its body made once for every stream, sse.py) behind this
        connection's own id line; the outbox writes it on this turn of the loop.
        Per delivery, so inlined: an attribute read, a dict lookup, a join."""
        if self._phase is not OPEN:
            return  # opening (the catch-up captured it), stopped, or closing
        pending = self._pending
        if not pending:
            self._outbox.mark(self)
        stream = frame.stream  # type: ignore[attr-defined]  # an SseFrame: sse.frame made it
        if stream is not None:
            streams = self._set
            slot = streams.slots.get(stream)
            if slot is not None:  # a stream of its id (not a room the back end added)
                positions = self._positions
                positions[slot] = frame.position  # type: ignore[attr-defined]
                pending.append(streams.prefix + b",".join(positions) + b"\n")
        pending.append(frame)
        self._events += 1

    def _append(self, event: SseFrame, pending: list[bytes]) -> None:
        """:meth:`send`'s queueing, for what the catch-up hands out."""
        stream = event.stream
        if stream is not None:
            slot = self._set.slots.get(stream)
            if slot is not None:
                positions = self._positions
                positions[slot] = event.position
                pending.append(self._set.id_line(positions))
        pending.append(event)
        self._events += 1

    def member(self, room: RoomId, joined: bool, reason: str) -> None:
        """Its rooms changed without its asking: a stream has no way to be told but
        its pushes, which it gets (a room the back end added is not in its id)."""

    # Writing

    def flush(self) -> None:
        """Write everything queued for this stream in one write."""
        pending = self._pending
        if not pending or self._phase is RESUMING:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            pending.clear()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        events, self._events = self._events, 0
        transport.write(data)
        self._wrote = True
        if self._backlogged:  # it holds more than a little: within its own bound?
            self._check_output_bound()
        meters = self._outbox.meters
        if meters is not None:
            meters.writes += 1
            meters.frames_written += events
            meters.bytes_written += len(data)

    # Backpressure (as wsoutput.py's)

    def pause_writing(self) -> None:
        if (self._phase is OPEN or self._phase is RESUMING) and not self._backlogged:
            self._backlogged = True
            self._outbox.budget.watch(self)
            self._check_output_bound()

    def resume_writing(self) -> None:
        self._leave_budget()

    def unsent(self) -> int:
        """Bytes held for this client, not yet taken by the kernel."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def overflow(self, reason: str) -> None:
        """The process's output budget closes this stream (1008)."""
        self._node.meters.limits["max_output_total_bytes"] += 1
        self._stop_output(reason, OVERFLOW_GRACE)

    def _check_output_bound(self) -> None:
        limit = self._settings.max_output_bytes
        if self.unsent() > limit:
            self._node.meters.limits["max_output_bytes"] += 1
            self._stop_output(f"slow consumer: over {limit} bytes unsent", None)

    def _stop_output(self, reason: str, grace: float | None) -> None:
        """No more fan-out from this instant; closed on the next turn of the loop
        (not from inside a write or the hub's fan-out), its close event behind what
        it has, so a client that is merely slow learns why."""
        if self._phase is not OPEN and self._phase is not RESUMING:
            return
        self._phase = STOPPED
        self._leave_budget()
        log.info(
            "closing stream %s from %s: %s",
            self.conn_id,
            self.peer,
            reason,
            extra=self._context(CLOSE_POLICY_VIOLATION),
        )
        self._loop.call_soon(self._close_with_grace, reason, grace)

    def _close_with_grace(self, reason: str, grace: float | None) -> None:
        self.close(CLOSE_POLICY_VIOLATION, reason)
        if grace is not None and self._abort_at is not None:
            self._abort_at = min(self._abort_at, self._loop.time() + grace)

    def _leave_budget(self) -> None:
        if self._backlogged:
            self._backlogged = False
            self._outbox.budget.forget(self)

    # Closing, and timers

    def close(self, code: int, reason: str) -> None:
        """End the stream with a ``pushgate:close`` event (behind what it has); the
        TCP connection is dropped after ``close_timeout`` if it is not all written."""
        if self._phase is CLOSING:
            return
        self._leave_hub()
        self._phase = CLOSING
        self._close_code = code
        self._leave_budget()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._pending.append(close_event(code, reason))
        self._events += 1
        self.flush()
        transport.close()  # once its buffer is written
        self._abort_at = self._loop.time() + self._settings.close_timeout

    def check_timers(self, now: float) -> float:
        """Called by the gateway's sweeper: the heartbeat, a token's end, a close
        not completed in time. A stream is looked at on every sweep (it returns
        ``now``: the next tick): its heartbeat counts quiet sweeps (``_wrote``)."""
        if self._abort_at is not None:
            if now >= self._abort_at:
                self.abort()
            return now
        if self._phase is not OPEN:
            return now
        if self._expires_at is not None and time.time() >= self._expires_at:
            log.info("closing stream %s from %s: its grant expired", self.conn_id, self.peer)
            self.close(CLOSE_POLICY_VIOLATION, "a subscription token expired: open with a new one")
        elif self._wrote:
            self._wrote = False
            self._quiet_since = now
        elif now - self._quiet_since >= self._settings.ping_after:
            self._quiet_since = now
            if not self._pending:
                self._outbox.mark(self)
            self._pending.append(PING)
        return now

    def abort(self) -> None:
        """Drop the TCP connection now, discarding anything unsent."""
        if self._transport is not None:
            self._transport.abort()

    def _leave_hub(self) -> None:
        if self._phase in _IN_HUB and self.conn_id is not None:
            self._phase = CLOSING
            self._node.connection_closed(self.conn_id, self)

    # asyncio.Protocol: what the client does

    def data_received(self, data: bytes) -> None:
        """Nothing is read from the client after its request: dropped."""

    def eof_received(self) -> bool | None:
        return None  # the client is gone: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_hub()
        self._phase = CLOSING
        self._pending.clear()
        self._leave_budget()
        self._registry.discard(self)
        if self._admitted_ip is not None:
            self._gatekeeper.release(self._admitted_ip)
            self._admitted_ip = None
        if self.conn_id is not None:
            code = self._close_code
            self._node.meters.closes[code if code is not None else 1006] += 1
            log.debug(
                "closed stream %s from %s (%s)",
                self.conn_id,
                self.peer,
                f"server sent {code}" if code is not None else "the client went",
                extra=self._context(code),
            )

    def _context(self, code: int | None = None) -> dict[str, object]:
        """The fields a JSON log line carries for this connection (logformat.py)."""
        return {"wsId": self.conn_id, "remote": self.peer, "code": code}


if TYPE_CHECKING:
    _: type[Sink] = SseConnection
    __: type[Writable] = SseConnection
