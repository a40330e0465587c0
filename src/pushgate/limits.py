"""Limits on what clients may cost: connections in total and per address, new
connections per second (per address, then in all), and what one connection may
send: messages, frames and bytes per second.

Pure bookkeeping; the gateway asks before accepting and reports when a connection
goes. Every refusal says which limit tripped.

A client "address" is its IPv4 address, or the /64 network of its IPv6 address:
one IPv6 host is usually given a whole /64, so counting single IPv6 addresses would
let it walk around every per-address limit.
"""

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from pushgate.security import Refusal


@lru_cache(maxsize=4096)
def address_key(ip: str) -> str:
    """What per-address limits count: an IPv4 address as it is, an IPv6 address
    as its /64 network (an IPv4-mapped one as its IPv4 address)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """0 means no limit. ``max_connects_per_second_per_ip`` 0 means a quarter of
    ``max_connects_per_second`` (at least 1), when that is set."""

    max_connections: int
    max_connections_per_ip: int
    max_connects_per_second: float
    max_connects_per_second_per_ip: float = 0.0

    @property
    def per_ip_rate(self) -> float:
        """New connections per second from one address (0: no limit)."""
        if self.max_connects_per_second_per_ip:
            return self.max_connects_per_second_per_ip
        if self.max_connects_per_second:
            return max(1.0, self.max_connects_per_second / 4)
        return 0.0


class _Bucket:
    """A token bucket: ``rate`` tokens a second, up to one second's worth (at least
    one token, so that a rate below 1 per second still lets some through)."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(rate, 1.0)
        self._tokens = self._capacity
        self._stamp: float | None = None

    def take(self, now: float) -> bool:
        """Take a token if there is one."""
        if self._stamp is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled: forgetting it would change nothing."""
        if self._stamp is None:
            return True
        return self._tokens + (now - self._stamp) * self._rate >= self._capacity


# Per-address buckets kept before the full ones are forgotten.
_PRUNE_AT = 10_000


class Admission:
    """Decides whether a new TCP connection may stay; tracks the open ones (a
    handshake in progress included) in all and per address."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._per_ip: Counter[str] = Counter()
        self._open = 0
        rate = limits.max_connects_per_second
        self._rate = _Bucket(rate) if rate else None
        self._ip_rate = limits.per_ip_rate
        self._ip_buckets: dict[str, _Bucket] = {}

    def admit(self, ip: str, now: float) -> Refusal | None:
        """None, and the connection is counted (release it with :meth:`release`);
        or the limit it would break."""
        limits = self.limits
        key = address_key(ip)
        if limits.max_connections and self._open >= limits.max_connections:
            return Refusal(
                503, f"server full: {limits.max_connections} connections (limit)", "server_full"
            )
        if limits.max_connections_per_ip and self._per_ip[key] >= limits.max_connections_per_ip:
            self._forget_if_unused(key)
            return Refusal(
                429,
                f"too many connections from {key}: {limits.max_connections_per_ip} (limit)",
                "ip_limit",
            )
        if self._ip_rate and not self._ip_bucket(key, now).take(now):
            return Refusal(
                429,
                f"too many new connections from {key}: over {self._ip_rate:g} per second (limit)",
                "ip_connect_rate",
            )
        if self._rate is not None and not self._rate.take(now):
            rate = limits.max_connects_per_second
            return Refusal(
                429,
                f"too many new connections: over {rate:g} per second (limit)",
                "connect_rate",
            )
        self._open += 1
        self._per_ip[key] += 1
        return None

    def release(self, ip: str) -> None:
        """An admitted connection has gone."""
        key = address_key(ip)
        self._open -= 1
        self._per_ip[key] -= 1
        self._forget_if_unused(key)

    @property
    def open(self) -> int:
        """Connections admitted and not yet released."""
        return self._open

    def _forget_if_unused(self, key: str) -> None:
        if not self._per_ip[key]:
            del self._per_ip[key]

    def _ip_bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._ip_buckets.get(key)
        if bucket is None:
            if len(self._ip_buckets) >= _PRUNE_AT:
                self._ip_buckets = {k: b for k, b in self._ip_buckets.items() if not b.full(now)}
            bucket = self._ip_buckets[key] = _Bucket(self._ip_rate)
        return bucket


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one client may send; 0 means no limit. A burst may hold one second's
    worth, and always one whole message of ``max_message_bytes`` (with its framing)."""

    messages_per_second: int = 0
    frames_per_second: int = 0
    bytes_per_second: int = 0
    max_message_bytes: int = 0
    # The buckets' capacities: made once, so that every new connection's full
    # buckets are the same two floats, not two of its own.
    frame_burst: float = field(init=False, repr=False, compare=False)
    byte_burst: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bytes_ = max(self.bytes_per_second, self.max_message_bytes + 16 * 1024)
        object.__setattr__(self, "frame_burst", float(self.frames_per_second))
        object.__setattr__(self, "byte_burst", float(bytes_))


class ClientBudget:
    """What one connection has sent: messages in one-second windows, frames and
    bytes in token buckets. Each method counts and answers whether a limit was
    passed, naming it; the caller closes the connection with 1008.

    A connection's state derives from it (connstate.py): its counters are slots of
    the connection, not an object of its own (48 bytes less a connection)."""

    __slots__ = (
        "_budget_bytes",
        "_budget_frames",
        "_budget_messages",
        "_budget_stamp",
        "_budget_window",
    )

    def __init__(self, limits: InputLimits) -> None:
        self._budget_window = 0.0
        self._budget_messages = 0
        self._budget_frames = limits.frame_burst
        self._budget_bytes = limits.byte_burst
        self._budget_stamp: float | None = None

    def count_message(self, now: float, limits: InputLimits) -> bool:
        """Count a message; True when this second's count passes the limit."""
        limit = limits.messages_per_second
        if not limit:
            return False
        if now - self._budget_window >= 1.0:
            self._budget_window = now
            self._budget_messages = 0
        self._budget_messages += 1
        return self._budget_messages > limit

    def abusing(self, limits: InputLimits) -> bool:
        """Over twice the message rate in this second: not a burst, abuse (close it);
        between once and twice, its messages are refused one by one."""
        limit = limits.messages_per_second
        return bool(limit) and self._budget_messages > 2 * limit

    def count_input(
        self, now: float, frames: int, size: int, limits: InputLimits
    ) -> tuple[str, str] | None:
        """Count ``frames`` frames and ``size`` bytes; the limit passed, if any: the
        option that sets it, and the reason to close with."""
        if self._budget_stamp is not None:
            elapsed = now - self._budget_stamp
            if limits.frames_per_second:
                rate = limits.frames_per_second
                self._budget_frames = min(limits.frame_burst, self._budget_frames + elapsed * rate)
            if limits.bytes_per_second:
                rate = limits.bytes_per_second
                self._budget_bytes = min(limits.byte_burst, self._budget_bytes + elapsed * rate)
        self._budget_stamp = now
        self._budget_frames -= frames
        self._budget_bytes -= size
        if limits.frames_per_second and self._budget_frames < 0:
            rate = limits.frames_per_second
            return "max_client_frames_per_second", f"rate limit: over {rate} frames per second"
        if limits.bytes_per_second and self._budget_bytes < 0:
            rate = limits.bytes_per_second
            return "max_client_bytes_per_second", f"rate limit: over {rate} bytes per second"
        return None
