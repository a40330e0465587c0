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

from pushgate import __version__, speedups
from pushgate.bench.cli import run_bench
from pushgate.bench.parser import add_bench_parser
from pushgate.cliparser import Parser, argument_type, unknown_arguments
from pushgate.config import OPTIONS, Group, default_of, from_sources
from pushgate.configfile import read_config_file
from pushgate.errors import ConfigError, StartupError
from pushgate.logformat import configure_logging
from pushgate.terminal import add_terminal_parsers, run_terminal

log = logging.getLogger("pushgate")

# Settings that are secrets: on the command line, any user of the machine reads them
# in the process list (ps, /proc/PID/cmdline); the environment is the owner's only.
SECRET_OPTIONS = tuple(option.name for option in OPTIONS if option.secret)

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
1012 (service restart: clients resume at once, on another gateway if there is
one) spread over --drain-seconds, waits up to --shutdown-timeout for them to go,
then exits 0.
"""


CLUSTER_EPILOG = """A cluster is several gateway and logic processes sharing one Redis:

  pushgate gateway --broker redis://127.0.0.1:6379/0 --ws-port 8888
  pushgate gateway --broker redis://127.0.0.1:6379/0 --ws-port 8889
  pushgate logic   --broker redis://127.0.0.1:6379/0 --api-port 9999

Both need --broker (on memory:// a node is alone: --broker memory:// says that
is meant). Each role takes only its own options: a gateway has no --api-port, a
logic node no --ws-port. Gateways answer GET /healthz and /readyz on their
WebSocket port, logic servers on their API port. Every option can also be set by
the environment variable shown.
"""

# Why `gateway` and `logic` need a --broker: on memory:// (the default, right for
# `serve`, which is both) each is alone, and a push answers "delivered: 0".
CUT_OFF = {
    role: f"no --broker: on memory:// this {role} node shares nothing with any {other} "
    "node, so pushes reach nobody; give --broker redis://HOST:PORT/DB (or --broker "
    "memory:// to run it alone anyway)"
    for role, other in (("gateway", "logic"), ("logic", "gateway"))
}

ROLE_HELP = {
    "serve": (
        "run the gateway and the logic API in one process",
        "Run the WebSocket gateway and the logic HTTP API in one process.",
        SERVE_EPILOG,
    ),
    "gateway": (
        "run only the WebSocket gateway (a cluster node)",
        "Run only the WebSocket gateway: it holds client connections and their rooms, "
        "and takes pushes, joins and leaves from the cluster's broker.",
        CLUSTER_EPILOG,
    ),
    "logic": (
        "run only the logic HTTP API (a cluster node)",
        "Run only the logic HTTP API: it publishes pushes to the cluster's broker and "
        "routes joins and leaves to the gateway that holds the wsId.",
        CLUSTER_EPILOG,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog="pushgate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pushgate {__version__} (fan-out: {speedups.describe()})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for role, (summary, description, epilog) in ROLE_HELP.items():
        sub = commands.add_parser(
            role,
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            # No abbreviations: --work 2 would pass --workers' filter in supervisor.py
            # and reach the children, who would each supervise in turn.
            allow_abbrev=False,
        )
        sub.add_argument(
            "--config",
            metavar="FILE",
            help="read settings from a TOML file (every option by its name, and "
            "[namespaces.NAME] tables); the command line and the environment override "
            "it; check one with `pushgate config check FILE` (env PUSHGATE_CONFIG)",
        )
        # Created in the order of Group, which is the order --help shows them in.
        groups = {group: sub.add_argument_group(group.value) for group in Group}
        # Only the options this role reads: --help lists them, and another role's is
        # refused (cliparser.unknown_arguments) rather than silently ignored.
        for option in (option for option in OPTIONS if role in option.roles):
            group = groups[option.group]
            default = default_of(option.name)
            shown = f"default: {default}; " if default not in ("", False) else ""
            help_text = f"{option.help} ({shown}env {option.env})"
            if option.flag_only:
                group.add_argument(
                    option.flag, dest=option.name, action="store_const", const=True, help=help_text
                )
            else:
                group.add_argument(
                    option.flag,
                    dest=option.name,
                    type=argument_type(option),
                    metavar=option.metavar,
                    default=None,
                    help=help_text,
                )
    add_config_parser(commands)
    add_terminal_parsers(commands)
    add_bench_parser(commands)
    return parser


def add_config_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    config = commands.add_parser(
        "config",
        help="check a config file",
        description="Work with pushgate's TOML config files (see --config).",
    )
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="say whether a config file is good, without starting anything",
        description="Read FILE as serve --config FILE would, check every setting and "
        "the namespaces, and say what is wrong (file, line, key) or that it is good. "
        "Exit status: 0 good, 2 not.",
    )
    check.add_argument("file", metavar="FILE")


def check_config_file(path: str) -> int:
    """``pushgate config check FILE``: 0 and one line when it is good, else 2. The
    environment counts, as it does for ``serve`` (secrets are given there)."""
    try:
        values = read_config_file(path)
        from_sources({}, os.environ, values, source=path)
    except ConfigError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 2
    spaces = str(values.pop("namespaces", "")).count("=")
    print(f"{path}: good ({len(values)} settings, {spaces} namespaces)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        unknown_arguments(parser, args, extras)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "terminal_command", None):
        return run_terminal(args)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "config":
        return check_config_file(args.file)
    role: str = args.command
    try:
        path = args.config or os.environ.get("PUSHGATE_CONFIG")
        file = read_config_file(path) if path else None
        config = from_sources(vars(args), os.environ, file, source=path)
    except ConfigError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 2
    broker_given = (
        args.broker is not None or "PUSHGATE_BROKER" in os.environ or "broker" in (file or {})
    )
    if role != "serve" and not config.clustered and not broker_given:
        print(f"pushgate {role}: {CUT_OFF[role]}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    warn_of_secrets_in_argv(args)
    from pushgate.app import serve

    if config.worker_count > 1:
        if role == "logic":
            print(
                "pushgate: --workers is for serve and gateway; run more logic nodes instead",
                file=sys.stderr,
            )
            return 2
        from pushgate.supervisor import supervise

        given = list(sys.argv[1:] if argv is None else argv)
        options = given[given.index(role) + 1 :]
        return run(lambda: supervise(config, role, options))
    return run(lambda: serve(config, role))


def warn_of_secrets_in_argv(args: argparse.Namespace) -> None:
    """One warning when a secret was given as a command-line argument, where every
    user of the machine can read it in the process list, naming the environment
    variables that keep it private. A secret from the environment says nothing."""
    given = [
        option
        for option in OPTIONS
        if option.name in SECRET_OPTIONS and getattr(args, option.name, None) is not None
    ]
    if not given:
        return
    flags = " and ".join(option.flag for option in given)
    variables = " and ".join(option.env for option in given)
    log.warning(
        "%s on the command line can be read by any user of this machine in the process "
        "list (ps); set %s in the environment instead",
        flags,
        variables,
    )


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a coroutine on uvloop when it is installed; a startup error is one line."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except StartupError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
