"""--log-format json: one JSON object per log line, with the connection's context;
and, in either format, no secret in any line."""

import asyncio
import io
import json
import logging
import subprocess
import sys

import aiohttp
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from pushgate.logformat import JsonFormatter, RedactSecrets, with_worker
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


def test_a_workers_line_names_the_worker_and_stays_json() -> None:
    """The supervisor passes a worker's JSON line on with "worker"; anything else the
    worker wrote (a crash before logging was set up) becomes a JSON line too."""
    line = '{"time":"t","level":"info","logger":"pushgate","message":"hi"}'
    assert json.loads(with_worker(line, "gateway 2")) == {
        "time": "t",
        "level": "info",
        "logger": "pushgate",
        "message": "hi",
        "worker": "gateway 2",
    }
    raw = json.loads(with_worker("Traceback (most recent call last):", "logic"))
    assert (raw["level"], raw["message"], raw["worker"]) == (
        "error",
        "Traceback (most recent call last):",
        "logic",
    )


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


# A library warning after the log is configured: PyJWT's, for a key that is short.
WARNING_PROGRAM = """
import jwt
from pushgate.logformat import configure_logging
configure_logging("info", {log_format!r})
jwt.encode({{"sub": "u"}}, "short", algorithm="HS256")
"""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_library_warning_is_one_log_line(log_format: str) -> None:
    """A Python warning goes through logging: with --log-format json it is one JSON
    line (logger py.warnings), not a bare line among them; in text, one line too."""
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", WARNING_PROGRAM.format(log_format=log_format)],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
        check=True,
    )
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert (record["level"], record["logger"]) == ("warning", "py.warnings")
        message = record["message"]
    else:
        assert " WARNING py.warnings: " in line
        message = line
    assert "InsecureKeyLengthWarning: The HMAC key is 5 bytes long" in message


def test_text_is_the_default() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(record("plain"))
    assert stream.getvalue() == "INFO plain\n"


# Secrets


SECRET = "a-test-secret-of-at-least-32-bytes!!"


def redacted(message: str, *args: object) -> str:
    made = record(message, *args)
    assert RedactSecrets().filter(made)
    return made.getMessage()


def test_tokens_in_paths_headers_and_access_lines_are_hidden() -> None:
    """?token=, a token offered as a subprotocol, anything shaped like a JWT, and
    credential headers become "…"; the path and the rest stay readable."""
    token = jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")
    assert redacted("< GET %s HTTP/1.1", f"/connect?resume=1&token={token}") == (
        "< GET /connect?resume=1&token=… HTTP/1.1"
    )
    assert redacted("< %s: %s", "Sec-WebSocket-Protocol", f"pushgate, {token}") == (
        "< Sec-WebSocket-Protocol: pushgate, …"
    )
    assert redacted("< %s: %s", "Sec-WebSocket-Protocol", "not-a-jwt") == (
        "< Sec-WebSocket-Protocol: …"
    )
    assert redacted("< %s: %s", "Authorization", "Bearer k-123") == "< Authorization: …"
    assert (
        redacted('"GET /stats?api_key=k-123 HTTP/1.1" 200') == '"GET /stats?api_key=… HTTP/1.1" 200'
    )
    assert redacted("bad token %s", token) == "bad token …"


def test_a_long_resume_message_shows_no_part_of_its_session() -> None:
    """websockets logs a long frame as its start and end, which can hold the end of
    the session token without its key: the whole payload is redacted first."""
    session = "pjDi2-NDnbefP-MIFAQpsEoX"
    resume = json.dumps(
        {"type": 0, "data": {"wsId": "60b7508d-2bab-4e61-9b36-90c3207bd101", "session": session}}
    )
    frame = Frame(Opcode.TEXT, resume.encode())
    assert session[-6:] in str(frame)  # what websockets alone would log
    line = redacted("< %s", frame)
    assert session[-6:] not in line
    assert line.startswith('< TEXT \'{"type": 0, "data": {"wsId": "60b7508d')
    assert line.endswith(f"[{len(resume)} bytes]")
    rest = Frame(Opcode.CONT, session.encode(), fin=True)
    hidden = redacted("< %s", rest)
    assert hidden.startswith("< CONT '…' [")
    assert hidden.endswith(f"{len(session)} bytes]")
    ping = Frame(Opcode.TEXT, b'{"type":1,"data":"PING"}')
    assert redacted("< %s", ping) == "< " + str(ping)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_debug_log_holds_no_token_and_no_session(log_format: str) -> None:
    """`pushgate serve --log-level debug`: connect with a token in the query and as a
    subprotocol, push, resume the session; no line holds the token, any part of
    its signature or the session token, yet the log still names the wsId and the path."""
    token = jwt.encode({"sub": "alice", "rooms": ["news"]}, SECRET, algorithm="HS256")
    args = ("--log-level", "debug", "--log-format", log_format, "--token-secret", SECRET)
    async with server_process(*args) as server:
        url = server.ws_url
        ws = await connect(url + "?token=" + token)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
        ws_id, session = welcome["data"]["wsId"], welcome["data"]["session"]
        browser, _ = await open_client(url, subprotocols=["pushgate", token])
        api = f"http://127.0.0.1:{server.api_port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(api + "/push/all", data={"val": "x", "tag": "3"}) as response:
                assert response.status == 200
            async with http.get(api + "/stats?token=" + token) as response:
                assert response.status == 200
        await ws.close(1001)  # going away: the session waits for the resume
        resumed = await connect(url + "?resume=1&token=" + token)
        await resumed.send(
            json.dumps({"type": 0, "data": {"wsId": ws_id, "session": session, "since": {}}})
        )
        again = json.loads(await asyncio.wait_for(resumed.recv(), 5 * UNIT))
        assert (again["data"]["wsId"], again["data"]["resumed"]) == (ws_id, True)
        for client in (browser, resumed):
            await client.close()
    log = "".join(server.log)
    signature = token.rpartition(".")[2]
    for secret in (token, signature[:12], signature[-12:], session, session[:8], session[-8:]):
        assert secret not in log
    assert ws_id in log
    assert "/connect?token=…" in log
    assert "/connect?resume=1&token=…" in log
    assert "/push/all" in log
