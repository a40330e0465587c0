"""pushgate: a real-time WebSocket push server.

A gateway holds long-lived WebSocket connections and the rooms they are in; an HTTP
API pushes messages to every connection or to one room, and moves connections in and
out of rooms. See README.md for the wire protocol.
"""

__version__ = "0.3.0"
