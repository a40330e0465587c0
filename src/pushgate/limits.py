"""Limits on what clients may cost: connections in total and per address, new
connections per second, messages per second per connection.

Pure bookkeeping; the gateway asks before accepting and reports when a connection
goes. Every refusal says which limit tripped.
"""

from collections import Counter
from dataclasses import dataclass

from pushgate.security import Refusal


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """0 means no limit."""

    max_connections: int
    max_connections_per_ip: int
    max_connects_per_second: float


class Admission:
    """Decides whether a new connection may open; tracks the open ones per address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._per_ip: Counter[str] = Counter()
        self._open = 0
        # Token bucket for new connections: up to one second's worth in a burst (and
        # at least one, so that a rate below 1 per second still lets some in).
        self._capacity = max(limits.max_connects_per_second, 1.0)
        self._tokens = self._capacity
        self._refilled_at: float | None = None

    def admit(self, ip: str, now: float) -> Refusal | None:
        """None, and the connection is counted; or the limit it would break."""
        limits = self.limits
        if limits.max_connections and self._open >= limits.max_connections:
            return Refusal(
                503, f"server full: {limits.max_connections} connections (limit)", "server_full"
            )
        if limits.max_connections_per_ip and self._per_ip[ip] >= limits.max_connections_per_ip:
            return Refusal(
                429,
                f"too many connections from {ip}: {limits.max_connections_per_ip} (limit)",
                "ip_limit",
            )
        if limits.max_connects_per_second:
            rate = limits.max_connects_per_second
            if self._refilled_at is not None:
                self._tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * rate)
            self._refilled_at = now
            if self._tokens < 1:
                return Refusal(
                    429,
                    f"too many new connections: over {rate:g} per second (limit)",
                    "connect_rate",
                )
            self._tokens -= 1
        self._open += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection has gone."""
        self._open -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]


class MessageRate:
    """Counts one connection's messages in one-second windows."""

    __slots__ = ("_count", "_window_start")

    def __init__(self) -> None:
        self._window_start = 0.0
        self._count = 0

    def over(self, now: float, limit: int) -> bool:
        """Count a message; True when this second's count passes ``limit``."""
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._count = 0
        self._count += 1
        return self._count > limit
