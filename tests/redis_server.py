"""A real ``redis-server`` for tests, on a free loopback port, that tests can stop,
kill and restart on the same port."""

import asyncio
import shutil
import ssl
import subprocess

import pytest

from tests.helpers import LOOPBACK, UNIT, free_port


class RedisServer:
    """One redis-server process without persistence; ``url`` stays valid across restarts.

    ``extra`` is appended to its command line (a cluster node's options).
    """

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/test, which installs it")
        self.binary = binary
        self.port = free_port()
        self.extra = extra
        self.tls: ssl.SSLContext | None = None  # set when it listens with TLS only
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        self._spawn()
        await self._wait_until_serving()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def _wait_until_serving(self) -> None:
        async with asyncio.timeout(10 * UNIT):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"redis-server exited with {self.process.returncode}")
                try:
                    reader, writer = await asyncio.open_connection(
                        LOOPBACK, self.port, ssl=self.tls
                    )
                except OSError:
                    await asyncio.sleep(0.02)  # not listening yet; nothing to await on
                    continue
                writer.write(b"PING\r\n")
                reply = await reader.readline()
                writer.close()
                await writer.wait_closed()
                if reply == b"+PONG\r\n":
                    return

    def kill(self) -> None:
        """Stop it at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    async def restart(self) -> None:
        self.kill()
        await self.start()
