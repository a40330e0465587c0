"""Terminal commands: ``pushgate listen``, ``push all|room|user``, ``join`` and ``leave``.

``add_terminal_parsers(subparsers)`` adds them to the ``pushgate`` parser, and
``run_terminal(args)`` runs the one parsed (when ``args.terminal_command`` is set) and
returns the exit status: 0 done, 1 an error answer or no connection, 2 a usage error.
Errors are one line on stderr; ``listen`` writes its status lines there too, so its
standard output holds pushes only. ``python -m pushgate.terminal`` runs them alone.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from pushgate.client import (
    ConnectError,
    Connection,
    Push,
    PushAPI,
    PushAPIError,
    State,
    connect,
)

TERMINAL_COMMANDS = ("listen", "push", "join", "leave")
DEFAULT_WS_URL = "ws://127.0.0.1:8888/connect"
DEFAULT_API_URL = "http://127.0.0.1:9999"
DEFAULT_TAG = 2
API_ENV = "PUSHGATE_API"
API_KEY_ENV = "PUSHGATE_API_KEY"
TOKEN_ENV = "PUSHGATE_TOKEN"

LISTEN_EPILOG = f"""\
Output: one line per push, with the local time, the type, the room (or "all")
and the data as JSON:

  14:03:07.215  type 3  room news  {{"headline":"pushgate works"}}

With --json, one JSON object per line instead, the message as received plus the
time:  {{"time":"2024-05-01T12:03:07.215Z","type":3,"data":"hi","room":"news"}}

A dropped connection is reopened with a new wsId (and the --join rooms joined
again); Ctrl-C stops, with status 0. --api and --api-key default to ${API_ENV}
and ${API_KEY_ENV}.

examples:
  pushgate listen
  pushgate listen ws://127.0.0.1:8888/connect --join news --json | jq .data
"""

API_EPILOG = f"""\
The logic API is --api (default ${API_ENV}, else {DEFAULT_API_URL}); an API key
is --api-key, or better ${API_KEY_ENV}, which keeps it out of the process list.
Exit status: 0 done, 1 the server refused (the line says why) or cannot be
reached, 2 a usage error.

examples:
  pushgate push all "test push" --tag 3
  pushgate push room news '{{"headline":"hi"}}' --json-value
  pushgate join news 3cc97117-aa4d-45bb-86db-a1d77e51283b
