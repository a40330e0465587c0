"""``pushgate push all|room|user|conn|batch``, ``join`` and ``leave``: one call of
the logic API each (a batch: one call, a line per push), and what it did in a line;
the parsers are in :mod:`pushgate.terminal`."""

import argparse
import json
from typing import TextIO

from pushgate.client import PushAPI, PushAPIError
from pushgate.terminal_presence import counted, say, say_refused


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
        say_refused(err, exc)
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
