"""The phases of one client connection, and what each allows.

::

    HANDSHAKE ──> ANSWERED                      an HTTP answer, no WebSocket
        │
        ├──> ECHO                               --conformance-echo
        ├──> AWAITING ──> RESUMING ──┐          ?resume=1: the client speaks first
        │                            │
        └──> WELCOMING <─────────────┘          in the hub; its output held until
                 │                              the welcome may go (wsId findable)
                 v
               OPEN ──> STOPPED                 fan-out reaches it / stopped for
                 │         │                    holding too much (closed next turn)
                 v         v
               CLOSING <───┘  (from any phase)  the closing handshake; out of the hub

A connection is in the hub (registered under its wsId) in WELCOMING, OPEN and
STOPPED; fan-out queues frames for it in WELCOMING and OPEN only; its output is
held (nothing written, welcome first) in AWAITING, RESUMING and WELCOMING. A resume
that finds no session opens a new one: RESUMING → WELCOMING.
"""

from enum import Enum


class Phase(Enum):
    HANDSHAKE = "handshake"
    ANSWERED = "answered"
    ECHO = "echo"
    AWAITING = "awaiting"
    RESUMING = "resuming"
    WELCOMING = "welcoming"
    OPEN = "open"
    STOPPED = "stopped"
    CLOSING = "closing"


IN_HUB = frozenset({Phase.WELCOMING, Phase.OPEN, Phase.STOPPED})
ACCEPTING = frozenset({Phase.WELCOMING, Phase.OPEN})
HELD = frozenset({Phase.AWAITING, Phase.RESUMING, Phase.WELCOMING})
