"""A terminal chat client (docs/chat.md): enters a room as USER, says who is there
and who comes and goes, prints what the others say, and sends each line you type.

    python examples/chat/client.py ann                 # room chat:lobby
    python examples/chat/client.py bob --room chat:games

It asks the back end (examples/chat/backend.py) for its connection token and for a
grant to enter the room, and speaks to pushgate with the Python SDK.
"""

import argparse
import asyncio
import sys
from collections.abc import Callable

import aiohttp

from pushgate.client import Connection, PresenceChange, connect

# The tag of chat messages: the application's own message type (any from 2 on).
SAID = 7


async def fetch_json(backend: str, path: str, **params: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as http, http.get(backend + path, params=params) as got:
        got.raise_for_status()
        answer: dict[str, str] = await got.json()
        return answer


def chat_client(
    gateway: str, backend: str, user: str, show: Callable[[str], None] = print
) -> Connection:
    """A connection for ``user``, telling ``show`` who comes and goes (not yet open:
    ``async with`` it, then :func:`enter`)."""

    async def token() -> str:  # asked again before every reconnect
        return (await fetch_json(backend, "/token", user=user))["token"]

    async def grant(room: str, ws_id: str) -> str:  # asked again for a new session
        return (await fetch_json(backend, "/grant", user=user, room=room, wsId=ws_id))["grant"]

    def on_presence(conn: Connection, change: PresenceChange) -> None:
        name = change.member.user or change.member.ws_id
        show(f"* {name} {'is here' if change.joined else 'left'}")

    return connect(gateway, token=token, grant_for=grant, on_presence=on_presence)


async def enter(conn: Connection, backend: str, user: str, room: str) -> None:
    """Subscribe ``conn`` to ``room`` with a grant from the back end."""
    answer = await fetch_json(backend, "/grant", user=user, room=room, wsId=conn.ws_id)
    await conn.subscribe(room, grant=answer["grant"], info=answer["info"])


async def listen(conn: Connection, show: Callable[[str], None] = print) -> None:
    """Print what the others say, until the connection closes."""
    async for push in conn:
        if push.type == SAID and push.sender is not None:
            show(f"<{push.sender.user or push.sender.ws_id}> {push.data}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("user")
    parser.add_argument("--room", default="chat:lobby")
    parser.add_argument("--gateway", default="ws://127.0.0.1:8888/connect")
    parser.add_argument("--backend", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    async with chat_client(args.gateway, args.backend, args.user) as conn:
        await enter(conn, args.backend, args.user, args.room)
        listening = asyncio.create_task(listen(conn))
        lines = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
        while line := (await lines.readline()).decode().strip():
            await conn.publish(args.room, line, tag=SAID)
        listening.cancel()


if __name__ == "__main__":
    asyncio.run(main())
