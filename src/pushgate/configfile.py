"""Settings from a TOML file (``--config FILE``): every option the command line has,
by its name, a table of namespaces, and one of Pusher apps.

::

    # pushgate.toml
    ws_port = 8888
    max_connections_per_ip = 100
    allowed_origins = "https://app.example"

    [namespaces.lobby]          # rooms lobby:*
    policy = "public"

    [namespaces.chat]           # rooms chat:*
    policy = "grant"
    secret = "a-secret-of-16-characters-or-more"

    [namespaces.""]             # the default namespace: rooms without a ':'
    policy = "server"

    [pusher_apps.4242]          # a Pusher app (docs/pusher.md): its id, then its options
    key = "app-key"
    secret = "app-secret-of-16+chars"
    client_events = true        # default false
    max_connections = 10000     # on each gateway; default 0, no cap of its own
    webhook = "https://app.example/pusher/webhook"   # or a list of URLs

A name may be written with ``_`` or ``-``. A value is of the option's kind (a number,
``true``/``false`` for a flag, a string), or a string read as the command line reads
it (``max_output_bytes = "1M"``). The command line and the environment override the
file. A wrong key or value is a :class:`~pushgate.errors.ConfigError` naming the
file, the line and the key.
"""

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from pushgate.config import OPTIONS, Option, default_of
from pushgate.configchecks import namespace_webhook_specs, pusher_webhook_specs
from pushgate.errors import ConfigError
from pushgate.namespaces import parse_namespace
from pushgate.pusherapps import parse_app

NAMESPACE_KEYS = ("policy", "secret", "publish", "presence", "webhook")
_BY_NAME = {option.name: option for option in OPTIONS}


