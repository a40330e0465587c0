"""--log-format json: one JSON object per log line, with the connection's context."""

import asyncio
import io
import json
import logging
import sys

from pushgate.logformat import JsonFormatter
from tests.helpers import UNIT, open_client, server_process


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("pushgate.gateway", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_line_holds_time_level_logger_message_and_context() -> None:
    line = json.loads(
        JsonFormatter().format(
            record(
                "closing %s: %d %s", "w-1", 1007, "bad", wsId="w-1", remote="1.2.3.4:5", code=1007
            )
        )
    )
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "info",
        "logger": "pushgate.gateway",
        "message": "closing w-1: 1007 bad",
        "wsId": "w-1",
        "remote": "1.2.3.4:5",
        "code": 1007,
    }


def test_fields_that_are_none_are_left_out_and_text_stays_text() -> None:
    line = json.loads(JsonFormatter().format(record("héllo 中文\nnext", wsId=None, room="r")))
    assert line["message"] == "héllo 中文\nnext"
    assert line["room"] == "r"
    assert "wsId" not in line


def test_an_exception_is_one_field_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    text = JsonFormatter().format(made)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]


async def test_serve_logs_json_lines_with_the_ws_id() -> None:
    """`pushgate serve --log-format json`: every line is a JSON object; closing a
    client for a bad message logs its wsId, address and close code."""
    async with server_process("--log-format", "json") as server:
        ws, ws_id = await open_client(server.ws_url)
        await ws.send("not json")
        await asyncio.wait_for(ws.wait_closed(), 5 * UNIT)
        assert ws.close_code == 1007
    lines = [json.loads(line) for line in server.log if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(" ready: " in line["message"] for line in lines)
    [closing] = [line for line in lines if line.get("wsId") == ws_id and line.get("code")]
    assert (closing["code"], closing["level"]) == (1007, "info")
    assert closing["remote"].startswith("127.0.0.1:")


def test_text_is_the_default() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(record("plain"))
    assert stream.getvalue() == "INFO plain\n"
