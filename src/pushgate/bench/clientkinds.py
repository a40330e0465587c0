"""The wire protocols a bench's clients may speak (``--client``), and what each asks
of the server, of the scenario's room and of the URL it connects to.

Pure: no I/O. The clients themselves are :mod:`pushgate.bench.wsclient` (pushgate's
protocol over WebSocket), :mod:`pushgate.bench.pusherclient` (Pusher Channels over
WebSocket) and :mod:`pushgate.bench.sseclient` (Server-Sent Events).

What is compared is the server's CPU per delivery of one push, whatever the protocol:
every kind gets the same pushes (``POST /push/room`` or ``/push/all``, val
``"<sent ns> <seq> xxx"``), counted the same way. Only how a client gets into the
room differs:

- **pushgate**: the bench joins each client's wsId with ``POST /room/join``;
- **pusher**: the bench's own server serves a made-up app (``--pusher-app``), each
  client subscribes itself to the channel whose room is the scenario's
  (``<app id>:<channel>``); a push to all reaches it without a channel;
- **sse**: the bench's own server makes the default namespace public
  (``--namespaces =public``), so a stream names the room in its URL
  (``/events?room=bench``): the same room and the same push JSON as pushgate's.
"""

from dataclasses import dataclass
from urllib.parse import quote

from pushgate.bench.scenarios import ROOM

PUSHGATE, PUSHER, SSE = "pushgate", "pusher", "sse"
CLIENTS = (PUSHGATE, PUSHER, SSE)
# The scenarios whose clients may speak another protocol: the fan-out ones, and idle
# (memory per connection). The others rely on pushgate's own messages (welcomes with
# sessions, joins by wsId, client publishes).
CLIENT_SCENARIOS = ("broadcast", "room", "idle")
# The made-up Pusher app of the bench's own server; its room for ROOM is
# "<PUSHER_APP_ID>:<ROOM>".
PUSHER_APP_ID = "bench"
PUSHER_KEY = "bench-key"
PUSHER_PROTOCOL = 7


@dataclass(frozen=True, slots=True)
class ClientKind:
    """One ``--client``: the room a room scenario pushes to, whether the bench joins
    it by API, and the path each client connects to."""

    name: str

    @property
    def room(self) -> str:
        """The room the room scenario pushes to: a Pusher channel is a room of its app."""
        return f"{PUSHER_APP_ID}:{ROOM}" if self.name == PUSHER else ROOM

    @property
    def joins_by_api(self) -> bool:
        """The bench puts each client in the room with POST /room/join (pushgate's);
        the others are in it from their own subscribe, or their URL."""
        return self.name == PUSHGATE

    @property
    def channel(self) -> str:
        """A Pusher client's channel in the room scenario."""
        return ROOM

    def path(self, ws_path: str, in_room: bool) -> str:
        """Where a client connects, given the server's WebSocket path (``/connect``)
        and whether the scenario puts it in the room."""
        if self.name == PUSHER:
            return f"/app/{PUSHER_KEY}?protocol={PUSHER_PROTOCOL}"
        if self.name == SSE:
            return f"/events?room={quote(self.room, safe=':')}" if in_room else "/events"
        return ws_path

    def server_args(self, pusher_secret: str) -> list[str]:
        """What the bench's own server needs to serve this kind of client."""
        if self.name == PUSHER:
            return ["--pusher-app", f"{PUSHER_APP_ID}:{PUSHER_KEY}:{pusher_secret}"]
        if self.name == SSE:
            return ["--namespaces", "=public"]
        return []
