"""The operator's terminal commands: ``pushgate stats``, ``rooms [ROOM]``,
``connection WSID``, ``user UID`` and ``disconnect``, over the logic API.

Each prints a short readable answer, or with ``--json`` the API's own JSON answer;
errors are one line on stderr (status 1), bad usage status 2, as the other terminal
commands (:mod:`pushgate.terminal`).
"""

import argparse
import json
import os
from typing import Any, TextIO

from pushgate.client import PushAPI, PushAPIError
from pushgate.wire import CLOSE_SESSION_ENDED

PRESENCE_COMMANDS = ("stats", "rooms", "connection", "user", "disconnect")
DEFAULT_API_URL = "http://127.0.0.1:9999"
API_ENV = "PUSHGATE_API"
API_KEY_ENV = "PUSHGATE_API_KEY"
MEMBERS_PER_REQUEST = 1000


def counted(n: int, noun: str, plural: str = "") -> str:
    """``1 connection``, ``2 connections`` (``plural`` when not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def say(err: TextIO, message: str) -> None:
    err.write(f"pushgate: {message}\n")
    err.flush()


def say_refused(err: TextIO, exc: PushAPIError) -> None:
    """What the logic API refused, and the field it named."""
    field = f" (field {exc.field})" if exc.field else ""
    say(err, f"{exc}{field}")


def _env_api_key() -> str | None:
    """The client's key from the environment: the server reads the same variable,
    where it may list several keys, comma-separated; any one of them will do."""
    keys = os.environ.get(API_KEY_ENV, "")
    return keys.split(",")[0].strip() or None


def api_options_parser() -> argparse.ArgumentParser:
    """``--api`` and ``--api-key``, shared by every command that calls the logic API."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--api",
        metavar="URL",
        default=os.environ.get(API_ENV, DEFAULT_API_URL),
        help=f"the logic API (default: {DEFAULT_API_URL}; env {API_ENV})",
    )
    options.add_argument(
        "--api-key",
        metavar="KEY",
        default=_env_api_key(),
        help=f"sent as 'Authorization: Bearer KEY' (env {API_KEY_ENV}; of a "
        "comma-separated list there, the first)",
    )
    return options


def add_presence_parsers(
    subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
    api_options: argparse.ArgumentParser,
    epilog: str,
) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the API's JSON answer")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(
            name,
            parents=[api_options, as_json],
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=raw,
        )
        sub.set_defaults(terminal_command=name)
        return sub

    command(
        "stats",
        "connections, rooms and users, over every gateway",
        "Count the connections, rooms and users of the whole cluster (GET /stats), "
        "and each gateway's share.",
    )
    rooms = command(
        "rooms",
        "the cluster's rooms, or one room's members",
        "Without ROOM: the rooms and their member counts, largest first (GET /rooms). "
        "With ROOM: its members, every page of them (GET /rooms/ROOM), or the first "
        "--limit.",
    )
    rooms.add_argument("room", metavar="ROOM", nargs="?", help="list this room's members")
    rooms.add_argument(
        "--limit", type=int, metavar="N", help="at most N rooms (default 100) or members (all)"
    )
    where = command(
        "connection",
        "where a wsId is: its gateway, user and rooms",
        "Show a connection: connected (gateway, user, rooms, since when) or detached "
        "(its session waits for a resume). Status 1 when neither.",
    )
    where.add_argument("ws_id", metavar="WSID")
    user = command(
        "user", "a user's connections", "List every current connection of a user (GET /users/UID)."
    )
    user.add_argument("user", metavar="UID")
    drop = command(
        "disconnect",
        "close a connection, or every connection of a user",
        "Close a connection (WSID) or every connection of --user with a close code "
        "from 4000 to 4999 (4400-4499: the SDKs do not reconnect). Without "
        "--end-session the client may resume its session; with it, the session ends "
        "and cannot, and the code is 4410 unless --code says otherwise: the SDKs stay "
        "away instead of starting a new session.",
    )
    drop.add_argument("ws_id", metavar="WSID", nargs="?")
    drop.add_argument("--user", metavar="UID", help="every connection of this user")
    drop.add_argument("--code", type=int, help="4000-4999 (default 4000; 4410 with --end-session)")
    drop.add_argument("--reason", help="the close reason, at most 123 bytes")
    drop.add_argument(
        "--end-session", action="store_true", help="end the session too: it cannot resume"
    )


