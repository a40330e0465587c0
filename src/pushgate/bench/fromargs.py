"""``pushgate bench``'s parsed arguments as :class:`BenchOptions`
(:func:`options_from`): the scenario asked for, the flags passed through to its own
server, the abuse and chat scenarios' own options, and their conflicts.
"""

import argparse
import secrets
from typing import Any

from pushgate.bench.clientkinds import ClientKind
from pushgate.bench.options import BenchError, BenchOptions, scenario_named
from pushgate.bench.parser import SERVER_FLAGS
from pushgate.bench.scenarios import CHAT_NAMESPACES, Scenario


def options_from(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from parsed arguments; raises BenchError on conflicts."""
    scenario = scenario_named(_scenario_name(args))
    server_args: list[str] = []
    for flag, _, _, _ in SERVER_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            server_args += [flag, str(value)]
    token_secret = args.token_secret
    if scenario.name in ("reconnect", "chat") and token_secret is None and not args.ws_url:
        token_secret = secrets.token_hex(16)  # for our own server, and our tokens
    if token_secret is not None and not args.ws_url:
        server_args += ["--token-secret", token_secret]
    if scenario.name == "chat" and not args.ws_url:
        server_args += ["--namespaces", CHAT_NAMESPACES]
    if not args.ws_url:  # a made-up app for Pusher clients, a public room for streams
        server_args += ClientKind(args.client).server_args(secrets.token_hex(16))
    server_args += args.server_arg
    return BenchOptions(
        scenario=scenario,
        connections=scenario.default_connections if args.connections is None else args.connections,
        rate=scenario.default_rate if args.rate is None else args.rate,
        pushes=args.pushes,
        duration=args.duration,
        size=scenario.default_size if args.size is None else args.size,
        senders=args.senders,
        repeat=args.repeat,
        json=args.json,
        quiet=args.quiet,
        workers=args.workers,
        sources=args.sources,
        connect_concurrency=max(1, args.connect_concurrency),
        connect_timeout=args.connect_timeout,
        connect_retries=args.connect_retries,
        drain_timeout=args.drain_timeout,
        client_ping=args.client_ping,
        slow=args.slow,
        slow_pause=args.slow_pause,
        churn_rate=args.churn_rate,
        churn_lifetime=args.churn_lifetime,
        churn_workers=args.churn_workers,
        resume_on=args.resume_on,
        outage=args.outage,
        token_secret=token_secret,
        client=args.client,
        ws_urls=tuple(args.ws_url),
        api_url=args.api_url,
        server_pids=tuple(args.server_pid),
        server_args=tuple(server_args),
        **_abuse_options(args, scenario),
        **_chat_options(args, scenario),
    )


def _scenario_name(args: argparse.Namespace) -> str:
    """The scenario asked for, as an argument or with --scenario; ``resume --fresh``,
    the reconnect scenario's old name, is reconnect."""
    if args.scenario and args.scenario_arg and args.scenario != args.scenario_arg:
        raise BenchError(f"two scenarios given: {args.scenario_arg} and --scenario {args.scenario}")
    name: str = args.scenario or args.scenario_arg or "broadcast"
    if not args.fresh:
        return name
    if name not in ("resume", "reconnect"):
        raise BenchError(f"--fresh applies to resume only (it makes it reconnect), not to {name}")
    return "reconnect"


def _abuse_options(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    """--attacks, --non-readers and --fat-handshakes, for the abuse scenario only."""
    given = _given_for(args, scenario, "abuse", ("attacks", "non_readers", "fat_handshakes"))
    if "attacks" in given:
        given["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    return given


def _chat_options(args: argparse.Namespace, scenario: Scenario) -> dict[str, Any]:
    """--room-size, --subscribe-rate, --resume-rate and --api-push, for chat only."""
    names = ("room_size", "subscribe_rate", "resume_rate", "api_push")
    return _given_for(args, scenario, "chat", names)


def _given_for(
    args: argparse.Namespace, scenario: Scenario, only: str, names: tuple[str, ...]
) -> dict[str, Any]:
    """The options of ``names`` given on the command line, by name; a BenchError
    naming them all when one was given to a scenario other than ``only``."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if given and scenario.name != only:
        flags = [f"--{name.replace('_', '-')}" for name in names]
        raise BenchError(f"{', '.join(flags[:-1])} and {flags[-1]} apply to {only} only")
    return given
