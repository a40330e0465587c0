"""The state one client connection keeps, shared by its parts: the lifecycle
(connection.py), the reading half (wsinput.py) and the writing half (wsoutput.py),
each a class over this one, so that a connection is one object with slots (tens of
thousands are alive at once) while each concern lives in its own module."""

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame
from websockets.http11 import Request, Response

from pushgate.connsettings import ConnectionSettings
from pushgate.gatekeeper import Admitted
from pushgate.gatewayhttp import GatewayRoutes, Upgrade
from pushgate.hub import Encoding
from pushgate.ids import ConnId
from pushgate.limits import ClientBudget
from pushgate.outbox import ConnectionRegistry, Outbox
from pushgate.phase import Phase
from pushgate.security import Refusal
from pushgate.wsprotocol import GatewayProtocol

if TYPE_CHECKING:
    from pushgate.node import Node
    from pushgate.pusherproto import PusherProtocol
    from pushgate.pushgateproto import PushgateProtocol


@dataclass(slots=True)
class Asking:
    """A handshake waiting for the connect hook's verdict (``task``): the answer
    prepared for an admission, and what the client sent meanwhile, parsed
    (``frames``) or not (``data``), to be taken once it is answered."""

    task: "asyncio.Task[Admitted | Refusal]"
    request: Request
    response: Response  # the 101, if the hook allows
    upgrade: Upgrade
    frames: list[Frame] = field(default_factory=list)
    data: bytes = b""


class ConnectionState(ClientBudget):
    """The slots of a connection (and, as a :class:`~pushgate.limits.ClientBudget`,
    the counters of what it sends); :class:`~pushgate.connection.WebSocketConnection`
    sets them all in its ``__init__``."""

    __slots__ = (
        "_abort_at",
        "_admitted_ip",
        "_asking",
        "_backlogged",
        "_client",
        "_deflate_bits",
        "_fragmented_text",
        "_fragments",
        "_handshake_bytes",
        "_head",
        "_held_bytes",
        "_loop",
        "_node",
        "_outbox",
        "_pending",
        "_phase",
        "_pinged_at",
        "_proto",
        "_registry",
        "_routes",
        "_settings",
        "_transport",
        "_unread",
        "conn_id",
        "connected_at",
        "encoding",
        "ip",
        "last_seen",
        "sweep_tick",
    )

    _abort_at: float | None  # closing: drop the TCP connection then (loop clock)
    _admitted_ip: str | None  # set while counted by the gatekeeper
    _asking: Asking | None  # while the connect hook decides on its handshake
    _backlogged: bool  # holds enough unsent to be in the output budget
    _client: "PushgateProtocol | PusherProtocol | None"  # the wire protocol, once upgraded
    _deflate_bits: int  # the window of a negotiated permessage-deflate (0: none)
    encoding: Encoding  # how its protocol over its transport sends a message
    _fragmented_text: bool
    _fragments: list[bytes] | None  # the frames of a message in progress
    _handshake_bytes: int  # received before the handshake was answered
    _held_bytes: int  # fan-out bytes held while WELCOMING
    _loop: asyncio.AbstractEventLoop
    _node: "Node"
    _outbox: Outbox
    _pending: list[bytes]  # frames queued, written by the next flush
    _head: int  # how many of them must stay first (the handshake's 101, held a moment)
    _phase: Phase
    _pinged_at: float
    _proto: GatewayProtocol
    _registry: "ConnectionRegistry[Any]"  # of WebSocketConnection
    _routes: GatewayRoutes
    _settings: ConnectionSettings
    _transport: asyncio.Transport | None
    _unread: bytes  # input left for the next turn of the loop (reading paused)
    conn_id: ConnId | None  # set once the session core knows it
    connected_at: float
    ip: str
    last_seen: float
    sweep_tick: int | None  # its bucket in the gateway sweeper's wheel (timerwheel.py)

    @property
    def peer(self) -> str:
        """Its address and port, for the logs: made when asked, from its transport
        (which keeps them in C), not kept (a string per connection); its address
        alone once the transport is gone, "?" if unknown."""
        transport = self._transport
        peer = None if transport is None else transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return self.ip
