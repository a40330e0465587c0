"""Where a bench client connects, and how one is opened: shared by the measuring
workers (:mod:`pushgate.bench.worker`, :mod:`pushgate.bench.reopen`) and the
attackers (:mod:`pushgate.bench.abusers`).

Each client connects from a loopback source address of its own (127.0.0.2, ...)
so that one process can hold more connections to one server port than one
address has ports; a failure is counted by its reason (:func:`describe`).
"""

import asyncio
import socket

from pushgate.bench.rawws import client_socket
from pushgate.bench.wsclient import BenchClient, HandshakeError

SLOW_RCVBUF = 4096  # a slow client's receive buffer: it fills after a few pushes
GIVE_UP_AFTER = 100  # failed connections, when more failed than opened
MAX_ERROR_KINDS = 20  # reasons a worker reports failures under, the most frequent first


class Target:
    """One gateway URL, resolved: where a client connects and what it asks for."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
        family, _, _, _, address = infos[0]
        self.family = family
        self.address = address
        self.path = path


async def open_client(
    target: Target,
    source: str | None,
    client: BenchClient,
    within: float,
    *,
    slow: bool = False,
) -> None:
    """Connect ``client`` from ``source`` (an address to bind, or None) and wait until
    it is open, at most ``within`` seconds. Raises OSError, HandshakeError or TimeoutError."""
    loop = asyncio.get_running_loop()
    sock = client_socket(target.family, source, SLOW_RCVBUF if slow else None)
    try:
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, target.address)
            await loop.create_connection(lambda: client, sock=sock)
            await client.opened
    except TimeoutError:
        client.abort()
        sock.close()
        if client.upgraded and client.need_welcome:
            raise HandshakeError(
                "no welcome frame after the 101: this scenario needs the wsId of a "
                '{"type":0,"data":{"wsId":...}} frame'
            ) from None
        raise
    except BaseException:
        client.abort()
        sock.close()
        raise


def describe(exc: BaseException) -> str:
    """A failure to connect, in a few words: the reason it is counted under."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"[:200]


def gave_up(failed: int, opened: int) -> bool:
    """Whether to stop trying: the server refuses us, so do not wait out every
    timeout (GIVE_UP_AFTER failures, and more failures than successes)."""
    return failed >= GIVE_UP_AFTER and failed > opened
