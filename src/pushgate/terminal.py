"""Terminal commands: ``pushgate listen``, ``push all|room|user|conn|batch``, ``join``
and ``leave`` (here), and the operator's ``stats``, ``rooms``, ``connection``, ``user``
and ``disconnect`` (:mod:`pushgate.terminal_presence`), and ``token``
(:mod:`pushgate.terminal_token`).

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
from pathlib import Path
from typing import Any, TextIO

from pushgate.client import (
    DEFAULT_TAG,
    ConnectError,
    Connection,
    Push,
    PushAPI,
    PushAPIError,
    State,
    connect,
)
from pushgate.terminal_presence import (
    API_ENV,
    API_KEY_ENV,
    DEFAULT_API_URL,
    PRESENCE_COMMANDS,
    add_presence_parsers,
    api_options_parser,
    counted,
    run_presence,
    say,
)
from pushgate.terminal_token import add_token_parser, run_token

TERMINAL_COMMANDS = ("listen", "push", "join", "leave", "token", *PRESENCE_COMMANDS)
DEFAULT_WS_URL = "ws://127.0.0.1:8888/connect"
TOKEN_ENV = "PUSHGATE_TOKEN"

LISTEN_EPILOG = f"""\
Output: one line per push, with the local time, the type, the room (or "all")
and the data as JSON:

  14:03:07.215  type 3  room news  {{"headline":"pushgate works"}}

With --json, one JSON object per line instead, the message as received plus the
time:
  {{"time":"2024-05-01T12:03:07.215Z","type":3,"data":"hi","room":"news","seq":8,"epoch":"9f2c1a7e"}}

A dropped connection is reopened: it resumes its session (the same wsId, in its
rooms, the pushes it missed delivered) while the server keeps it, else it starts a
new one (a new wsId; the --join rooms joined again). Ctrl-C stops, with status 0.
--api and --api-key default to ${API_ENV} and ${API_KEY_ENV}.

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
  pushgate push conn 3cc97117-aa4d-45bb-86db-a1d77e51283b "just you"
  pushgate push batch pushes.json     # a JSON array: [{{"target":"room","id":"news",...}}]
  pushgate join news 3cc97117-aa4d-45bb-86db-a1d77e51283b
  pushgate join vip --user alice      # every connection alice has now
