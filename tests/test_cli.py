"""The ``pushgate`` command, run as a user runs it: in its own process."""

import asyncio
import dataclasses
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pushgate.cli import SERVE_EPILOG, main
from pushgate.config import OPTIONS, Config, Group
from tests.helpers import (
    API_PORT,
    LOOPBACK,
    UNIT,
    WS_PORT,
    close_code_of,
    free_port,
    open_client,
    pushgate_command,
    recv_json,
    server_process,
    without_position,
)


async def curl(line: str) -> str:
    """Run a curl command line exactly as written (a shell parses the quotes). A
    machine without curl fails the test, never skips it: scripts/test installs it."""
    assert shutil.which("curl") is not None, "curl is not installed (scripts/test installs it)"
    process = await asyncio.create_subprocess_shell(
        line, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 10 * UNIT)
    assert process.returncode == 0, err
    return out.decode()


async def test_the_blogs_four_curl_lines_work() -> None:
    """The blog's curl lines, verbatim but for the port, do what the blog says;
    the wsId comes from the welcome frame."""
    async with server_process() as server:
        ws, ws_id = await open_client(server.ws_url)
        api = f"http://0.0.0.0:{server.api_port}"

        out = await curl(f'curl  {api}/push/all -X POST -d "val=test push&tag=3"')
        assert out == '{"ok":true,"delivered":1}\n'
        # The seed's frame, plus its position in the stream (which seed clients ignore).
        frame = await ws.recv()
        assert without_position(frame) == '{"type":3,"data":"test push"}\n'
        assert '"seq":1,' in frame

        out = await curl(f'curl {api}/room/join -X POST -d "id=1&wsId={ws_id}"')
        assert '"ok":true' in out

        out = await curl(f'curl  {api}/push/room -X POST -d "val=test push&tag=3&id=1"')
        assert out == '{"ok":true,"room":"1","delivered":1}\n'
        assert await recv_json(ws) == {"type": 3, "data": "test push", "room": "1"}

        out = await curl(f'curl {api}/room/leave -X POST -d "id=1&wsId={ws_id}"')
        assert '"wasMember":true' in out
        out = await curl(f'curl  {api}/push/room -X POST -d "val=test push&tag=3&id=1"')
        assert out == '{"ok":true,"room":"1","delivered":0}\n'
        await ws.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_drains_every_connection_with_1012_and_exits_0(sig: int) -> None:
    """SIGTERM or SIGINT: clients get a 1012 (service restart: resume elsewhere) close
    frame within the drain, and the process exits 0, as `serve --help` says."""
    async with server_process("--drain-seconds", "0.5") as server:
        clients = [await open_client(server.ws_url) for _ in range(3)]
        assert await server.stop(sig) == 0
        for ws, _ in clients:
            assert await close_code_of(ws) == 1012
        assert any("stopped" in line for line in server.log)
    said = " ".join(SERVE_EPILOG.split())
    assert "closes every connection with 1012" in said
    assert "1001" not in said


async def test_options_can_come_from_the_environment() -> None:
    """PUSHGATE_HEARTBEAT sets the heartbeat announced in the welcome frame."""
    env = {"PUSHGATE_HEARTBEAT": "7", "PUSHGATE_IDLE_TIMEOUT": "20"}
    async with server_process(env=env) as server, connect(server.ws_url) as ws:
        welcome = await recv_json(ws)
    assert welcome["data"]["heartbeat"] == 7


