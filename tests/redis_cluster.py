"""A real Redis Cluster for tests: three masters (no replicas), each a redis-server
on free loopback ports, with the slots split evenly.

A master can be killed and started again on the same ports: it keeps its cluster
configuration (``nodes.conf`` in its own directory) and rejoins owning the same slots,
with its data gone. ``cluster-require-full-coverage no`` keeps the other masters
serving their slots meanwhile, which is how a cluster should be run under pushgate.
"""

import asyncio
import concurrent.futures
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.helpers import LOOPBACK, UNIT, free_port
from tests.redis_server import RedisServer

SLOTS = 16384
NODE_TIMEOUT_MS = 500


class RedisClusterServers:
    """Three cluster-enabled redis-servers joined into one cluster; with ``tls``,
    they speak TLS only (clients and cluster bus), with a CA of their own."""

    def __init__(self, masters: int = 3, *, tls: bool = False) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="pushgate-cluster-")
        self.tls = tls
        self.client_options: dict[str, Any] = {}
        if tls:
            self.ca, cert, key = make_certificates(Path(self._dir.name))
            self._tls_args = (
                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(self.ca), "--tls-cluster", "yes",
                "--tls-replication", "yes", "--tls-auth-clients", "no",
            )  # fmt: skip
            self.client_options = {"ssl": True, "ssl_ca_certs": str(self.ca)}
        self.nodes = [self._new_node(str(i)) for i in range(masters)]
        self.replicas: list[RedisServer] = []

    def _new_node(self, name: str) -> RedisServer:
        data = Path(self._dir.name) / name
        data.mkdir()
        node = RedisServer(
            (
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),
                "--cluster-config-file", "nodes.conf",
                "--dir", str(data),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no",
            )
        )  # fmt: skip
        if self.tls:  # the port it was given is for TLS; no plain port
            node.extra += ("--port", "0", "--tls-port", str(node.port), *self._tls_args)
            node.tls = ssl.create_default_context(cafile=str(self.ca))
        return node

    async def add_replica(self, master: int) -> RedisServer:
        """Start a replica of ``nodes[master]``; return it once it is in sync."""
        replica = self._new_node(f"replica{len(self.replicas)}")
        self.replicas.append(replica)
        await replica.start()
        primary = self.nodes[master]
        async with (
            Redis(host=LOOPBACK, port=primary.port, **self.client_options) as of,
            Redis(host=LOOPBACK, port=replica.port, **self.client_options) as client,
            asyncio.timeout(20 * UNIT),
        ):
            await client.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "MEET", LOOPBACK, primary.port, node_bus_port(primary)
            )
            primary_id = (await of.execute_command("CLUSTER", "MYID")).decode()  # type: ignore[no-untyped-call]
            while True:
                try:  # refused until the replica has learnt of the master by gossip
                    await client.execute_command("CLUSTER", "REPLICATE", primary_id)  # type: ignore[no-untyped-call]
                    break
                except ResponseError:
                    await asyncio.sleep(0.05)  # gossip has no event to await
            while (await client.info("replication")).get("master_link_status") != "up":  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # nor has the first sync
        return replica

    @property
    def url(self) -> str:
        """The ``--broker`` URL naming every master."""
        hosts = ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)
        if self.tls:
            return f"rediss+cluster://{hosts}?ssl_ca_certs={self.ca}"
        return f"redis+cluster://{hosts}"

    async def start(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes))
        share = SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            first = i * share
            last = SLOTS - 1 if i == len(self.nodes) - 1 else first + share - 1
            async with Redis(host=LOOPBACK, port=node.port, **self.client_options) as client:
                await client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
                if i:
                    first_node = self.nodes[0]
                    await client.execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER", "MEET", LOOPBACK, first_node.port, node_bus_port(first_node)
                    )
        await self.wait_ok()

    async def wait_ok(self) -> None:
        """Return once every master sees the whole cluster, every slot served."""
        async with asyncio.timeout(20 * UNIT):
            for node in self.nodes:
                async with Redis(host=LOOPBACK, port=node.port, **self.client_options) as client:
                    while True:
                        info = (await client.execute_command("CLUSTER", "INFO")).decode()  # type: ignore[no-untyped-call]
                        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
                        if (
                            fields.get("cluster_state") == "ok"
                            and fields.get("cluster_known_nodes") == str(len(self.nodes))
                            and fields.get("cluster_slots_ok") == str(SLOTS)
                        ):
                            break
                        await asyncio.sleep(0.05)  # gossip has no event to await

    async def move_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Migrate ``slot`` and its keys from master ``source`` to master ``target``
        (what resharding does, one slot at a time), and tell every master."""
        async with (
            Redis(host=LOOPBACK, port=source.port, **self.client_options) as src,
            Redis(host=LOOPBACK, port=target.port, **self.client_options) as dst,
        ):
            src_id = (await src.execute_command("CLUSTER", "MYID")).decode()  # type: ignore[no-untyped-call]
            dst_id = (await dst.execute_command("CLUSTER", "MYID")).decode()  # type: ignore[no-untyped-call]
            await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)  # type: ignore[no-untyped-call]
            await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)  # type: ignore[no-untyped-call]
            while keys := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):  # type: ignore[no-untyped-call]
                await src.execute_command(  # type: ignore[no-untyped-call]
                    "MIGRATE", LOOPBACK, target.port, "", 0, 5000, "KEYS", *keys
                )
            for node in self.nodes:
                async with Redis(host=LOOPBACK, port=node.port, **self.client_options) as client:
                    await client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)  # type: ignore[no-untyped-call]

    def master_of_slot(self, slot: int) -> RedisServer:
        share = SLOTS // len(self.nodes)
        return self.nodes[min(slot // share, len(self.nodes) - 1)]

    def kill(self) -> None:
        for node in [*self.nodes, *self.replicas]:
            node.kill()
        self._dir.cleanup()


def node_bus_port(node: RedisServer) -> int:
    return int(node.extra[node.extra.index("--cluster-port") + 1])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 signed by it, made with openssl."""
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=pushgate test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def started_in_a_thread() -> Iterator[RedisClusterServers]:
    """A cluster for a module-scoped fixture (``yield from`` it), killed after.

    Started on an event loop of its own, in a thread: such a fixture may be first
    requested from inside a test's running loop.
    """
    cluster = RedisClusterServers()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, cluster.start()).result()
        yield cluster
    finally:
        cluster.kill()
