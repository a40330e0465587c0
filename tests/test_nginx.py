"""examples/nginx/pushgate.conf, run as it is (its ports and certificate paths
replaced) by a real nginx in front of pushgate: a wss:// client gets its welcome
and a push sent over https:// through the proxy, a Pusher client connects at
/app/<key>, and a quiet connection outlives nginx's default 60 s read timeout
because the example raises it (checked in the file, not by waiting a minute)."""

import asyncio
import json
import re
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect

from tests.helpers import LOOPBACK, UNIT, Running, free_port, post, running_server
from tests.redis_cluster import make_certificates

EXAMPLE = Path(__file__).parent.parent / "examples" / "nginx" / "pushgate.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def rendered(gateway: int, api: int, public: int, private: int, cert: Path, key: Path) -> str:
    """The example with this test's ports and certificate in place of its own."""
    text = EXAMPLE.read_text()
    for old, new in (
        ("127.0.0.1:8888", f"{LOOPBACK}:{gateway}"),
        ("127.0.0.1:9999", f"{LOOPBACK}:{api}"),
        ("listen 443 ssl", f"listen {LOOPBACK}:{public} ssl"),
        ("listen 127.0.0.1:9443 ssl", f"listen {LOOPBACK}:{private} ssl"),
        ("/etc/ssl/certs/push.example.com.pem", str(cert)),
        ("/etc/ssl/private/push.example.com.key", str(key)),
    ):
        assert old in text, f"the example no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    if not Path(NGINX).exists():
        pytest.fail("this test needs nginx: scripts/test installs it (apt-get install nginx)")
    ca, cert, key = make_certificates(tmp_path)
    tmp_path.chmod(0o755)  # nginx's workers run as nobody: they read the certificate
    for path in (cert, key):
        path.chmod(0o644)
    return ca, cert, key


@pytest.fixture
async def behind_nginx(
    tmp_path: Path, certificates: tuple[Path, Path, Path]
) -> AsyncIterator[tuple[Running, int, int, ssl.SSLContext]]:
    ca, cert, key = certificates
    public, private = free_port(), free_port()
    async with running_server(pusher_app="1001:key1:s3cret-s3cret-s3cret") as server:
        gateway = server.ws_port
        api = server.api_port
        (tmp_path / "pushgate.conf").write_text(rendered(gateway, api, public, private, cert, key))
        (tmp_path / "nginx.conf").write_text(
            "events {}\n"
            "http {\n"
            "  access_log off;\n"
            f"  client_body_temp_path {tmp_path}/body;\n"
            f"  proxy_temp_path {tmp_path}/proxy;\n"
            f"  include {tmp_path}/pushgate.conf;\n"
            "}\n"
        )
        directives = f"daemon off; pid {tmp_path}/nginx.pid; error_log stderr warn;"
        process = await asyncio.create_subprocess_exec(
            NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", directives,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await _until_listening(public, process)
            yield server, public, private, ssl.create_default_context(cafile=str(ca))
        finally:
            process.terminate()
            await process.wait()


async def _until_listening(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(10 * UNIT):
        while True:
            if process.returncode is not None:
                assert process.stderr is not None
                raise AssertionError(f"nginx ended: {(await process.stderr.read()).decode()}")
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                await asyncio.sleep(0.02)  # nginx gives no sign of listening but the port
                continue
            writer.close()
            return


async def test_wss_and_an_https_push_through_the_examples_nginx(
    behind_nginx: tuple[Running, int, int, ssl.SSLContext],
) -> None:
    _, public, private, trust = behind_nginx
    async with connect(f"wss://{LOOPBACK}:{public}/connect", ssl=trust) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
        assert welcome["type"] == 0
        async with aiohttp.ClientSession() as http:
            fields = {"val": "through nginx", "tag": 2}
            url = f"https://{LOOPBACK}:{private}/push/all"
            status, body = await post(http, url, data=fields, ssl=trust)
        assert status == 200, body
        assert body["delivered"] == 1
        pushed = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
        assert pushed["data"] == "through nginx"
    url = f"wss://{LOOPBACK}:{public}/app/key1?protocol=7"
    async with connect(url, ssl=trust) as pusher:
        established = json.loads(await asyncio.wait_for(pusher.recv(), 5 * UNIT))
        assert established["event"] == "pusher:connection_established"


def test_the_example_outlasts_pushgates_idle_timeout() -> None:
    """nginx's read timeout must be longer than pushgate's --idle-timeout (30 s by
    default), or nginx, not pushgate, would cut quiet clients."""
    timeouts = re.findall(r"proxy_read_timeout (\d+)(h|m|s)?;", EXAMPLE.read_text())
    assert timeouts
    seconds = {"h": 3600, "m": 60, "s": 1, "": 1}
    assert all(int(n) * seconds[unit] > 30 for n, unit in timeouts)
