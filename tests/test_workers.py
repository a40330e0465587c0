"""``pushgate serve --workers N`` as a user runs it: the workers share one port and
serve as one server over a private redis-server; a worker that dies is restarted and
its clients resume their sessions; SIGTERM stops everything it started; a machine
without redis-server gets an error that says what to do."""

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import (
    LOOPBACK,
    UNIT,
    ServerProcess,
    free_port,
    open_client,
    post,
    pushgate_command,
    server_process,
)
from tests.test_metrics import scrape

READY_WORKER = re.compile(r"(gateway \d|logic) ready \(pid (\d+), node ([\w-]+)\)")
REDIS_STARTED = re.compile(r"private redis-server started \(pid (\d+), (\S+)\)")


def api(server: ServerProcess) -> str:
    return f"http://{LOOPBACK}:{server.api_port}"


def free_port_run(count: int) -> int:
    """A loopback port P such that P, P+1, ... P+count-1 are all free."""
    for _ in range(50):
        first = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind((LOOPBACK, port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no run of {count} free ports")


def ready_workers(server: ServerProcess) -> dict[str, tuple[int, str]]:
    """The pid and node of every child, by name, as the supervisor last logged them."""
    found: dict[str, tuple[int, str]] = {}
    for line in server.log:
        match = READY_WORKER.search(line)
        if match:
            found[match.group(1)] = (int(match.group(2)), match.group(3))
    return found


async def until_logged(server: ServerProcess, pattern: str, after: int) -> None:
    """Wait until a log line past index ``after`` matches. Polls the log the helper
    collects; the line is the event."""
    async with asyncio.timeout(15 * UNIT):
        while True:
            if any(re.search(pattern, line) for line in server.log[after:]):
                return
            await asyncio.sleep(0.05)


async def welcome(ws: ClientConnection) -> dict[str, object]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
    assert message["type"] == 0, message
    data: dict[str, object] = message["data"]
    return data


async def received(clients: Sequence[ClientConnection]) -> list[str]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))["data"] for ws in clients]


WORKER_NAMES = ("gateway 1", "gateway 2", "logic")


async def test_workers_share_the_port_and_serve_as_one(http: aiohttp.ClientSession) -> None:
    """Two gateway workers take connections on one port; the API sees them all,
    pushes to all reach all, and a room spans both workers."""
    metrics = free_port_run(4)
    async with server_process(
        "--workers", "2", "--metrics-address", f"{LOOPBACK}:{metrics}"
    ) as server:
        assert "(2 workers)" in "".join(server.log)
        await until_logged(server, r"accepting up to \d+ WebSocket connections \(2 workers\)", 0)
        clients = [(await open_client(server.ws_url)) for _ in range(16)]
        try:
            async with http.get(api(server) + "/stats") as response:
                stats = await response.json()
            assert stats["connections"] == 16
            per_node = [node["connections"] for node in stats["nodes"]]
            assert len(per_node) == 2
            assert all(count > 0 for count in per_node), per_node  # the kernel spread them
            held = [
                (await scrape(http, f"http://{LOOPBACK}:{metrics + i}/metrics"))[
                    ("pushgate_connections", ())
                ]
                for i in (1, 2)  # worker i serves its metrics on PORT+i
            ]
            assert sorted(held) == sorted(per_node)
            # PORT itself serves every worker's metrics at once, labelled by worker.
            together = await scrape(http, f"http://{LOOPBACK}:{metrics}/metrics")
            assert [
                together[("pushgate_connections", (("worker", f"gateway {i}"),))] for i in (1, 2)
            ] == held
            up = [together[("pushgate_worker_up", (("worker", w),))] for w in WORKER_NAMES]
            assert up == [1, 1, 1]  # the logic process (on PORT+3) too
            status, body = await post(
                http, api(server) + "/push/all", data={"val": "to all", "tag": "3"}
            )
            assert status == 200, body
            assert await received([ws for ws, _ in clients]) == ["to all"] * 16
            nodes = set()
            members = []
            for ws, ws_id in clients:
                async with http.get(f"{api(server)}/connections/{ws_id}") as response:
                    node = (await response.json())["node"]
                if node not in nodes:
                    nodes.add(node)
                    members.append(ws)
                    status, body = await post(
                        http, api(server) + "/room/join", data={"id": "r", "wsId": ws_id}
                    )
                    assert status == 200, body
            assert len(members) == 2
            status, body = await post(
                http, api(server) + "/push/room", data={"id": "r", "val": "room", "tag": "4"}
            )
            assert status == 200, body
            assert await received(members) == ["room", "room"]
        finally:
            for ws, _ in clients:
                await ws.close()


