"""The ``pushgate`` command.

``main(argv=None)`` parses the arguments and returns the exit status, so tests can
call it directly.
"""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pushgate import __version__
from pushgate.config import OPTIONS, default_of, from_sources
from pushgate.errors import ConfigError, StartupError

DESCRIPTION = """\
pushgate: a real-time WebSocket push server.

Clients hold WebSocket connections to the gateway (ws://HOST:8888/connect) and
learn their wsId from the first frame; the logic HTTP API (http://127.0.0.1:9999)
pushes messages to every connection or to a room, and puts connections in rooms.
"""

SERVE_EPILOG = """\
every option can also be set by the environment variable shown beside it;
an option given on the command line wins.

examples:
  pushgate serve
  pushgate serve --ws-port 8080 --heartbeat 25 --idle-timeout 60
  curl http://127.0.0.1:9999/push/all -X POST -d "val=test push&tag=3"

On SIGTERM or SIGINT the server stops accepting, closes every connection with
1001 and waits up to --shutdown-timeout for them to go, then exits 0.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushgate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pushgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gateway and the logic API in one process",
        description="Run the WebSocket gateway and the logic HTTP API in one process.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        default = default_of(option.name)
        serve.add_argument(
            option.flag,
            dest=option.name,
            type=option.parse,
            metavar=option.metavar,
            default=None,
            help=f"{option.help} (default: {default}; env {option.env})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = from_sources(vars(args), os.environ)
    except ConfigError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    from pushgate.app import serve

    return run(lambda: serve(config))


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a coroutine on uvloop when it is installed; a startup error is one line."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except StartupError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def setup_logging(level: str) -> None:
    """Readable lines on stderr: time, level, component, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    # websockets' own per-connection lines only at debug; pushgate logs those itself.
    if level != "debug":
        logging.getLogger("pushgate.websocket").setLevel(logging.WARNING)
