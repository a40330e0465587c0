"""The progress display: one updating line on a terminal, a line every few seconds
(and at every phase change) otherwise. It writes to stderr, so ``--json`` output on
stdout stays clean.
"""

import sys
import time
from typing import TextIO

TTY_INTERVAL = 0.25
LOG_INTERVAL = 5.0


class Progress:
    """Call :meth:`phase` when a phase starts and :meth:`update` as often as you like."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.prefix = ""
        self._phase = ""
        self._shown = 0.0
        self._width = 0

    def phase(self, name: str, detail: str = "") -> None:
        self._phase = name
        self._shown = 0.0
        self.update(detail)

    def update(self, detail: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown < (TTY_INTERVAL if self.tty else LOG_INTERVAL):
            return
        self._shown = now
        text = f"{self.prefix}{self._phase}: {detail}" if detail else f"{self.prefix}{self._phase}"
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the updating line, so that what follows starts on a line of its own."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
