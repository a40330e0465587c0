"""Child processes the bench starts: tied to its life, stopped in bounded time.

Each child runs in its own session, so a Ctrl-C at the terminal reaches only the
bench, which then stops the children in order (workers first, then the server);
each asks the kernel to signal it when the bench dies (``PR_SET_PDEATHSIG``), so
not even a ``kill -9`` of the bench leaves one behind; and every child still
running when the event loop is gone is killed by :func:`kill_leftovers`.
"""

import asyncio
import contextlib
import os
import signal
from typing import Any

from pushgate.processes import dies_with_parent

_live: set[int] = set()  # pids started and not yet seen to exit


async def spawn(*command: str, death_signal: int, **kwargs: Any) -> asyncio.subprocess.Process:
    """Start a child in its own session, signalled with ``death_signal`` if we die."""

    process = await asyncio.create_subprocess_exec(
        *command, start_new_session=True, preexec_fn=dies_with_parent(death_signal), **kwargs
    )
    _live.add(process.pid)
    return process


async def stop_process(
    process: asyncio.subprocess.Process, sig: int = signal.SIGTERM, grace: float = 5.0
) -> int:
    """Send ``sig``, wait up to ``grace`` seconds, then SIGKILL; return the exit status."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    status = await process.wait()
    _live.discard(process.pid)
    return status


def kill_leftovers() -> int:
    """SIGKILL every child not seen to exit (after an interrupted cleanup); return how many."""
    killed = 0
    for pid in list(_live):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
            os.waitpid(pid, 0)
        _live.discard(pid)
    return killed
