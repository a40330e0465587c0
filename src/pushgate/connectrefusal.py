"""Why a WebSocket handshake was refused, read from the answer that refused it.

A gateway answers a handshake it refuses with an HTTP status and its reason as a
plain-text body ("the token has expired"); the logic API, reached by mistake on its
port, answers JSON (``{"ok":false,"error":...}``); a proxy in between may answer an
HTML page. Pure: the client hands over what arrived and gets a line to show.
"""

import json
from dataclasses import dataclass

# A reason longer than this is cut: a proxy's error page is not a reason.
MAX_REASON_CHARS = 200
DEFAULT_GATEWAY_PORT = 8888  # --ws-port's default, named in the hint for the API port

API_PORT_HINT = (
    f"is this the logic API's port? the gateway is on --ws-port, {DEFAULT_GATEWAY_PORT} by default"
)


@dataclass(frozen=True, slots=True)
class HandshakeRefusal:
    """A refused handshake: its HTTP ``status``, the server's ``reason`` (empty when
    it gave none that reads as one), and a ``hint`` at what to do (empty: none)."""

    status: int
    reason: str
    hint: str = ""

    def describe(self) -> str:
        """``HTTP 403: the token has expired (hint)``: the line to show a person."""
        line = f"HTTP {self.status}"
        if self.reason:
            line += f": {self.reason}"
        if self.hint:
            line += f" ({self.hint})"
        return line


def read_refusal(
    status: int, reason_phrase: str, content_type: str | None, body: bytes
) -> HandshakeRefusal:
    """What a refusal with this status line, ``Content-Type`` and body says."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    text = body.decode("utf-8", errors="replace").strip()
    if media_type == "application/json":
        error = _api_error(text)
        if error is not None:
            # Only the logic API answers a handshake with its JSON error shape.
            return HandshakeRefusal(status, _one_line(error), API_PORT_HINT)
    if media_type in ("", "text/plain") and text:
        return HandshakeRefusal(status, _one_line(text))
    return HandshakeRefusal(status, reason_phrase.strip())


def _api_error(text: str) -> str | None:
    """The ``error`` of the logic API's ``{"ok":false,"error":...}``, else None."""
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("ok") is False:
        error = answer.get("error")
        return error if isinstance(error, str) else None
    return None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    if len(line) > MAX_REASON_CHARS:
        line = line[: MAX_REASON_CHARS - 1] + "…"
    return line
