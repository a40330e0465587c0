"""TLS served directly (--tls-cert, --tls-key): a client connects to wss:// and the
back end pushes over https://, each checking the server's certificate against the
CA that signed it; a certificate without its key, or a key that is not its pair,
stops the server before it listens, saying why."""

import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect

from pushgate.config import Config
from pushgate.errors import ConfigError
from tests.helpers import UNIT, post, running_server
from tests.redis_cluster import make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def test_wss_and_https_with_a_checked_certificate(
    certificates: tuple[Path, Path, Path],
) -> None:
    ca, cert, key = certificates
    trust = ssl.create_default_context(cafile=str(ca))
    async with running_server(tls_cert=str(cert), tls_key=str(key)) as server:
        ws_url = server.ws_url.replace("ws://", "wss://")
        api_url = server.api_url.replace("http://", "https://")
        async with connect(ws_url, ssl=trust, open_timeout=5 * UNIT) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == 0
            async with aiohttp.ClientSession() as http:
                fields = {"val": "over TLS", "tag": 2}
                status, body = await post(http, api_url + "/push/all", data=fields, ssl=trust)
                assert status == 200, body
                assert body["delivered"] == 1
                # Plain HTTP to the TLS port is not answered as HTTP.
                with pytest.raises(aiohttp.ClientError):
                    await post(http, server.api_url + "/push/all", data=fields)
            pushed = json.loads(await ws.recv())
            assert pushed["data"] == "over TLS"


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        Config(tls_cert="/etc/hostname")


def test_a_pair_that_does_not_load_is_refused_with_the_reason(
    certificates: tuple[Path, Path, Path],
) -> None:
    ca, cert, _ = certificates
    config = Config(tls_cert=str(cert), tls_key=str(ca))  # the CA's certificate, no key
    with pytest.raises(ConfigError, match="do not load"):
        config.tls_context()
