"""A bench client that speaks the Pusher Channels protocol (7) over WebSocket, as
lean as :class:`~pushgate.bench.wsclient.BenchClient`, whose frames and counting
it shares.

A push reaches a Pusher client as ``{"event":"pushgate:push","channel":"C",
"data":"<sent ns> <seq> xxx"}`` (no channel for a push to all): its ``data`` is the
bench's own text, so the fast path of :meth:`BenchClient._on_text` (find
``"data":"``, read two integers) counts it as it counts a pushgate push, and the
per-delivery cost of the two clients is the same. Only the opening differs:
``pusher:connection_established`` (its ``socket_id``), then, when the scenario has a
room, ``pusher:subscribe`` to its channel and ``pusher_internal:subscription_succeeded``;
``opened`` resolves after the last of these. A ``pusher:ping`` is answered with
``pusher:pong``; WebSocket pings as by any client.
"""

import json
from typing import Any

from pushgate.bench.rawws import OP_TEXT, masked_frame
from pushgate.bench.wsclient import BenchClient, Counters

PING = masked_frame(OP_TEXT, b'{"event":"pusher:ping","data":{}}')
PONG_PAYLOAD = b'{"event":"pusher:pong","data":{}}'


def subscribe_message(channel: str) -> bytes:
    return json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": channel}}, separators=(",", ":")
    ).encode()


class PusherClient(BenchClient):
    """One Pusher connection (``/app/<key>?protocol=7``), subscribed to ``channel``
    when one is given."""

    def __init__(
        self,
        index: int,
        host: str,
        path: str,
        counters: Counters,
        *,
        channel: str | None,
        measured: bool = True,
    ) -> None:
        # need_welcome: the client is open once the protocol says so, not at the 101.
        super().__init__(index, host, path, counters, need_welcome=True, measured=measured)
        self.channel = channel

    def send_ping_message(self) -> None:
        """The application heartbeat a Pusher client sends: ``pusher:ping``."""
        if self.transport is not None and not self._closing and not self.transport.is_closing():
            self.transport.write(PING)

    def _on_json(self, message: dict[str, Any], now: int) -> None:
        """Pusher's own events; a push off the fast path is counted by the base class."""
        event = message.get("event")
        if event == "pusher:connection_established":
            self._on_established(message.get("data"))
        elif event == "pusher_internal:subscription_succeeded":
            if not self.opened.done():
                self.opened.set_result(None)
        elif event in ("pusher:error", "pusher:subscription_error"):
            if not self.opened.done():
                self._fail_handshake(f"{event}: {json.dumps(message.get('data'))[:200]}")
        elif event == "pusher:ping":
            if self.transport is not None:
                self.transport.write(masked_frame(OP_TEXT, PONG_PAYLOAD))
        elif event != "pusher:pong":
            super()._on_json(message, now)

    def _on_established(self, data: object) -> None:
        """The socket_id (kept as ``ws_id``); then subscribe, or be open."""
        try:
            fields = json.loads(data) if isinstance(data, str) else data
            socket_id = fields["socket_id"] if isinstance(fields, dict) else None
        except (ValueError, KeyError):
            socket_id = None
        if not isinstance(socket_id, str):
            self._fail_handshake(f"pusher:connection_established without a socket_id: {data!r}")
            return
        self.ws_id = socket_id
        if self.channel is None:
            self.opened.set_result(None)
        elif self.transport is not None:
            self.transport.write(masked_frame(OP_TEXT, subscribe_message(self.channel)))
