"""The logic API's published OpenAPI description holds for the live server:
schemathesis generates thousands of requests, valid and not, from it."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from pushgate import __version__
from tests.helpers import UNIT, server_process

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


async def test_openapi_json_describes_every_endpoint(http: aiohttp.ClientSession) -> None:
    """GET /openapi.json lists the endpoints, with this version."""
    async with (
        server_process() as server,
        http.get(f"http://127.0.0.1:{server.api_port}/openapi.json") as response,
    ):
        spec = await response.json()
    assert spec["info"]["version"] == __version__
    assert set(spec["paths"]) >= {
        "/push/all",
        "/push/room",
        "/push/user",
        "/room/join",
        "/room/leave",
    }


async def test_schemathesis_finds_no_server_error_and_no_schema_violation() -> None:
    """A property-based run against the live API finds no 5xx, and every response
    matches the schema (status, content type, body)."""
    st = Path(sys.executable).with_name("st")
    async with server_process() as server:
        process = await asyncio.create_subprocess_exec(
            str(st),
            "run",
            f"http://127.0.0.1:{server.api_port}/openapi.json",
            "--checks",
            CHECKS,
            "--max-time",
            "20",
            "--workers",
            "2",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120 * UNIT)
    report = out.decode()
    assert process.returncode == 0, report
    assert " passed" in report