async def test_a_worker_that_dies_is_restarted_and_its_clients_resume(
    http: aiohttp.ClientSession,
) -> None:
    """SIGKILL one worker: the supervisor starts another in its place, and a client
    that was on it resumes its session (same wsId, same room, the push it missed)."""
    async with server_process("--workers", "2") as server:
        victim, victim_node = ready_workers(server)["gateway 1"]
        async with asyncio.timeout(10 * UNIT):
            while True:  # connect until a client lands on gateway 1
                ws = await connect(server.ws_url)
                first = await welcome(ws)
                async with http.get(f"{api(server)}/connections/{first['wsId']}") as response:
                    if (await response.json())["node"] == victim_node:
                        break
                await ws.close()
        ws_id, session = first["wsId"], first["session"]
        status, body = await post(http, api(server) + "/room/join", data={"id": "r", "wsId": ws_id})
        assert status == 200, body
        mark = len(server.log)
        os.kill(victim, signal.SIGKILL)
        await asyncio.wait_for(ws.wait_closed(), 5 * UNIT)
        status, body = await post(
            http, api(server) + "/push/room", data={"id": "r", "val": "missed", "tag": "3"}
        )
        assert status == 200, body
        await until_logged(server, r"gateway 1 ready", mark)
        assert ready_workers(server)["gateway 1"][0] != victim
        async with connect(server.ws_url + "?resume=1") as again:
            await again.send(json.dumps({"type": 0, "data": {"wsId": ws_id, "session": session}}))
            resumed = await welcome(again)
            assert (resumed["wsId"], resumed["resumed"]) == (ws_id, True)
            assert await received([again]) == ["missed"]


async def test_sigterm_drains_every_worker_and_stops_the_private_redis() -> None:
    """SIGTERM: every child drains and exits, the private redis-server is stopped and
    its directory removed, and the supervisor exits 0."""
    async with server_process("--workers", "2", "--drain-seconds", "0.2") as server:
        redis = next(m for line in server.log if (m := REDIS_STARTED.search(line)))
        children = [pid for pid, _ in ready_workers(server).values()]
        assert len(children) == 3  # two gateways and the logic API
        ws, _ = await open_client(server.ws_url)
        assert await server.stop() == 0
        assert ws.close_code == 1012  # drained: "service restart", resume elsewhere
    assert_gone([int(redis.group(1)), *children], os.path.dirname(redis.group(2)))


def assert_gone(pids: list[int], directory: str) -> None:
    """No process of ``pids`` runs (an exited one not yet reaped is a zombie, Z), and
    ``directory`` no longer exists."""
    for pid in pids:
        assert process_state(pid) in ("", "Z"), (pid, process_state(pid))
    assert not os.path.exists(directory)


async def test_json_logs_of_workers_name_the_worker() -> None:
    """--log-format json with --workers: every line is JSON, and a worker's (here a
    gateway closing a client for a bad message) says which worker wrote it."""
    async with server_process("--workers", "2", "--log-format", "json") as server:
        ws, ws_id = await open_client(server.ws_url)
        await ws.send("not json")
        await asyncio.wait_for(ws.wait_closed(), 5 * UNIT)
        await until_logged(server, ws_id, 0)
    lines = [json.loads(line) for line in server.log if line.strip()]
    [closing] = [line for line in lines if line.get("wsId") == ws_id and line.get("code")]
    assert closing["worker"] in ("gateway 1", "gateway 2")
    assert any(line.get("worker") == "logic" for line in lines)
    ready = [line for line in lines if " ready: " in line["message"]]
    assert [line.get("worker") for line in ready] == [None]  # the supervisor's own


