"""The ``pushgate bench`` subcommand: running it.

Two entry points for pushgate's CLI: :func:`pushgate.bench.parser.add_bench_parser`
adds the subcommand to an ``add_subparsers()`` object; :func:`run_bench` runs the
parsed arguments and returns the exit status: 0 done; 1 could not run (the message
says why); 2 bad options; 3 a run lost or duplicated messages on clients the server
did not close, or (with one sender, when order is defined) reordered them, or
(resume) a session could not be resumed or a client did not catch up, or
(reconnect) a client could not reconnect, or (abuse) an honest client lost a push,
closed or not, or (chat) a member heard the wrong presence joins; 130 interrupted.
"""

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from pushgate.bench.chatresult import ChatResult
from pushgate.bench.children import kill_leftovers
from pushgate.bench.fromargs import options_from
from pushgate.bench.options import BenchError, BenchOptions
from pushgate.bench.procstat import raise_fd_limit
from pushgate.bench.progress import Progress
from pushgate.bench.result import RunResult
from pushgate.bench.runner import run_once
from pushgate.bench.table import table
from pushgate.bench.titles import run_title


def run_bench(args: argparse.Namespace) -> int:
    """Run ``pushgate bench`` as parsed from the command line; return the exit status."""
    try:
        opts = options_from(args)
        opts.check(raise_fd_limit())
    except BenchError as exc:
        print(f"pushgate bench: {exc}", file=sys.stderr)
        return 2
    if args.fresh:
        print(
            "pushgate bench: --fresh is deprecated: use `pushgate bench reconnect`", file=sys.stderr
        )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_main(opts))
    except KeyboardInterrupt:  # a second Ctrl-C during the cleanup
        print("\npushgate bench: interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"pushgate bench: {exc}", file=sys.stderr)
        return 1
    finally:
        kill_leftovers()


async def _main(opts: BenchOptions) -> int:
    # SIGTERM is handled like Ctrl-C: cancel the run, whose finally blocks stop
    # every child process.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await _runs(opts)
    except asyncio.CancelledError:
        print("\npushgate bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _runs(opts: BenchOptions) -> int:
    progress = Progress(enabled=not opts.quiet)
    results: list[RunResult] = []
    for k in range(opts.repeat):
        progress.prefix = f"[run {k + 1}/{opts.repeat}] " if opts.repeat > 1 else ""
        result = await run_once(opts, progress)
        results.append(result)
        if opts.json:
            print(result.to_json(), flush=True)
    text = table(results, run_title(opts))
    print(text, file=sys.stderr if opts.json else sys.stdout, flush=True)
    if any(r.scenario == "abuse" and r.lost for r in results):
        print("pushgate bench: honest clients lost pushes under attack", file=sys.stderr)
        return 3
    unexplained = [
        r
        for r in results
        if r.lost > r.lost_on_closed + (r.lost_not_recovered or 0) or r.duplicates or r.out_of_order
    ]
    if unexplained:
        print(
            "pushgate bench: messages were lost, duplicated or reordered on clients the "
            "server did not close",
            file=sys.stderr,
        )
        return 3
    if any(isinstance(r, ChatResult) and (r.joins_wrong or r.roster_wrong) for r in results):
        print("pushgate bench: members heard the wrong presence joins", file=sys.stderr)
        return 3
    if any(r.resume_failed or r.not_caught_up or r.reconnect_failed for r in results):
        print(
            "pushgate bench: sessions were not resumed, clients did not catch up, "
            "or reconnects failed",
            file=sys.stderr,
        )
        return 3
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