"""


def add_terminal_parsers(
    subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``listen``, ``push``, ``join`` and ``leave`` to ``pushgate``'s subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    api_options = api_options_parser()

    listen = subparsers.add_parser(
        "listen",
        parents=[api_options],
        help="connect to a gateway and print the pushes that arrive",
        description="Connect to a gateway and print each push as it arrives.",
        epilog=LISTEN_EPILOG,
        formatter_class=raw,
    )
    listen.add_argument("url", nargs="?", default=DEFAULT_WS_URL, help=f"default {DEFAULT_WS_URL}")
    listen.add_argument(
        "--json",
        action="store_true",
        help="print JSON lines: time, type, data, and room, user, from (a member's wsId and "
        "user), seq and epoch where the push has them",
    )
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
        help="push to every connection, a room, a user, one connection, or a batch",
        description="Push a message through the logic API.",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    targets = push.add_subparsers(dest="target", metavar="all|room|user|conn|batch", required=True)
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
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("ws_id", metavar="WSID", help="the connection's wsId")
    targets.add_parser(
        "conn",
        parents=[conn, push_options],
        help="push to one connection (at most once: not kept in history)",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    batch = targets.add_parser(
        "batch",
        parents=[api_options],
        help="up to 1,000 pushes from a JSON file, each answered",
        description="Send a JSON array of up to 1,000 pushes in one request (POST "
        "/push/batch): each item holds the fields of its push plus target: all, room "
        '(with "id"), user ("uid") or conn ("wsId"). One line per push; exit 1 if '
        "any failed.",
        epilog=API_EPILOG,
        formatter_class=raw,
    )
    batch.add_argument("file", metavar="FILE", help="the JSON array; - reads standard input")
    push.set_defaults(terminal_command="push")

    for name, summary in (("join", "put a connection in a room"), ("leave", "take it out")):
        sub = subparsers.add_parser(
            name,
            parents=[api_options],
            help=summary + " (or every connection of a user)",
            description=summary.capitalize()
            + " (by its wsId, or every current connection of --user) through the logic API.",
            epilog=API_EPILOG,
            formatter_class=raw,
        )
        sub.add_argument("room", metavar="ROOM", help="the room's id")
        sub.add_argument("ws_id", metavar="WSID", nargs="?", help="the connection's wsId")
        sub.add_argument("--user", metavar="UID", help="every current connection of this user")
        sub.set_defaults(terminal_command=name)

    add_presence_parsers(subparsers, api_options, API_EPILOG)
    add_token_parser(subparsers)


def run_terminal(args: argparse.Namespace) -> int:
    """Run the terminal command ``args`` holds; return the exit status."""
    command: str = args.terminal_command
    if command == "listen":
        return asyncio.run(listen(args, sys.stdout, sys.stderr))
    if command == "token":
        return run_token(args, sys.stdout, sys.stderr)
    if command in PRESENCE_COMMANDS:
        return asyncio.run(run_presence(args, sys.stdout, sys.stderr))
    if command == "push" and args.target == "batch":
        try:
            args.batch = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            say(sys.stderr, f"cannot read {args.file}: {exc}")
            return 2
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
                say(err, f"joined {', '.join(args.join)}")
            printing = asyncio.create_task(_print_pushes(conn, out, as_json=args.json))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({printing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if printing.done():
                if printing.result() or stop.is_set():
                    return 0
                say(err, f"the connection closed (code {conn.close_code})")
                return 1
            printing.cancel()
            return 0
    except ValueError as exc:
        say(err, str(exc))
        return 2
    except ConnectError as exc:
        say(err, str(exc) + _token_hint(exc, given=args.token is not None))
        return 1
    except PushAPIError as exc:
        say(err, str(exc))
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(sig)


def _token_hint(exc: ConnectError, *, given: bool) -> str:
    """What ``listen`` can do about a refused token, when that is the refusal: the
    gateway's reason says what is wrong, not which option gives a token here."""
    refusal = exc.refusal
    if refusal is None or refusal.hint or "token" not in refusal.reason:
        return ""
    if refusal.status == 401 and not given:
        return f" (give one with --token or ${TOKEN_ENV}; `pushgate token` makes one)"
    if refusal.status == 403:
        return " (`pushgate token` makes a new one)"
    return ""


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
    """One output line for ``push``, received at ``when`` (an aware datetime): where
    it was pushed (a room, a user, or all), who published it when a member did, and
    with ``as_json`` its stream position as well."""
    if as_json:
        line: dict[str, Any] = {
            "time": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": push.type,
            "data": push.data,
        }
        if push.room is not None:
            line["room"] = push.room
        if push.user is not None:
            line["user"] = push.user
        if push.sender is not None:
            line["from"] = {"wsId": push.sender.ws_id, "user": push.sender.user}
        if push.seq:
            line["seq"], line["epoch"] = push.seq, push.epoch
        return _compact(line)
    clock = when.astimezone().strftime("%H:%M:%S.%f")[:-3]
    if push.room is not None:
        where = f"room {push.room}"
    elif push.user is not None:
        where = f"user {push.user}"
    else:
        where = "all"
    if push.sender is not None:
        where += f"  from {push.sender.user or push.sender.ws_id}"
    return f"{clock}  type {push.type}  {where}  {_compact(push.data)}"


def _status_printer(err: TextIO) -> Callable[[Connection, State], None]:
    def on_state_change(conn: Connection, state: State) -> None:
        if state is State.OPEN:
            again = "re" if conn.connects > 1 else ""
            rooms = f"; rejoined {', '.join(conn.rooms)}" if conn.rooms and again else ""
            say(err, f"{again}connected to {conn.url} as {conn.ws_id}{rooms}")
        elif state is State.RECONNECTING:
            say(err, f"connection lost (code {conn.close_code}); reconnecting")

    return on_state_change