async def test_the_console_of_workers_connects_to_their_port(
    http: aiohttp.ClientSession,
) -> None:
    """The console page comes from the logic child, which listens on no WebSocket
    port: the supervisor tells it the workers' (not 8888)."""
    async with (
        server_process("--workers", "2") as server,
        http.get(f"http://127.0.0.1:{server.api_port}/") as response,
    ):
        page = await response.text()
    # No host: the gateway listens where the page was loaded from (127.0.0.1).
    assert f'<meta name="pushgate-gateway" content=":{server.ws_port}">' in page


async def test_workers_without_redis_server_say_how_to_fix_it() -> None:
    """No broker given and no redis-server installed: exit 1 with what to do."""
    process = await asyncio.create_subprocess_exec(
        *pushgate_command("serve", "--workers", "2", "--ws-port", "0", "--api-port", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PATH": "/nonexistent"},
    )
    _, err = await asyncio.wait_for(process.communicate(), 15 * UNIT)
    assert process.returncode == 1
    message = err.decode()
    assert "redis-server is not installed" in message
    assert "--broker redis://" in message
    assert "--workers 1" in message


async def test_workers_are_for_gateways() -> None:
    """``logic --workers 2`` is refused, in one line: logic nodes are scaled by running more."""
    process = await asyncio.create_subprocess_exec(
        *pushgate_command("logic", "--workers", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 15 * UNIT)
    assert process.returncode == 2
    assert err.decode().splitlines() == [
        "pushgate logic: --workers is not an option of pushgate logic: only serve and "
        "gateway read it (see pushgate logic --help)"
    ]


async def test_a_killed_supervisor_leaves_no_worker_behind() -> None:
    """SIGKILL the supervisor (an OOM kill, say): its workers and its private Redis
    are told by the kernel (PR_SET_PDEATHSIG) and stop; none keeps the port."""
    async with server_process("--workers", "2", "--drain-seconds", "0.2") as server:
        redis = next(m for line in server.log if (m := REDIS_STARTED.search(line)))
        children = [int(redis.group(1)), *(pid for pid, _ in ready_workers(server).values())]
        server.process.kill()
        await server.process.wait()
        running = children
        try:
            async with asyncio.timeout(15 * UNIT):
                while running:  # orphans are reaped by init once they exit: no event
                    await asyncio.sleep(0.1)
                    running = [pid for pid in running if process_state(pid) not in ("", "Z")]
        finally:
            for pid in running:  # this test started them: leave nothing behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # A killed supervisor cannot remove its private Redis's directory.
            shutil.rmtree(os.path.dirname(redis.group(2)), ignore_errors=True)


def process_state(pid: int) -> str:
    """The state letter of a process ("Z": exited, not yet reaped; "": gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


async def test_workers_get_the_secrets_by_environment_not_command_line(
    http: aiohttp.ClientSession,
) -> None:
    """--api-key and --token-secret given to the supervisor reach every child through
    its environment: no child's command line (which `ps` shows to every user of the
    machine) holds them, and the children use them (the API wants the key)."""
    key, secret = "k-" + os.urandom(8).hex(), "s-" + os.urandom(16).hex()
    async with server_process(
        "--workers", "2", "--api-key", key, f"--token-secret={secret}"
    ) as server:
        await until_logged(server, r"accepting up to \d+ WebSocket connections \(2 workers\)", 0)
        workers = ready_workers(server)
        assert sorted(workers) == sorted(WORKER_NAMES)
        for pid, _ in workers.values():
            argv = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
            assert key.encode() not in argv
            assert secret.encode() not in argv
        fields = {"val": "x", "tag": "3"}
        status, _ = await post(http, api(server) + "/push/all", data=fields)
        assert status == 401
        headers = {"Authorization": f"Bearer {key}"}
        status, _ = await post(http, api(server) + "/push/all", data=fields, headers=headers)
        assert status == 200