def read_config_file(path: str) -> dict[str, object]:
    """The option values a config file sets, checked one by one (the checks across
    settings run when the Config is made). Raises ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = text.splitlines()
    values: dict[str, object] = {}
    table_hooks = ""
    apps_given: tuple[str, str] | None = None
    for key, value in data.items():
        where = f"{path}:{_line_of(lines, key)}"
        if key == "namespaces":
            values["namespaces"], table_hooks = _namespaces(path, lines, value)
            continue
        if key == "pusher_apps":
            apps_given = _pusher_apps(path, lines, value)
            continue
        option = _BY_NAME.get(key.replace("-", "_"))
        if option is None or option.name in ("namespaces", "pusher_app", "pusher_webhook"):
            close = difflib.get_close_matches(key.replace("-", "_"), _BY_NAME, n=1)
            hint = f"; did you mean {close[0]}?" if close else " (see --help)"
            raise ConfigError(f"{where}: {key!r} is not an option of pushgate{hint}")
        values[option.name] = _value(where, option, value)
    if table_hooks:  # both ways of naming them: the top-level option's, then the tables'
        given = values.get("namespace_webhooks")
        values["namespace_webhooks"] = f"{given},{table_hooks}" if given else table_hooks
    if apps_given is not None:
        values["pusher_app"], values["pusher_webhook"] = apps_given
    return values


def _value(where: str, option: Option, value: object) -> object:
    default = default_of(option.name)
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = option.read(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {option.name}: {exc}") from None
    elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
        value, _kinds(default)
    ):
        raise ConfigError(
            f"{where}: {option.name} must be {_kind_name(default)}, got {_toml_kind(value)}"
        )
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    try:
        option.check(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value


def _namespaces(path: str, lines: list[str], tables: object) -> tuple[str, str]:
    """The ``[namespaces.NAME]`` tables, as --namespaces writes them, and their
    webhook URLs as --namespace-webhooks does (``webhook = "URL"`` or a list of URLs:
    the namespace's own receivers, and its members' messages sent to webhooks)."""
    if not isinstance(tables, dict):
        where = f"{path}:{_line_of(lines, 'namespaces')}"
        raise ConfigError(f"{where}: namespaces must be tables: [namespaces.NAME]")
    specs, hooks = [], []
    for name, table in tables.items():
        where = f"{path}:{_table_line(lines, name)}"
        table = _table(where, f"[namespaces.{name}]", table, NAMESPACE_KEYS)
        policy, secret = table.get("policy", "server"), table.get("secret")
        if not isinstance(policy, str) or (secret is not None and not isinstance(secret, str)):
            raise ConfigError(f"{where}: [namespaces.{name}] policy and secret are strings")
        urls = table.get("webhook", False)
        if isinstance(urls, str):
            urls = [urls]
        if isinstance(urls, list):
            if not urls or not all(isinstance(url, str) for url in urls):
                raise ConfigError(
                    f"{where}: [namespaces.{name}] webhook is true, false, a URL or a list of URLs"
                )
            hooks += [f"{name}={url}" for url in urls]
        flags = ""
        for flag in ("publish", "presence", "webhook"):
            said = table.get(flag, False)
            if flag == "webhook" and isinstance(said, list | str):
                said = True
            if not isinstance(said, bool):
                raise ConfigError(f"{where}: [namespaces.{name}] {flag} is true or false")
            flags += f"+{flag}" if said else ""
        if secret is not None and "," in secret:
            raise ConfigError(f"{where}: [namespaces.{name}] secret may not hold a comma")
        spec = f"{name}={policy}{flags}"
        spec += f":{secret}" if secret is not None else ""
        try:
            parse_namespace(spec)
        except ValueError as exc:
            raise ConfigError(f"{where}: [namespaces.{name}]: {exc}") from None
        specs.append(spec)
    joined = ",".join(hooks)
    if joined:
        problem = namespace_webhook_specs(joined)
        if problem is not None:
            raise ConfigError(f"{path}: a namespace's webhook {problem.partition(': ')[2]}")
    return ",".join(specs), joined


PUSHER_APP_KEYS = ("key", "secret", "client_events", "max_connections", "webhook")


def _pusher_apps(path: str, lines: list[str], tables: object) -> tuple[str, str]:
    """The ``[pusher_apps.ID]`` tables, as --pusher-app and --pusher-webhook write them."""
    where = f"{path}:{_line_of(lines, 'pusher_apps')}"
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: pusher_apps must be tables: [pusher_apps.ID]")
    specs, hooks = [], []
    for app_id, table in tables.items():
        name = f"[pusher_apps.{app_id}]"
        table = _table(where, name, table, PUSHER_APP_KEYS)
        key, secret = table.get("key"), table.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            raise ConfigError(f"{where}: {name} needs a key and a secret (strings)")
        events, most = table.get("client_events", False), table.get("max_connections", 0)
        if not isinstance(events, bool):
            raise ConfigError(f"{where}: {name} client_events is true or false")
        if isinstance(most, bool) or not isinstance(most, int) or most < 0:
            raise ConfigError(f"{where}: {name} max_connections is a number, 0 or more")
        spec = f"{app_id}:{key}:{secret}" + (":client-events" if events else "")
        spec += f":max-connections={most}" if most else ""
        try:
            parse_app(spec)
        except ValueError as exc:
            raise ConfigError(f"{where}: {name}: {exc}") from None
        specs.append(spec)
        urls = table.get("webhook", [])
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            raise ConfigError(f"{where}: {name} webhook is a URL or a list of URLs")
        hooks += [f"{app_id}={url}" for url in urls]
    joined = ",".join(hooks)
    problem = pusher_webhook_specs(joined)
    if problem is not None:
        raise ConfigError(f"{where}: a Pusher app's webhook {problem.partition(' ')[2]}")
    return ",".join(specs), joined


def _table(where: str, name: str, table: object, keys: tuple[str, ...]) -> dict[str, Any]:
    """``table`` (the one called ``name``), once it is a table of only ``keys``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {name} must be a table")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: {name} has {unknown[0]!r}; it takes {', '.join(keys)}")
    return table


def _line_of(lines: list[str], key: str) -> int:
    """The line (from 1) where ``key`` is set at the top of the file (0: not found)."""
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*[=.\[]")
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("["):
            break  # past the top-level keys
        if pattern.match(line):
            return number
    if key == "pusher_apps":
        found = (n for n, line in enumerate(lines, 1) if line.strip().startswith("[pusher_apps"))
        return next(found, 0)
    return _table_line(lines, key) if key == "namespaces" else 0


def _table_line(lines: list[str], name: str) -> int:
    header = re.compile(
        rf"^\s*\[\s*namespaces\s*\.\s*(?:{re.escape(name)}|\"{re.escape(name)}\")\s*\]"
    )
    for number, line in enumerate(lines, 1):
        if header.match(line) or (name == "namespaces" and line.strip().startswith("[namespaces")):
            return number
    return 0


def _kinds(default: object) -> tuple[type, ...]:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    return (type(default),)


def _kind_name(default: object) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int | float):
        return "a number"
    return "a string"


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
