"""The ``X-Pushgate-Signature`` header: ``t=<unix seconds>,v1=<hex>``, where ``<hex>``
is HMAC-SHA256 under the shared secret of ``b"<t>." + body`` (as Stripe's: a
receiver checks the body and can refuse a replay whose ``t`` is old).

Pure: the clock is the caller's. docs/webhooks.md shows a receiver's check.
"""

import hashlib
import hmac

HEADER = "X-Pushgate-Signature"
TOLERANCE = 300  # seconds a receiver accepts between ``t`` and its own clock


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: bytes, body: bytes, header: str, *, now: float, tolerance: float = TOLERANCE
) -> bool:
    """The header signs ``body`` under ``secret`` and its ``t`` is within ``tolerance``
    seconds of ``now``. Any ``v1`` may match (several: a secret being rotated)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures)
