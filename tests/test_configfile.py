"""Settings from a TOML file (configfile.py, ``--config``, ``pushgate config check``)."""

import json
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from pushgate.config import Config, from_sources
from pushgate.configfile import read_config_file
from pushgate.errors import ConfigError
from pushgate.namespaces import Namespace, Policy
from tests.helpers import UNIT, pushgate_command, server_process

GOOD = """\
ws_port = 8899
max-output-bytes = "2M"
no_compression = true
heartbeat = 5
close_timeout = 2

[namespaces.lobby]
policy = "public"

[namespaces.chat]
policy = "grant"
secret = "a-secret-of-16-characters-or-more"

[namespaces.""]
policy = "server"
"""


def written(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pushgate.toml"
    path.write_text(text)
    return str(path)


def test_a_file_sets_options_by_name_in_their_kind_or_as_text(tmp_path: Path) -> None:
    values = read_config_file(written(tmp_path, GOOD))
    config = from_sources({}, {}, values)
    assert (config.ws_port, config.max_output_bytes, config.no_compression) == (8899, 2**21, True)
    assert (config.heartbeat, config.close_timeout) == (5.0, 2.0)
    namespaces = config.namespace_list
    assert namespaces.of("lobby:1") == Namespace("lobby", Policy.PUBLIC)  # type: ignore[arg-type]
    assert namespaces.of("chat:1").secret == "a-secret-of-16-characters-or-more"  # type: ignore[arg-type]


def test_the_command_line_and_the_environment_override_the_file(tmp_path: Path) -> None:
    values = read_config_file(written(tmp_path, GOOD))
    assert from_sources({"ws_port": 1234}, {}, values).ws_port == 1234
    assert from_sources({}, {"PUSHGATE_WS_PORT": "4321"}, values).ws_port == 4321
    assert from_sources({}, {}, values).ws_port == 8899


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('ws_port = "x"\n', ":1: ws_port: not a whole number: 'x'"),
        ("\n\nnope = 2\n", ":3: 'nope' is not an option of pushgate (see --help)"),
        ("hartbeat = 3\n", ":1: 'hartbeat' is not an option of pushgate; did you mean heartbeat?"),
        ("heartbeat = true\n", ":1: heartbeat must be a number, got a boolean"),
        ("no_compression = 1\n", ":1: no_compression must be true or false, got a number"),
        ("max_message_bytes = 10\n", ":1: --max-message-bytes must be at least 64 bytes"),
        ("namespaces = 3\n", "namespaces must be tables"),
        ('ws_port = 1\n[namespaces.chat]\npolicy = "grant"\nsecret = "short"\n', ":2:"),
        ('[namespaces.chat]\npolicy = "everyone"\n', "must be one of public, grant, server"),
        ('[namespaces.chat]\npolicy = "public"\nmembers = 3\n', "has 'members'; it takes"),
        ('[namespaces.chat]\npolicy = "grant"\nsecret = "a,secret,of,more,than,16"\n', "comma"),
        ("heartbeat = \n", "not valid TOML"),
    ],
)
def test_a_wrong_key_or_value_names_the_file_line_and_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = written(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        Config(**read_config_file(path))  # type: ignore[arg-type]
    assert str(refused.value).startswith(path)
    assert says in str(refused.value)


def test_settings_wrong_together_name_the_file(tmp_path: Path) -> None:
    path = written(tmp_path, "heartbeat = 40\n")
    with pytest.raises(ConfigError, match="--idle-timeout") as refused:
        from_sources({}, {}, read_config_file(path), source=path)
    assert str(refused.value).startswith(path)


def test_config_check_says_good_or_what_is_wrong(tmp_path: Path) -> None:
    good = written(tmp_path, GOOD)
    result = subprocess.run(
        pushgate_command("config", "check", good), capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.strip()) == (
        0,
        f"{good}: good (5 settings, 3 namespaces)",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("ws_port = 1\nheartbeat = 40\n")
    result = subprocess.run(
        pushgate_command("config", "check", str(bad)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"pushgate: {bad}")
    assert "--heartbeat" in result.stderr


async def test_serve_takes_its_namespaces_from_the_file(tmp_path: Path) -> None:
    """serve --config: a public namespace of the file lets a client subscribe itself."""
    path = written(tmp_path, '[namespaces.lobby]\npolicy = "public"\n')
    async with (
        server_process("--config", path) as server,
        connect(server.ws_url, open_timeout=5 * UNIT) as ws,
    ):
        await ws.recv()  # the welcome
        await ws.send('{"type":0,"data":{"op":"subscribe","room":"lobby:1","id":1}}')
        reply = json.loads(await ws.recv())
        assert reply["data"]["ok"] is True


def test_a_namespaces_webhook_may_be_its_own_receivers(tmp_path: Path) -> None:
    """``webhook = "URL"`` (or a list) in a namespace's table: receivers of that
    namespace's events, which also sends its members' messages (+webhook); with a
    top-level namespace_webhooks, both are kept."""
    text = """\
namespace_webhooks = "lobby=http://127.0.0.1:8001/all-lobbies"

[namespaces.chat]
policy = "public"
webhook = ["http://127.0.0.1:8002/chat", "http://127.0.0.1:8003/audit"]

[namespaces.lobby]
policy = "public"
webhook = "http://127.0.0.1:8004/lobby"
"""
    values = read_config_file(written(tmp_path, text))
    assert values["namespace_webhooks"] == (
        "lobby=http://127.0.0.1:8001/all-lobbies,chat=http://127.0.0.1:8002/chat,"
        "chat=http://127.0.0.1:8003/audit,lobby=http://127.0.0.1:8004/lobby"
    )
    config = from_sources({}, {"PUSHGATE_WEBHOOK_SECRET": "w" * 32}, values)
    assert config.namespace_list.of("chat:1").webhook  # type: ignore[arg-type]
    wrong = "[namespaces.chat]\npolicy = 'public'\nwebhook = 'ftp://x'\n"
    with pytest.raises(ConfigError, match=r"webhook .*http:// or https://"):
        read_config_file(written(tmp_path, wrong))
    without_secret = read_config_file(written(tmp_path, text))
    with pytest.raises(ConfigError, match="--webhook-secret"):
        from_sources({}, {}, without_secret)


def test_pusher_apps_come_from_their_tables(tmp_path: Path) -> None:
    """[pusher_apps.ID] tables are --pusher-app and --pusher-webhook: each app's key,
    secret, client events, cap and receivers."""
    path = tmp_path / "pushgate.toml"
    path.write_text(
        "[pusher_apps.4242]\n"
        'key = "app-key"\n'
        'secret = "app-secret-of-16+chars"\n'
        "client_events = true\n"
        "max_connections = 2\n"
        'webhook = ["https://a.example/hooks", "https://b.example/hooks"]\n'
        "[pusher_apps.7]\n"
        'key = "other"\n'
        'secret = "other-secret-of-16+chars"\n'
    )
    values = read_config_file(str(path))
    assert values == {
        "pusher_app": (
            "4242:app-key:app-secret-of-16+chars:client-events:max-connections=2,"
            "7:other:other-secret-of-16+chars"
        ),
        "pusher_webhook": "4242=https://a.example/hooks,4242=https://b.example/hooks",
    }
    apps = Config(**values).pusher_apps  # type: ignore[arg-type]
    app = apps.by_key("app-key")
    assert app is not None
    assert (app.id, app.client_events, app.max_connections) == ("4242", True, 2)


def test_a_pusher_app_table_without_its_secret_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "pushgate.toml"
    path.write_text('ws_port = 8888\n\n[pusher_apps.4242]\nkey = "app-key"\n')
    with pytest.raises(ConfigError, match=r"pushgate.toml:3: \[pusher_apps.4242\] needs a key"):
        read_config_file(str(path))