@pytest.mark.parametrize(
    ("args", "env", "warned"),
    [
        (["--api-key", "k-on-argv"], {}, ["--api-key", "PUSHGATE_API_KEY"]),
        (
            ["--api-key=k-on-argv", "--token-secret", "s-on-argv-of-at-least-32-bytes!!"],
            {},
            ["--api-key and --token-secret", "PUSHGATE_API_KEY and PUSHGATE_TOKEN_SECRET"],
        ),
        (
            [],
            {"PUSHGATE_API_KEY": "k-in-env", "PUSHGATE_TOKEN_SECRET": "s" * 32},
            [],
        ),
    ],
)
async def test_secrets_on_the_command_line_are_warned_of(
    args: list[str], env: dict[str, str], warned: list[str]
) -> None:
    """A secret given as an argument shows in the process list: one warning names the
    option and the variable to use instead; a secret from the environment, none."""
    async with server_process(*args, env=env) as server:
        pass
    warnings = [line for line in server.log if "process list" in line]
    if not warned:
        assert warnings == []
        return
    [warning] = warnings
    assert "WARNING" in warning
    for words in warned:
        assert words in warning
    assert "on-argv" not in warning


@pytest.mark.parametrize("busy", ["gateway", "logic API"])
async def test_a_port_in_use_is_one_line_and_exit_1(busy: str) -> None:
    """Starting on a busy port says which server and why, in one line, with no
    traceback, and nothing about connections: none was open (the gateway, started
    before the logic API found its port busy, stops with no "0 connections did not
    close")."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = ["--ws-port", port, "--api-port", "0"]
        if busy == "logic API":
            ports = ["--ws-port", "0", "--api-host", LOOPBACK, "--api-port", port]
        process = await asyncio.create_subprocess_exec(
            *pushgate_command("serve", "--ws-host", LOOPBACK, *ports),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 15 * UNIT)
    assert process.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"pushgate: cannot listen on {LOOPBACK}:{port} for the {busy}: Address already in use"
    ]


async def test_serve_with_redis_unreachable_says_it_started_but_is_not_ready() -> None:
    """A Redis that does not answer is no reason to refuse to start (the node catches
    up once it answers), but the start line must not say "ready": it says started,
    not ready, and why; /readyz agrees."""
    down = f"redis://{LOOPBACK}:{free_port()}/0"
    async with server_process("--broker", down) as server:
        said = next(line for line in server.log if " ready: " in line)
        async with aiohttp.ClientSession() as http:
            readyz = await http.get(f"http://{LOOPBACK}:{server.api_port}/readyz")
    assert "pushgate" in said
    assert "serve started, not ready: Redis unreachable; gateway ws://" in said
    assert "serve ready:" not in "".join(server.log)
    assert readyz.status == 503


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["serve", "--max-body-bytes", "lots"],
            "pushgate serve: --max-body-bytes: not a size in bytes: 'lots'",
        ),
        (["serve", "--heartbeat", "abc"], "pushgate serve: --heartbeat: not a number: 'abc'"),
        (["serve", "--workers", "x"], "pushgate serve: --workers: not auto or a number: 'x'"),
        (
            ["serve", "--ws-prot", "8080"],
            "pushgate serve: unknown option --ws-prot; did you mean --ws-port?",
        ),
        (["serv"], "pushgate: unknown command 'serv'; did you mean serve?"),
        (
            ["push", "all", "hi", "--tga", "3"],
            "pushgate push all: unknown option --tga; did you mean --tag?",
        ),
        (["serve", "8080"], "pushgate serve: unexpected argument '8080'"),
        (
            ["gateway", "--broker", "memory://", "--api-port", "9000"],
            "pushgate gateway: --api-port is not an option of pushgate gateway: only serve "
            "and logic read it",
        ),
        (
            ["logic", "--broker", "memory://", "--ws-port=8080"],
            "pushgate logic: --ws-port is not an option of pushgate logic: only serve and "
            "gateway read it",
        ),
    ],
)
def test_a_usage_error_is_one_line_without_the_usage_block(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong command, option or value is one line in words (no usage block, no
    Python function name), with the closest command or option when one is close,
    and where to read more; exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    command = line.split(":", 1)[0]
    assert capsys.readouterr().err.splitlines() == [f"{line} (see {command} --help)"]


def test_each_roles_help_lists_only_the_options_it_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gateway --help` has no logic API options, `logic --help` no gateway ones;
    both have what they share (the broker), `serve --help` has them all."""
    helps = {}
    for role in ("serve", "gateway", "logic"):
        with pytest.raises(SystemExit):
            main([role, "--help"])
        listed = _help_sections(capsys.readouterr().out).values()
        helps[role] = [flag for flags in listed for flag in flags]
    gateway_only = ["--ws-port", "--heartbeat", "--token-secret", "--workers", "--connect-hook"]
    logic_only = ["--api-port", "--api-key", "--control-timeout", "--max-body-bytes"]
    for flag in [*gateway_only, *logic_only, "--broker", "--log-format"]:
        assert flag in helps["serve"], flag
    for flag in gateway_only:
        assert (flag in helps["gateway"], flag in helps["logic"]) == (True, False), flag
    for flag in logic_only:
        assert (flag in helps["gateway"], flag in helps["logic"]) == (False, True), flag
    for role in ("gateway", "logic"):
        assert "--broker" in helps[role]