async def run_presence(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        async with PushAPI(args.api, api_key=args.api_key) as api:
            answer, lines = await _run(api, args)
    except ValueError as exc:
        say(err, str(exc))
        return 2
    except PushAPIError as exc:
        say_refused(err, exc)
        return 1
    if args.json:
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
    else:
        out.write("".join(line + "\n" for line in lines))
    return 0


async def _run(api: PushAPI, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The answer (for --json) and its readable lines."""
    command: str = args.terminal_command
    if command == "stats":
        stats = await api.stats()
        lines = [_counts(stats.connections, stats.rooms, stats.users)]
        for node in stats.raw.get("nodes", []):
            counts = _counts(node["connections"], node["rooms"], node["users"])
            lines.append(f"  gateway {node['node']}: {counts}")
        for node in stats.raw.get("missing", []):
            lines.append(f"  gateway {node}: no answer (not counted)")
        return dict(stats.raw), lines
    if command == "rooms" and args.room is None:
        rooms = await api.rooms(args.limit or 100)
        return rooms, [f"{members:>8}  {room}" for room, members in rooms.items()]
    if command == "rooms":
        return await _members(api, args.room, args.limit)
    if command == "connection":
        info = await api.connection(args.ws_id)
        where = f"on gateway {info.node}" if info.node else "waiting for a resume"
        since = f" since {info.connected_since}" if info.connected_since else ""
        in_rooms = ", ".join(info.rooms) or "no room"
        user = info.user or "anonymous"
        return vars_of(info), [f"{info.ws_id}: {info.state} {where}{since}; {user}; {in_rooms}"]
    if command == "user":
        conns = await api.user_connections(args.user)
        lines = [
            f"{c.ws_id}  gateway {c.node}  since {c.connected_since}  rooms: "
            + (", ".join(c.rooms) or "none")
            for c in conns
        ]
        return [vars_of(c) for c in conns], lines or [f"user {args.user} has no connection"]
    if (args.ws_id is None) == (args.user is None):
        raise ValueError("disconnect: give a WSID or --user UID (one of them)")
    done = await api.disconnect(
        ws_id=args.ws_id,
        user=args.user,
        code=args.code,
        reason=args.reason,
        end_session=args.end_session,
    )
    code = args.code
    if code is None:  # the server's default, as commands.Disconnect has it
        code = CLOSE_SESSION_ENDED if args.end_session else 4000
    closed = len(done.disconnected)
    line = f"closed {counted(closed, 'connection')} with {code}"
    if done.session_ended:
        line += "; its session ended" if closed == 1 else "; their sessions ended"
    return vars_of(done), [line, *done.disconnected]


async def _members(api: PushAPI, room: str, limit: int | None) -> tuple[Any, list[str]]:
    """Every member of ``room`` (or the first ``limit``), page after page."""
    members = []
    cursor: str | None = None
    count = 0
    while True:
        want = MEMBERS_PER_REQUEST if limit is None else min(MEMBERS_PER_REQUEST, limit)
        page = await api.room_members(room, limit=max(1, want), cursor=cursor)
        count = page.count
        members += page.members
        cursor = page.next_cursor
        if limit is not None:
            members = members[:limit]
        if cursor is None or (limit is not None and len(members) >= limit):
            break
    lines = [f"room {room}: {counted(count, 'member')}"]
    lines += [
        f"{m.ws_id}  {m.user or '-'}  gateway {m.node}  since {m.connected_since}" for m in members
    ]
    answer = {"room": room, "count": count, "members": [vars_of(m) for m in members]}
    return answer, lines


def _counts(connections: int, rooms: int, users: int) -> str:
    return ", ".join(
        (counted(connections, "connection"), counted(rooms, "room"), counted(users, "user"))
    )


def vars_of(result: object) -> dict[str, Any]:
    """A result dataclass as a JSON object, with the API's own field names."""
    names = {
        "ws_id": "wsId",
        "connected_since": "connectedSince",
        "session_ended": "sessionEnded",
    }
    return {names.get(k, k): getattr(result, k) for k in result.__slots__}  # type: ignore[attr-defined]
