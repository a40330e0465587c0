"""Terminal commands: ``pushgate listen`` (run by :mod:`pushgate.terminal_listen`),
``push all|room|user|conn|batch``, ``join`` and ``leave`` (:mod:`pushgate.terminal_push`),
their parsers here, and the operator's ``stats``, ``rooms``, ``connection``, ``user``
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
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pushgate.client import DEFAULT_TAG
from pushgate.terminal_listen import TOKEN_ENV, format_push, listen
from pushgate.terminal_presence import (
    API_ENV,
    API_KEY_ENV,
    DEFAULT_API_URL,
    PRESENCE_COMMANDS,
    add_presence_parsers,
    api_options_parser,
    run_presence,
    say,
)
from pushgate.terminal_push import call_api
from pushgate.terminal_token import add_token_parser, run_token

__all__ = [
    "API_EPILOG",
    "DEFAULT_WS_URL",
    "LISTEN_EPILOG",
    "TERMINAL_COMMANDS",
    "TOKEN_ENV",
    "add_terminal_parsers",
    "call_api",
    "format_push",
    "listen",
    "main",
    "run_terminal",
]

TERMINAL_COMMANDS = ("listen", "push", "join", "leave", "token", *PRESENCE_COMMANDS)
DEFAULT_WS_URL = "ws://127.0.0.1:8888/connect"

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


def main(argv: Sequence[str] | None = None) -> int:
    """The terminal commands alone: ``python -m pushgate.terminal listen ...``."""
    parser = argparse.ArgumentParser(prog="pushgate")
    add_terminal_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run_terminal(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