"""


def add_terminal_parsers(
    subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``listen``, ``push``, ``join`` and ``leave`` to ``pushgate``'s subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    api_options = argparse.ArgumentParser(add_help=False)
    api_options.add_argument(
        "--api",
        metavar="URL",
        default=os.environ.get(API_ENV, DEFAULT_API_URL),
        help=f"the logic API (default: {DEFAULT_API_URL}; env {API_ENV})",
    )
    api_options.add_argument(
        "--api-key",
        metavar="KEY",
        default=_env_api_key(),
        help=f"sent as 'Authorization: Bearer KEY' (env {API_KEY_ENV}; of a "
        "comma-separated list there, the first)",
    )

    listen = subparsers.add_parser(
        "listen",
        parents=[api_options],
        help="connect to a gateway and print the pushes that arrive",
        description="Connect to a gateway and print each push as it arrives.",
        epilog=LISTEN_EPILOG,
        formatter_class=raw,
    )
    listen.add_argument("url", nargs="?", default=DEFAULT_WS_URL, help=f"default {DEFAULT_WS_URL}")
    listen.add_argument("--json", action="store_true", help="print JSON lines")
    listen.add_argument(
        "--join",
        metavar="ROOM",
        action="append",
        default=[],
        help="join this room through --api (repeatable); rejoined after a reconnect",
    )
    listen.add_argument(
        "--no-reconnect", action="store_true", help="exit (status 1) when the connection drops"
    )
    listen.add_argument(
        "--token",
        metavar="JWT",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"a connection token, for a gateway that checks them (env {TOKEN_ENV})",
    )
    listen.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    listen.set_defaults(terminal_command="listen")

    push = subparsers.add_parser(
        "push",
        help="push a message to every connection, a room, or a user",
        description="Push a message through the logic API.",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    targets = push.add_subparsers(dest="target", metavar="all|room|user", required=True)
    push_options = argparse.ArgumentParser(add_help=False, parents=[api_options])
    push_options.add_argument("val", metavar="VAL", help="the message's data (a string)")
    push_options.add_argument(
        "--tag",
        type=int,
        default=DEFAULT_TAG,
        help=f"the message's type, 2 or more (default: {DEFAULT_TAG})",
    )
    push_options.add_argument(
        "--json-value",
        action="store_true",
        help="VAL is JSON, delivered as that value (an object, a number...)",
    )
    targets.add_parser(
        "all",
        parents=[push_options],
        help="push to every connection",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    room = argparse.ArgumentParser(add_help=False)
    room.add_argument("room", metavar="ROOM", help="the room's id")
    targets.add_parser(
        "room",
        parents=[room, push_options],
        help="push to the connections in a room",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    user = argparse.ArgumentParser(add_help=False)
    user.add_argument("user", metavar="UID", help="the user (a connection token's sub)")
    targets.add_parser(
        "user",
        parents=[user, push_options],
        help="push to every connection of a user",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    push.set_defaults(terminal_command="push")

    for name, summary in (("join", "put a connection in a room"), ("leave", "take it out")):
        sub = subparsers.add_parser(
            name,
            parents=[api_options],
            help=summary,
            description=summary.capitalize() + " (by its wsId) through the logic API.",
            epilog=API_EPILOG,
            formatter_class=raw,
        )
        sub.add_argument("room", metavar="ROOM", help="the room's id")
        sub.add_argument("ws_id", metavar="WSID", help="the connection's wsId")
        sub.set_defaults(terminal_command=name)


def _env_api_key() -> str | None:
    """The client's key from the environment: the server reads the same variable,
    where it may list several keys, comma-separated; any one of them will do."""
    keys = os.environ.get(API_KEY_ENV, "")
    return keys.split(",")[0].strip() or None


def run_terminal(args: argparse.Namespace) -> int:
    """Run the terminal command ``args`` holds; return the exit status."""
    command: str = args.terminal_command
    if command == "listen":
        return asyncio.run(listen(args, sys.stdout, sys.stderr))
    return asyncio.run(call_api(args, sys.stdout, sys.stderr))


# listen


async def listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print pushes from ``args.url`` until SIGINT or SIGTERM (then 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)  # only the main thread may
    try:
        async with contextlib.AsyncExitStack() as stack:
            api = None
            if args.join:
                api = await stack.enter_async_context(PushAPI(args.api, api_key=args.api_key))
            conn = connect(
                args.url,
                reconnect=not args.no_reconnect,
                api=api,
                token=args.token,
                on_state_change=None if args.quiet else _status_printer(err),
            )
            await stack.enter_async_context(conn)
            for room in args.join:
                await conn.join(room)
            if not args.quiet and args.join:
                _say(err, f"joined {', '.join(args.join)}")
            printing = asyncio.create_task(_print_pushes(conn, out, as_json=args.json))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({printing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if printing.done():
                if printing.result() or stop.is_set():
                    return 0
                _say(err, f"the connection closed (code {conn.close_code})")
                return 1
            printing.cancel()
            return 0
    except ValueError as exc:
        _say(err, str(exc))
        return 2
    except (ConnectError, PushAPIError) as exc:
        _say(err, str(exc))
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(sig)


async def _print_pushes(conn: Connection, out: TextIO, *, as_json: bool) -> bool:
    """Print until the connection ends (False) or the reader goes away (True)."""
    try:
        async for push in conn:
            out.write(format_push(push, datetime.now(UTC), as_json=as_json) + "\n")
            out.flush()
    except BrokenPipeError:  # `pushgate listen | head`: the reader is gone
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return True
    return False


def format_push(push: Push, when: datetime, *, as_json: bool) -> str:
    """One output line for ``push``, received at ``when`` (an aware datetime)."""
    if as_json:
        line: dict[str, Any] = {
            "time": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": push.type,
            "data": push.data,
        }
        if push.room is not None:
            line["room"] = push.room
        return _compact(line)
    clock = when.astimezone().strftime("%H:%M:%S.%f")[:-3]
    where = f"room {push.room}" if push.room is not None else "all"
    return f"{clock}  type {push.type}  {where}  {_compact(push.data)}"


def _status_printer(err: TextIO) -> Callable[[Connection, State], None]:
    def on_state_change(conn: Connection, state: State) -> None:
        if state is State.OPEN:
            again = "re" if conn.connects > 1 else ""
            rooms = f"; rejoined {', '.join(conn.rooms)}" if conn.rooms and again else ""
            _say(err, f"{again}connected to {conn.url} as {conn.ws_id}{rooms}")
        elif state is State.RECONNECTING:
            _say(err, f"connection lost (code {conn.close_code}); reconnecting")

    return on_state_change


# push, join, leave


async def call_api(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``push``, ``join`` or ``leave``; print one line saying what happened."""
    command: str = args.terminal_command
    try:
        async with PushAPI(args.api, api_key=args.api_key) as api:
            if command == "push":
                val: object = args.val
                if args.json_value:
                    val = json.loads(args.val)
                if args.target == "all":
                    result = await api.push_all(val, args.tag)
                    line = f"pushed to {_count(result.delivered)}"
                elif args.target == "room":
                    result = await api.push_room(args.room, val, args.tag)
                    line = f"pushed to {_count(result.delivered)} in room {result.room}"
                else:
                    result = await api.push_user(args.user, val, args.tag)
                    line = f"pushed to {_count(result.delivered)} of user {result.user}"
            elif command == "join":
                joined = await api.join(args.room, args.ws_id)
                line = f"{joined.ws_id} {'was already' if joined.already_member else 'is now'}"
                line += f" in room {joined.room}"
            else:
                left = await api.leave(args.room, args.ws_id)
                line = (
                    f"{left.ws_id} {'left' if left.was_member else 'was not in'} room {left.room}"
                )
    except json.JSONDecodeError as exc:
        _say(err, f"VAL is not valid JSON (--json-value): {exc}")
        return 2
    except ValueError as exc:
        _say(err, str(exc))
        return 2
    except PushAPIError as exc:
        field = f" (field {exc.field})" if exc.field else ""
        _say(err, f"{exc}{field}")
        return 1
    out.write(line + "\n")
    return 0


def _count(n: int | None) -> str:
    if n is None:
        return "the cluster"
    return f"{n} connection{'' if n == 1 else 's'}"


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _say(err: TextIO, message: str) -> None:
    err.write(f"pushgate: {message}\n")
    err.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """The terminal commands alone: ``python -m pushgate.terminal listen ...``."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_terminal_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run_terminal(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
