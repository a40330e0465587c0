"""A bench client that reads a Server-Sent Events stream (``GET /events``,
docs/sse.md), as lean as :class:`~pushgate.bench.wsclient.BenchClient`, whose
accounting it shares.

The stream is the response's body (no chunked encoding: the server ends it by
closing): events separated by a blank line. A push is an event without an
``event:`` field, ``id: ...`` then ``data: <the pushgate protocol's JSON>``; its
JSON is the one a WebSocket client gets, so the fast path of
:meth:`BenchClient._on_text` (find ``"data":"``, read two integers) counts it in
place, and per delivery the two clients differ only by a search for the blank line
and the ``data:`` field. pushgate's own events (``pushgate:open``, ``pushgate:close``,
``pushgate:lost``, ``pushgate:presence``) are decoded; comments (``: ping``) skipped.
``opened`` resolves with ``pushgate:open`` (the stream is in its rooms from then on);
a ``pushgate:close`` sets ``close_code`` as a close frame would.

It is one-way: nothing is sent after the request, so no application PING, and a
close is the end of the TCP connection.
"""

import json
import time
from typing import Any

from pushgate.bench.wsclient import MAX_HANDSHAKE_BYTES, BenchClient, Counters

EVENT_END = b"\n\n"
DATA = b"data: "
EVENT = b"event: "


class SseClient(BenchClient):
    """One event stream: ``path`` is ``/events`` with its query."""

    def __init__(
        self, index: int, host: str, path: str, counters: Counters, *, measured: bool = True
    ) -> None:
        super().__init__(index, host, path, counters, need_welcome=True, measured=measured)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    # Commands from the worker

    def send_ping_message(self) -> None:
        """A stream sends nothing after its request."""

    def close(self, code: int = 1000) -> None:
        """The client's end of a stream is the end of its connection."""
        if self.transport is not None and not self.transport.is_closing():
            self._closing = True
            self.transport.close()

    # The response's head

    def _on_handshake_data(self, data: bytes) -> bytes:
        """Consume the 200's head; return the bytes after it (events already)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HANDSHAKE_BYTES:
                self._fail_handshake("response headers too long")
            else:
                self._buf = data
            return b""
        status_line = data[: data.find(b"\r\n")]
        if status_line[9:12] != b"200":
            body = data[end + 4 : end + 204].decode("utf-8", "replace").strip()
            self._fail_handshake(f"server answered {status_line.decode('latin-1')!r}: {body}")
            return b""
        self._handshaking = False
        if self.measured:
            self.counters.open += 1
        return data[end + 4 :]

    # Events

    def _on_frames(self, buf: bytes) -> None:
        """Walk every complete event in ``buf``; keep a partial one for the next read.

        Once per read, its loop once per delivery, like the frame walk it replaces: a
        push (a ``data:`` field with no ``event:`` before it) goes to the fast path."""
        now = time.time_ns()  # one arrival time for every event of this read
        on_text = self._on_text
        pos = 0
        while (end := buf.find(EVENT_END, pos)) >= 0:
            data = buf.find(DATA, pos, end)
            if data >= 0:
                if buf.find(EVENT, pos, data) < 0:
                    on_text(buf, data + 6, end, now)
                else:
                    self._on_named_event(buf[pos:end], now)
            pos = end + 2  # a comment, or an event with no data: nothing to count
        if pos < len(buf):
            self._buf = buf[pos:]

    def _on_named_event(self, block: bytes, now: int) -> None:
        """One of pushgate's own events: its name and its data's JSON."""
        name, data = b"", b""
        for line in block.split(b"\n"):
            if line.startswith(EVENT):
                name = line[len(EVENT) :]
            elif line.startswith(DATA):
                data = line[len(DATA) :]
        try:
            fields = json.loads(data)
        except ValueError:
            return
        if isinstance(fields, dict):
            self._on_event(name, fields)

    def _on_event(self, name: bytes, data: dict[str, Any]) -> None:
        if name == b"pushgate:open":
            ws_id = data.get("wsId")
            self.ws_id = ws_id if isinstance(ws_id, str) else None
            if not self.opened.done():
                self.opened.set_result(None)
        elif name == b"pushgate:close":
            code = data.get("code")
            self.close_code = code if isinstance(code, int) else None
        # pushgate:lost and pushgate:presence: nothing the bench counts.
