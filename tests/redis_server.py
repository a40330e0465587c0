"""A real ``redis-server`` for tests, on a free loopback port, that tests can stop,
kill and restart on the same port."""

import asyncio
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import pytest

from tests.helpers import LOOPBACK, UNIT, free_port

# A free port can be taken between the moment it is picked and redis-server's bind
# (the suite's own clients take ephemeral ports by the thousand): a first start tries
# this many times, each on ports picked again.
FIRST_START_ATTEMPTS = 3
PORT_TAKEN = b"Address already in use"


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
        self._started = False  # once it has served, its port is its URL's: kept
        self._output: IO[bytes] | None = None  # its log: why it exited, if it did

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def start(self) -> None:
        for attempt in range(FIRST_START_ATTEMPTS):
            self._spawn()
            try:
                await self._wait_until_serving()
            except PortTaken:
                if self._started or attempt == FIRST_START_ATTEMPTS - 1:
                    raise
                self._pick_ports_again()
                continue
            self._started = True
            return

    def _pick_ports_again(self) -> None:
        """New ports for a server that never served: its own (and its TLS port, which
        is the same), and its cluster bus port."""
        old, self.port = self.port, free_port()
        extra = list(self.extra)
        for index, option in enumerate(extra[:-1]):
            if option == "--tls-port" and extra[index + 1] == str(old):
                extra[index + 1] = str(self.port)
            elif option == "--cluster-port":
                extra[index + 1] = str(free_port())
        self.extra = tuple(extra)
        if "--cluster-config-file" in extra and "--dir" in extra:  # a node's first state
            data = Path(extra[extra.index("--dir") + 1])
            (data / extra[extra.index("--cluster-config-file") + 1]).unlink(missing_ok=True)

    def _spawn(self) -> None:
        self._close_output()
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by kill())
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
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    async def _wait_until_serving(self) -> None:
        async with asyncio.timeout(10 * UNIT):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    assert self._output is not None
                    self._output.seek(0)
                    said = self._output.read()[-2000:]
                    why = f"redis-server exited with {self.process.returncode}: {said.decode()}"
                    raise (PortTaken if PORT_TAKEN in said else AssertionError)(why)
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
        self._close_output()

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    async def restart(self) -> None:
        self.kill()
        await self.start()


class PortTaken(AssertionError):
    """redis-server could not listen: its port was taken since it was picked."""
