"""``pushgate listen``: connect to a gateway (joining rooms through the logic API),
print each push as a line (or a JSON object), and status lines on stderr; the parser
is in :mod:`pushgate.terminal`."""

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from pushgate.client import ConnectError, Connection, Push, PushAPI, PushAPIError, State, connect
from pushgate.terminal_presence import say

TOKEN_ENV = "PUSHGATE_TOKEN"


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


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
