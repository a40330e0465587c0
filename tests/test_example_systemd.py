"""examples/systemd: each unit's ExecStart, run as it is (its paths pointed at this
checkout's pushgate and the example's own config files, its port and broker at this
test's), starts a ready server, and its stop signal drains it within the unit's
TimeoutStopSec."""

import asyncio
import re
import shlex
import signal
from pathlib import Path

import pytest

from tests.helpers import UNIT, server_process
from tests.redis_server import RedisServer

EXAMPLES = Path(__file__).parent.parent / "examples" / "systemd"


def unit(name: str) -> dict[str, str]:
    """A unit file's Service settings (the ones this test reads)."""
    text = (EXAMPLES / name).read_text()
    return dict(re.findall(r"^(ExecStart|KillSignal|TimeoutStopSec)=(.*)$", text, re.M))


def command_of(settings: dict[str, str]) -> tuple[str, list[str]]:
    """The role and arguments of a unit's ExecStart, its /etc/pushgate files this
    directory's (the instance %i: port 0, a free one)."""
    program, role, *args = shlex.split(settings["ExecStart"])
    assert program == "/opt/pushgate/bin/pushgate"
    args = [a.replace("/etc/pushgate/", f"{EXAMPLES}/").replace("%i", "0") for a in args]
    return role, args


async def run_and_stop(name: str, env: dict[str, str] | None = None) -> None:
    settings = unit(name)
    assert settings["KillSignal"] == "SIGTERM"
    role, args = command_of(settings)
    async with server_process(*args, role=role, env=env) as server:
        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(float(settings["TimeoutStopSec"]) * UNIT):
            assert await server.process.wait() == 0


async def test_the_single_process_unit_starts_and_stops() -> None:
    await run_and_stop("pushgate.service")


@pytest.mark.parametrize("name", ["pushgate-gateway@.service", "pushgate-logic.service"])
async def test_the_cluster_units_start_on_a_redis_and_stop(
    name: str, module_redis: RedisServer
) -> None:
    await run_and_stop(name, env={"PUSHGATE_BROKER": module_redis.url})
