"""Measure permessage-deflate: bytes on the wire and server CPU per delivery, with
compression on and off, side by side in one run.

Usage: .venv/bin/python scripts/compression-bench.py [--clients 1000] [--pushes 300]
       [--rate 50] [--repeat 3]

Each round starts its own ``pushgate serve`` on free loopback ports (one with
``--no-compression``, one without, in alternating order), opens ``--clients``
connections that offer permessage-deflate the way browsers do
(``permessage-deflate; client_max_window_bits``), pushes ``--pushes`` copies of a
typical 1 KB JSON document to all of them at ``--rate`` pushes per second, and waits
until every client has every push. It reports, per variant, the median over the
rounds of:

- bytes per delivery: every byte the clients read after the handshake, divided by
  the deliveries (frame headers included);
- server CPU per delivery: the server process's user + system CPU over the push
  phase (from ``/proc``), divided by the deliveries.

The clients are lean asyncio protocols in this process that count frames and bytes;
the first client of each round inflates every compressed frame and checks it is the
document that was pushed, so a broken compression fails the run instead of looking
cheap. Linux only (``/proc``).
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pushgate.bench.procstat import cpu_seconds
from pushgate.bench.server import start_own_server

LOOPBACK = "127.0.0.1"

# A typical push: an order update as a shop's back end would send it, about 1 KB.
DOCUMENT = json.dumps(
    {
        "event": "order.updated",
        "order": {
            "id": "ord_8f2c91d4e7b6",
            "status": "shipped",
            "placedAt": "2026-12-03T14:21:07Z",
            "customer": {"id": "cus_41a7", "name": "Ana Ribeiro", "tier": "gold"},
            "lines": [
                {"sku": "KB-204-BLK", "title": "Mechanical keyboard", "qty": 1, "price": 89.9},
                {"sku": "MS-77-GRY", "title": "Wireless mouse", "qty": 2, "price": 24.5},
                {"sku": "CB-USB-C-2M", "title": "USB-C cable, 2 m", "qty": 3, "price": 7.99},
            ],
            "shipping": {
                "carrier": "DHL Express",
                "tracking": "JD014600006281230704",
                "eta": "2026-12-05",
                "address": {
                    "street": "Rua Augusta 1520",
                    "city": "Lisboa",
                    "postcode": "1100-053",
                    "country": "PT",
                },
            },
            "totals": {"items": 162.87, "shipping": 4.9, "tax": 37.46, "grand": 205.23},
        },
        "links": {
            "self": "https://shop.example.com/api/orders/ord_8f2c91d4e7b6",
            "track": "https://www.dhl.com/track?id=JD014600006281230704",
        },
        "meta": {"version": 7, "source": "fulfilment", "traceId": "4bf92f3577b34da6a3ce929d"},
    }
)


class Client(asyncio.Protocol):
    """Counts the bytes and text frames the server sends after its 101."""

    def __init__(self, port: int, check: bool, done: asyncio.Event, expected: int) -> None:
        self.port = port
        self.check = check
        self.done = done
        self.expected = expected  # frames that make this client complete
        self.opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.bytes = 0
        self.frames = 0
        self.compressed = 0
        self.welcomed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /connect HTTP/1.1\r\nHost: {LOOPBACK}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].decode(), self.buffer[end + 4 :]
            self.opened.set_result(head)
            data, self.buffer = self.buffer, b""
        self.bytes += len(data)
        buffer = self.buffer + data
        offset = 0
        while len(buffer) - offset >= 2:
            first, length = buffer[offset], buffer[offset + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                length, header = int.from_bytes(buffer[offset + 2 : offset + 4]), 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                length, header = int.from_bytes(buffer[offset + 2 : offset + 10]), 10
            if len(buffer) - offset < header + length:
                break
            if first & 0x0F == 1:
                self.frames += 1
                if first & 0x40:
                    self.compressed += 1
                if self.check:
                    self.verify(first, buffer[offset + header : offset + header + length])
                if self.frames == 1:
                    self.welcomed.set()
                if self.frames == self.expected:
                    self.done.set()
            offset += header + length
        self.buffer = buffer[offset:]

    def verify(self, first: int, payload: bytes) -> None:
        if first & 0x40:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        message = json.loads(payload)
        if message.get("type") == 3:
            assert message["data"] == DOCUMENT, "a push arrived altered"


async def one_round(compression: bool, args: argparse.Namespace) -> tuple[float, float, int]:
    """(bytes per delivery, server CPU µs per delivery, compressed frames seen)."""
    server = await start_own_server(
        ["--no-metrics"] + ([] if compression else ["--no-compression"])
    )
    assert server.process is not None
    ws_port = int(server.ws_urls[0].rsplit(":", 1)[1].split("/")[0])
    api_url = server.api_url
    loop = asyncio.get_running_loop()
    done_events = []
    clients = []
    try:
        for index in range(args.clients):
            done = asyncio.Event()
            _, client = await loop.create_connection(
                lambda d=done, i=index: Client(ws_port, i == 0, d, args.pushes + 1),
                LOOPBACK,
                ws_port,
            )
            head = await client.opened
            offered = "permessage-deflate" in head.lower()
            if offered != compression:
                raise SystemExit(f"compression-bench: expected deflate={compression}:\n{head}")
            clients.append(client)
            done_events.append(done)
        # Every client has its welcome frame before the measured phase starts.
        await asyncio.wait_for(asyncio.gather(*(c.welcomed.wait() for c in clients)), 30)
        before_bytes = sum(c.bytes for c in clients)
        before_cpu = cpu_seconds(server.process.pid)
        async with aiohttp.ClientSession() as http:
            start = time.monotonic()
            for seq in range(args.pushes):
                delay = start + seq / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with http.post(
                    f"{api_url}/push/all", data={"val": DOCUMENT, "tag": "3"}
                ) as response:
                    if response.status != 200:
                        raise SystemExit(
                            f"push answered {response.status}: {await response.text()}"
                        )
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done_events)), 60)
        cpu = cpu_seconds(server.process.pid) - before_cpu
        deliveries = args.clients * args.pushes
        received = sum(c.bytes for c in clients) - before_bytes
        return received / deliveries, cpu / deliveries * 1e6, sum(c.compressed for c in clients)
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        await server.stop()


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="connections (default 1000)")
    parser.add_argument("--pushes", type=int, default=300, help="pushes per round (default 300)")
    parser.add_argument("--rate", type=float, default=50, help="pushes per second (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per variant (default 3)")
    args = parser.parse_args()
    print(
        f"compression-bench: {args.clients} clients, {args.pushes} pushes of a "
        f"{len(DOCUMENT)}-byte JSON document at {args.rate:g}/s, {args.repeat} rounds "
        f"per variant; {cpu_model()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    for round_ in range(args.repeat):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        for compression in order:
            result = await one_round(compression, args)
            results[compression].append(result)
            print(
                f"  round {round_ + 1} compression {'on ' if compression else 'off'}: "
                f"{result[0]:.0f} bytes/delivery, {result[1]:.2f} µs CPU/delivery",
                flush=True,
            )
    for compression in (False, True):
        rows = results[compression]
        wire = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(
            f"compression {'on ' if compression else 'off'}: median {wire:.0f} bytes/delivery, "
            f"{cpu:.2f} µs server CPU/delivery (rounds: "
            + ", ".join(f"{r[1]:.2f}" for r in rows)
            + ")"
        )
        if compression and not all(r[2] for r in rows):
            raise SystemExit("compression-bench: no compressed frame arrived")


if __name__ == "__main__":
    asyncio.run(main())
