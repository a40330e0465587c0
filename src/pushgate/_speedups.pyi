"""The compiled fan-out (_speedups.c); pushgate.speedups says whether it is used."""

from collections import Counter
from collections.abc import Iterable
from typing import Any

INTERFACE: int

def setup(conn_type: type, outbox_type: type, open_phase: object, /) -> None: ...
def hand(sinks: Iterable[Any], frame: bytes, skip: object, /) -> int: ...
def hand_each(
    sinks: Iterable[Any], message: Any, skip: object, delivered: Counter[Any], /
) -> int: ...
def flush(outbox: object, conns: list[Any], start: int, stop: int, /) -> None: ...
