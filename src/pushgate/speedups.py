"""Which fan-out path this process uses: compiled, or pure Python.

``pushgate._speedups`` (built from ``_speedups.c`` by ``pip install .`` where a C
compiler and Python's headers are present; skipped otherwise) does the two loops
that run once per delivery: the hub's hand-out of a frame to each connection and the
outbox's one write per connection and turn. It does what ``Output.send`` and
``Output.flush`` (wsoutput.py) do for an open WebSocket connection, and calls them,
and every other sink's methods, for everything else: behaviour is written once, in
Python, and the extension only takes the interpreter out of the common case.

The pure-Python path is used when the extension is missing, or when
``PUSHGATE_NO_SPEEDUPS=1`` is set (read once, at import). ``pushgate --version``,
the startup log and ``/metrics`` (``pushgate_info{fanout=...}``) say which is in use.

Callers read :data:`compiled` once per push or per turn (tests switch it).
"""

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol


class Compiled(Protocol):
    """``pushgate._speedups``, as its callers see it (its stub: _speedups.pyi)."""

    def setup(self, conn_type: type, outbox_type: type, open_phase: object, /) -> None: ...

    def hand(self, sinks: Iterable[Any], frame: bytes, skip: object, /) -> int: ...

    def hand_each(
        self, sinks: Iterable[Any], message: Any, skip: object, delivered: Counter[Any], /
    ) -> int: ...

    def flush(self, outbox: object, conns: list[Any], start: int, stop: int, /) -> None: ...


#: The interface of _speedups.c that this module calls: a build of another one (an
#: editable install whose C source changed since) is not used.
INTERFACE = 1


def _load() -> tuple[Compiled | None, str]:
    """The extension, or None and why not."""
    try:
        from pushgate import _speedups
    except ImportError:
        return None, "pushgate._speedups not built"
    if getattr(_speedups, "INTERFACE", None) != INTERFACE:
        return None, "pushgate._speedups out of date: reinstall pushgate"
    return _speedups, ""


#: Set to 1 (anything but empty or 0) to use the pure-Python path.
DISABLED = os.environ.get("PUSHGATE_NO_SPEEDUPS", "") not in ("", "0")
#: The extension, if it was built (whether or not it is used), or why it is not here.
BUILT, WHY_NOT = _load()
#: The extension, while it is in use; None: the pure-Python path.
compiled: Compiled | None = None if DISABLED else BUILT


def describe() -> str:
    """Which path fan-out takes here, for people: ``compiled``, or why not."""
    if compiled is not None:
        return "compiled"
    if BUILT is not None:
        return "pure Python (PUSHGATE_NO_SPEEDUPS=1)"
    return f"pure Python ({WHY_NOT})"


def label() -> str:
    """The same, as one word (a label value in /metrics): compiled or python."""
    return "compiled" if compiled is not None else "python"
