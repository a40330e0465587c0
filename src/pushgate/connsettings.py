"""What every client connection of one gateway shares: timers and limits, read from
the configuration once (config.py builds it) and handed to each connection."""

from dataclasses import dataclass, field

from pushgate.limits import InputLimits
from pushgate.namespaces import Namespaces
from pushgate.pusherapps import PusherApps


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What every connection of one gateway shares. Durations are in seconds."""

    # Heartbeat
    heartbeat: float  # the PING interval advertised to clients in the welcome frame
    ping_after: float  # send a protocol ping to a connection silent this long
    idle_timeout: float  # close a connection silent this long, with 1011
    # Timeouts
    handshake_timeout: float  # from TCP accept to a complete WebSocket handshake
    close_timeout: float  # from starting a close to dropping the TCP connection
    # Limits
    max_message_bytes: int  # a client message over this closes it with 1009
    max_output_bytes: int  # bytes held unsent for one client before it is closed with 1008
    # What one client may send (messages, frames, bytes per second); past it: 1008
    input: InputLimits = field(default_factory=InputLimits)
    max_handshake_bytes: int = 16 * 1024  # a larger handshake request is answered 431
    max_output_total_bytes: int = 0  # held unsent for all clients; past it, the largest go
    # Who may subscribe a connection to a room (docs/protocol.md, "Subscribing")
    namespaces: Namespaces = field(default_factory=Namespaces)
    # The Pusher apps whose clients connect at /app/<key> (docs/pusher.md)
    pusher_apps: PusherApps = field(default_factory=PusherApps)
    # Testing
    conformance_echo: bool = False  # serve /echo, which echoes every message (Autobahn)
    # permessage-deflate for clients that offer it, without context takeover both ways
    compression: bool = True