@pytest.mark.parametrize("role", ["gateway", "logic"])
def test_a_gateway_or_logic_node_without_a_broker_is_refused(
    role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alone on memory:// a gateway reaches no logic node, and a logic node no
    gateway (a push would answer delivered: 0): refused, in one line, exit 2."""
    assert main([role]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pushgate {role}: no --broker: on memory://")
    assert "--broker redis://HOST:PORT/DB" in line
    assert "--broker memory://" in line


@pytest.mark.parametrize(
    ("role", "args", "env"),
    [
        ("gateway", ["--broker", "memory://"], {}),
        ("logic", [], {"PUSHGATE_BROKER": "memory://"}),
    ],
)
async def test_a_node_alone_on_memory_starts_when_asked_for(
    role: str, args: list[str], env: dict[str, str]
) -> None:
    """--broker memory:// (or PUSHGATE_BROKER) says it is meant: the node starts."""
    async with server_process(*args, env=env, role=role) as server:
        assert any(f"{role} ready: " in line for line in server.log)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["serve", "--ws-port", "70000"], {}, "--ws-port must be a port"),
        (["serve", "--heartbeat", "30", "--idle-timeout", "20"], {}, "--idle-timeout"),
        (["serve"], {"PUSHGATE_MAX_BODY_BYTES": "lots"}, "PUSHGATE_MAX_BODY_BYTES"),
        (["serve", "--broker", "kafka://x"], {}, "--broker"),
        (["serve", "--broker", "redis+cluster://h:1,h"], {}, "'h' is not HOST:PORT"),
        (["serve", "--broker", "redis+cluster://h:1/2"], {}, "only database 0"),
        (["serve", "--broker", "rediss+cluster://h:1?bogus=1"], {}, "unknown option 'bogus'"),
        (["serve", "--broker", "redis+cluster://h:1?ssl_ca_certs=ca"], {}, "need TLS"),
        (
            ["serve", "--broker", "redis+cluster://h:1", "--prefix", "{a}:"],
            {},
            "--prefix may not hold { or }",
        ),
        (
            ["serve"],
            {"PUSHGATE_TOKEN_SECRET": "0123456789abcdef0123456789abcde"},
            "--token-secret must be at least 32 bytes, got 31",
        ),
        (
            ["serve", "--token-secret", "short"],
            {},
            "--token-secret must be at least 32 bytes, got 5",
        ),
        (["serve"], {"PUSHGATE_HEARTBEAT": "abc"}, "PUSHGATE_HEARTBEAT='abc': not a number"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A setting pushgate cannot use is named in one line on stderr; exit status 2."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err


def test_serve_help_documents_every_option_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pushgate serve --help` lists every option with its default and environment variable."""
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option.flag in text
        assert option.env in text
    for flag in ("--ws-host", "--ws-port", "--api-host", "--api-port", "--heartbeat"):
        assert flag in text


def test_version_runs_as_a_module() -> None:
    """`python -m pushgate --version` prints the version."""
    result = subprocess.run(
        pushgate_command("--version"), capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("pushgate ")


async def test_the_readmes_python_example_runs() -> None:
    """README's Python client example, pointed at a real server, receives its push."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.S)
    assert match is not None
    async with server_process() as server:
        code = (
            match.group(1)
            .replace("127.0.0.1:8888", f"127.0.0.1:{server.ws_port}")
            .replace("127.0.0.1:9999", f"127.0.0.1:{server.api_port}")
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 15 * UNIT)
    assert process.returncode == 0, err.decode()
    assert "3 news {'headline': 'pushgate works'}" in out.decode()


async def test_clients_cannot_take_the_last_open_file(http: aiohttp.ClientSession) -> None:
    """Under an open-file limit of 160, the gateway accepts 60 connections and refuses
    the rest with 503, and the logic API still has files to answer with."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    process = await asyncio.create_subprocess_exec(
        *pushgate_command("serve", "--ws-host", LOOPBACK, "--ws-port", "0", "--api-port", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=low_limit,
    )
    assert process.stderr is not None
    clients = []
    try:
        lines: list[str] = []
        async with asyncio.timeout(15 * UNIT):
            while not any("accepting up to" in line for line in lines):
                lines.append((await process.stderr.readline()).decode())
                assert lines[-1], "pushgate exited:\n" + "".join(lines)
        assert "accepting up to 60 WebSocket connections" in lines[-1]
        ready = next(line for line in lines if " ready: " in line)
        ws_port, api_port = WS_PORT.search(ready), API_PORT.search(ready)
        assert ws_port is not None
        assert api_port is not None
        url = f"ws://{LOOPBACK}:{ws_port.group(1)}/connect"
        refusals = []
        for _ in range(80):
            try:
                clients.append((await open_client(url))[0])
            except InvalidStatus as exc:
                refusals.append(exc.response.status_code)
        assert (len(clients), refusals) == (60, [503] * 20)
        async with http.get(f"http://{LOOPBACK}:{api_port.group(1)}/stats") as response:
            assert response.status == 200
            assert (await response.json())["connections"] == 60
    finally:
        for ws in clients:
            await ws.close()
        process.terminate()
        await process.wait()


def test_every_config_field_is_an_option_with_help_and_a_group() -> None:
    """Each Config field is declared with option() or flag(): help text, a metavar
    (or no value at all), and a --help group; OPTIONS follows the fields' order."""
    fields = dataclasses.fields(Config)
    assert [option.name for option in OPTIONS] == [field.name for field in fields]
    for option in OPTIONS:
        assert option.help.strip(), option.name
        assert option.flag_only or option.metavar, option.name
        assert option.flag_only == (option.metavar == ""), option.name
        assert isinstance(option.group, Group), option.name


def test_every_option_is_in_exactly_one_help_group(capsys: pytest.CaptureFixture[str]) -> None:
    """`pushgate serve --help` shows each option once, under its own group's title,
    and shows no group without options."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    sections = _help_sections(out[: out.index(SERVE_EPILOG.splitlines()[0])])
    assert list(sections) == ["options", *(group.value for group in Group)]
    for option in OPTIONS:
        holding = [title for title, flags in sections.items() if option.flag in flags]
        assert holding == [option.group.value], option.flag
        assert sections[option.group.value].count(option.flag) == 1, option.flag


def _help_sections(text: str) -> dict[str, list[str]]:
    """The flags --help lists under each section title (``text``: --help without its
    epilog; the usage, before the first blank line, is skipped)."""
    sections: dict[str, list[str]] = {}
    flags: list[str] = []
    for line in text.split("\n\n", 1)[1].splitlines():
        if line.endswith(":") and not line.startswith(" "):
            flags = sections.setdefault(line[:-1], [])
        elif line.startswith("  -"):
            flags.extend(word.rstrip(",") for word in line.split()[:2] if word.startswith("-"))
    return sections