# push, join, leave


async def call_api(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``push``, ``join`` or ``leave``; print what happened (a line per push of
    a batch)."""
    command: str = args.terminal_command
    status = 0
    try:
        async with PushAPI(args.api, api_key=args.api_key) as api:
            if command == "push" and args.target == "batch":
                lines, status = await _push_batch(api, args.batch)
            elif command == "push":
                lines = [await _push(api, args)]
            else:
                lines = [await _membership(api, command, args)]
    except json.JSONDecodeError as exc:
        say(err, f"not valid JSON: {exc}")
        return 2
    except ValueError as exc:
        say(err, str(exc))
        return 2
    except PushAPIError as exc:
        field = f" (field {exc.field})" if exc.field else ""
        say(err, f"{exc}{field}")
        return 1
    out.write("".join(line + "\n" for line in lines))
    return status


async def _push(api: PushAPI, args: argparse.Namespace) -> str:
    val: object = args.val
    if args.json_value:
        try:
            val = json.loads(args.val)
        except json.JSONDecodeError as exc:
            raise ValueError(f"VAL is not valid JSON (--json-value): {exc}") from None
    if args.target == "all":
        result = await api.push_all(val, args.tag)
        return f"pushed to {_count(result.delivered)}"
    if args.target == "room":
        result = await api.push_room(args.room, val, args.tag)
        return f"pushed to {_count(result.delivered)} in room {result.room}"
    if args.target == "user":
        result = await api.push_user(args.user, val, args.tag)
        return f"pushed to {_count(result.delivered)} of user {result.user}"
    await api.push_conn(args.ws_id, val, args.tag)
    return f"pushed to {args.ws_id}"


async def _push_batch(api: PushAPI, text: str) -> tuple[list[str], int]:
    """The batch's pushes, one line each; status 1 if any failed."""
    pushes = json.loads(text)
    if not isinstance(pushes, list) or not all(isinstance(p, dict) for p in pushes):
        raise ValueError("the batch must be a JSON array of objects")
    results = await api.push_batch(pushes)
    lines = []
    for n, (push, result) in enumerate(zip(pushes, results, strict=True), 1):
        target = push.get("target")
        if result.ok:
            lines.append(f"{n}: pushed to {_count(result.delivered)} ({target})")
        else:
            field = f" (field {result.field})" if result.field else ""
            lines.append(f"{n}: HTTP {result.status}: {result.error}{field}")
    failed = sum(1 for r in results if not r.ok)
    lines.append(f"{len(results) - failed} of {counted(len(results), 'push', 'pushes')} done")
    return lines, 1 if failed else 0


async def _membership(api: PushAPI, command: str, args: argparse.Namespace) -> str:
    if (args.ws_id is None) == (args.user is None):
        raise ValueError(f"{command}: give a WSID or --user UID (one of them)")
    if args.user is not None:
        if command == "join":
            moved = await api.join_user(args.room, args.user)
            verb = "joined"
        else:
            moved = await api.leave_user(args.room, args.user)
            verb = "left"
        changed = counted(len(moved.changed), "connection")
        line = f"{changed} of user {args.user} {verb} room {args.room}"
        if moved.unchanged:
            line += f"; {len(moved.unchanged)} already {'in' if command == 'join' else 'out'}"
        return line
    if command == "join":
        joined = await api.join(args.room, args.ws_id)
        line = f"{joined.ws_id} {'was already' if joined.already_member else 'is now'}"
        return line + f" in room {joined.room}"
    left = await api.leave(args.room, args.ws_id)
    return f"{left.ws_id} {'left' if left.was_member else 'was not in'} room {left.room}"


def _count(n: int | None) -> str:
    return "the cluster" if n is None else counted(n, "connection")


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def main(argv: Sequence[str] | None = None) -> int:
    """The terminal commands alone: ``python -m pushgate.terminal listen ...``."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_terminal_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run_terminal(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
