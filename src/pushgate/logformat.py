"""How the server's log lines look: ``text`` for a person (the default), or ``json``,
one object per line for a log pipeline (Loki, Elasticsearch, CloudWatch...).

A JSON line holds ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger`` and
``message`` (the same text the readable line shows), ``exc`` when an exception is
logged, and the context fields a call site passes with ``extra=``: ``wsId``,
``remote``, ``code``, ``room``, ``user``, ``node``.
"""

import json
import logging
import sys
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("wsId", "remote", "code", "room", "user", "node")


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
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exc"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log lines on stderr, at ``level``, as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
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
    # websockets' own per-connection lines only at debug; pushgate logs those itself.
    if level != "debug":
        logging.getLogger("pushgate.websocket").setLevel(logging.WARNING)
