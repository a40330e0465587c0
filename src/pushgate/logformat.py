"""How the server's log lines look: ``text`` for a person (the default), or ``json``,
one object per line for a log pipeline (Loki, Elasticsearch, CloudWatch...).

A JSON line holds ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger`` and
``message`` (the same text the readable line shows), ``exc`` when an exception is
logged, and the context fields a call site passes with ``extra=``: ``wsId``,
``remote``, ``code``, ``room``, ``user``, ``node``. With ``--workers``, a worker's
lines also hold ``worker`` (``gateway 2``, ``logic``): see :func:`with_worker`.

Whatever the format, no line shows a secret: :class:`RedactSecrets` rewrites every
record before it is written (see its docstring), so that a debug log can be shared.
"""

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from websockets.frames import Frame, Opcode

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("wsId", "remote", "code", "room", "user", "node")
HIDDEN = "…"


def _subprotocols(match: re.Match[str]) -> str:
    """Offered subprotocols other than ``pushgate`` are connection tokens (browsers
    cannot send them any other way): keep ``pushgate``, hide the rest."""
    values = [value.strip() for value in match.group(2).split(",")]
    shown = (value if value == "pushgate" else HIDDEN for value in values)
    return match.group(1) + ", ".join(shown)


# Each secret's shape, and what it becomes; applied in this order.
_SECRETS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # ?token=… (and the like) in a handshake path or an access-log request line
    (
        re.compile(r"\b((?:\w+_)?token|session|api_?key|secret|password)=[^&\s\"'#;]+", re.I),
        rf"\1={HIDDEN}",
    ),
    # "session":"…" in a client's resume message, also quoted inside a repr
    (re.compile(r"""(\\?["']session\\?["']\s*:\s*\\?["'])[^"'\\]*"""), rf"\1{HIDDEN}"),
    # a JWT: its header is base64url of '{"...'
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}"), HIDDEN),
    # request headers that carry credentials, as websockets logs them at debug
    (
        re.compile(r"^([<>]? ?(?:proxy-)?(?:authorization|cookie|set-cookie):\s*).+", re.I | re.M),
        rf"\1{HIDDEN}",
    ),
    (re.compile(r"^([<>]? ?sec-websocket-protocol:\s*)(.+)", re.I | re.M), _subprotocols),
)


def redact(text: str) -> str:
    """``text`` with every connection token, session token and credential header
    value replaced by ``…``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redact_frame(frame: Frame) -> str:
    """A received frame as websockets logs it, with secrets hidden in the whole
    payload first: websockets shows only a long payload's start and end, which can
    hold the tail of a session token without its ``"session"`` key. A continuation
    frame cannot be read alone (it may hold the rest of a secret), so its payload
    is hidden whole; its length is kept."""
    shown = str(frame)
    if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
        return shown  # control frames: a close reason, a ping's payload
    metadata = shown.rpartition(" [")[2]
    if frame.opcode is Opcode.CONT:
        return f"CONT '{HIDDEN}' [{metadata}"
    text = bytes(frame.data).decode("utf-8", "replace")
    hidden = redact(text)
    if hidden == text:
        return shown
    safe = str(dataclasses.replace(frame, data=hidden.encode()))
    return safe.rpartition(" [")[0] + " [" + metadata


def _rendered(record: logging.LogRecord) -> str:
    """The record's message, its frames shown with their payloads redacted. A call
    whose arguments do not fit its format is shown, not raised into the caller (a
    filter runs inside the logging call)."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(arg, Frame) for arg in args):
        record.args = tuple(_redact_frame(a) if isinstance(a, Frame) else a for a in args)
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        return f"{record.msg} (arguments that do not fit: {record.args!r})"


class RedactSecrets(logging.Filter):
    """Hides secrets in every record a handler writes: connection tokens (``?token=``,
    subprotocols, anything shaped like a JWT), session tokens (``"session":"…"`` in
    resume messages), credential headers. Installed on the handler, not on call
    sites, so that no log line can leak one, including websockets' and aiohttp's own
    debug and access lines. The record's message is rendered, rewritten, and kept
    rendered (``args`` emptied), as is its traceback."""

    _plain = logging.Formatter()  # only for rendering tracebacks, as both formats do

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_rendered(record))
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_text:  # already rendered (and redacted) by RedactSecrets
            line["exc"] = record.exc_text
        elif record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exc"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


def with_worker(line: str, worker: str) -> str:
    """A child's JSON log line as its supervisor passes it on (``--workers``): with
    ``"worker"`` naming the child, as a text line is prefixed ``[gateway 2]``. What
    the child wrote that is not a JSON object (Python's last words before logging was
    set up, say) becomes one, so that the stream stays JSON lines."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        moment = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {"time": moment, "level": "error", "logger": "pushgate.worker", "message": line}
    record["worker"] = worker
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class OneLineWarning(logging.Filter):
    """A Python warning as :func:`logging.captureWarnings` hands it over is
    ``file:line: Category: message`` and then the source line that warned, indented
    on a line of its own: keep the first part, on one line, so that a text log stays
    one line per event like a JSON one."""

    def filter(self, record: logging.LogRecord) -> bool:
        warning, _, _source = _rendered(record).rstrip("\n").partition("\n  ")
        record.msg = " ".join(warning.split())
        record.args = ()
        return True


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log lines on stderr, at ``level``, as ``text`` or ``json``, secrets hidden.
    Python warnings (a library's deprecation, PyJWT's short-key warning) are log
    records too, of logger ``py.warnings``: printed by themselves, they would put
    lines that are not JSON between the JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.captureWarnings(True)
    warnings = logging.getLogger("py.warnings")
    if not any(isinstance(f, OneLineWarning) for f in warnings.filters):
        warnings.addFilter(OneLineWarning())
    # websockets' own per-connection lines only at debug; pushgate logs those itself.
    if level != "debug":
        logging.getLogger("pushgate.websocket").setLevel(logging.WARNING)
