"""Child processes tied to the life of their parent.

The ``--workers`` supervisor and the bench start children that must not outlive them:
a worker left behind would keep the WebSocket port, a bench client would keep
connections open. :func:`dies_with_parent` makes a child ask the kernel to signal it
when its parent dies, however the parent dies (``kill -9`` and the OOM killer
included): Linux's ``PR_SET_PDEATHSIG``; elsewhere nothing.
"""

import contextlib
import ctypes
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # prctl(2)


def dies_with_parent(death_signal: int) -> Callable[[], None]:
    """A ``preexec_fn`` for a child that should get ``death_signal`` when we die."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: no prctl
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(death_signal))

    return preexec
