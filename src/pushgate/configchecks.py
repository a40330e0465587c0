"""The checks of one setting's value, and the readers of its text (an environment
variable, an argument, a config file's string), for config.py's table of settings.

Pure: no I/O but ``empty_or_readable_file``'s look at the file system.
"""

import os
from collections.abc import Callable
from typing import Any

from pushgate.broker.urls import CLUSTER_SCHEMES, parse_cluster_url
from pushgate.hookverdict import is_http_url
from pushgate.namespaces import parse_namespace
from pushgate.pusherapps import parse_apps
from pushgate.security import short_secret

# What --webhook receivers may be told (client_message: where a namespace asks).
WEBHOOK_EVENTS = (
    "session_started",
    "session_ended",
    "room_occupied",
    "room_vacated",
    "member_joined",
    "member_left",
)
KIB = 1024
MIB = 1024 * KIB
BROKER_SCHEMES = ("memory://", "redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)

# -- Checks of one value ------------------------------------------------------------
# A check returns what is wrong with a value, worded to follow the option's flag
# ("must be ...", "may hold ..."), or None when the value is fine.

Check = Callable[[Any], str | None]


def must_be(ok: Callable[[Any], bool], wanted: str) -> Check:
    """A check that answers "must be <wanted>" for a value ``ok`` refuses."""

    def check(value: Any) -> str | None:
        return None if ok(value) else f"must be {wanted}"

    return check


def at_least(least: int, unit: str = "") -> Check:
    """A number of ``least`` or more (of ``unit``, when the message should say it)."""
    return must_be(lambda value: value >= least, f"at least {least} {unit}".rstrip())


def zero_or_more(zero_means: str) -> Check:
    """A number that may be 0, which means ``zero_means`` ("no limit"), or more."""
    return must_be(lambda value: value >= 0, f"0 ({zero_means}) or more")


def one_of(*choices: str) -> Check:
    """One of a few words, the two of a pair named as "a or b"."""
    wanted = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
    return must_be(lambda value: value in choices, wanted)


positive_seconds = must_be(lambda seconds: seconds > 0, "more than 0 seconds")
non_negative_seconds = must_be(lambda seconds: seconds >= 0, "0 seconds or more")


def _specs(text: str) -> list[str]:
    return [spec.strip() for spec in text.split(",") if spec.strip()]


def namespace_specs(text: str) -> str | None:
    """Namespaces as --namespaces takes them, each named once."""
    names = []
    for spec in _specs(text):
        try:
            names.append(parse_namespace(spec).name)
        except ValueError as exc:
            return f"has a wrong namespace: {exc}"
    if len(set(names)) < len(names):
        return "names a namespace twice"
    return None


def empty_or_readable_file(path: str) -> str | None:
    """No file, or one this process can read."""
    if path and not os.access(path, os.R_OK):
        return f"names {path!r}, which cannot be read"
    return None


def pusher_app_specs(text: str) -> str | None:
    """Pusher apps as --pusher-app takes them."""
    try:
        parse_apps(text)
    except ValueError as exc:
        return f"has a wrong app: {exc}"
    return None


def pusher_webhook_specs(text: str) -> str | None:
    """ID=URL pairs, each URL http(s)."""
    for spec in _specs(text):
        app_id, equals, url = spec.partition("=")
        if not equals or not app_id.strip():
            return f"must be ID=URL pairs, got {spec!r}"
        if not is_http_url(url.strip()):
            return f"needs an http:// or https:// URL for {app_id.strip()}, got {url.strip()!r}"
    return None


def port(value: int) -> str | None:
    """A TCP port; 0 lets the system pick a free one."""
    return None if 0 <= value <= 65535 else f"must be a port from 0 to 65535, got {value}"


def hmac_secret(value: str) -> str | None:
    """An HS256 secret of at least 32 bytes, or none ("")."""
    return short_secret(value) if value else None


def host_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); None when it is not that."""
    host, colon, number = address.rpartition(":")
    if not colon or not host or not number.isdigit() or int(number) > 65535:
        return None
    return host.strip("[]"), int(number)


def webhook_urls(text: str) -> str | None:
    """Receivers of webhooks: http:// or https:// URLs with a host, each once."""
    urls = _specs(text)
    for url in urls:
        if not is_http_url(url):
            return f"must be http:// or https:// URLs, got {url!r}"
    if len(set(urls)) < len(urls):
        return "names a URL twice"
    return None


def namespace_webhook_specs(text: str) -> str | None:
    """NAME=URL items: a namespace's name ("" for the default one) and a receiver."""
    for spec in _specs(text):
        name, equals, url = spec.partition("=")
        if not equals:
            return f"must be NAME=URL items, got {spec!r}"
        problem = webhook_urls(url)
        if problem is not None:
            return f"has a wrong URL for namespace {name.strip()!r}: {problem}"
    return None


def webhook_event_names(text: str) -> str | None:
    """Names of webhook events, known ones only."""
    for name in _specs(text):
        if name not in WEBHOOK_EVENTS:
            return f"names an unknown event {name!r}: the events are {', '.join(WEBHOOK_EVENTS)}"
    return None


def empty_or_host_port(address: str) -> str | None:
    """Nothing (not served), or an address to serve on."""
    if address and host_port(address) is None:
        return f"must be HOST:PORT, got {address!r}"
    return None


def console_gateway_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT``, or ``:PORT`` (HOST "": the host the page was loaded from), as
    (host, port); None when it is neither."""
    if address.startswith(":"):
        number = address[1:]
        return ("", int(number)) if number.isdigit() and int(number) <= 65535 else None
    return host_port(address)


def empty_or_console_gateway(address: str) -> str | None:
    """Nothing (the default), or HOST:PORT or :PORT."""
    if address and console_gateway_address(address) is None:
        return f"must be HOST:PORT or :PORT, got {address!r}"
    return None


def broker_url(url: str) -> str | None:
    """A URL of a broker pushgate has, and for a Redis Cluster one that parses, so
    that a wrong URL is told at start rather than when the broker is made."""
    if not url.startswith(BROKER_SCHEMES):
        return (
            f"{url!r} is not supported: use memory://, "
            "redis://HOST:PORT/DB (rediss:// for TLS, unix:///path for a socket) or "
            "redis+cluster://HOST:PORT,HOST:PORT (rediss+cluster:// for TLS)"
        )
    if url.startswith(CLUSTER_SCHEMES):
        try:
            parse_cluster_url(url)
        except ValueError as exc:
            return f"{url!r}: {exc}"
    return None


def node_name(text: str) -> str | None:
    """Empty (a random name), or a name fit for Redis keys and log lines."""
    if text and not text.replace("-", "").replace("_", "").isalnum():
        return "may hold letters, digits, - and _ only"
    return None


# -- Reading a setting's text (an environment variable or an argument) --------------


def parse_bool(text: str) -> bool:
    """An environment variable's yes or no: 1/true/yes/on or 0/false/no/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes or no: {text!r}")


def parse_workers(text: str) -> int:
    """A number of processes, or ``auto`` (0: one per CPU)."""
    value = text.strip().lower()
    if value == "auto":
        return 0
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"not auto or a number: {text!r}") from None
    if count < 1:
        raise ValueError(f"not auto or a number of processes, 1 or more: {text!r}")
    return count


def parse_size(text: str) -> int:
    """Bytes, with an optional K/KiB or M/MiB suffix: ``4096``, ``64K``, ``4MiB``."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if value.endswith("K"):
        scale, value = KIB, value[:-1]
    elif value.endswith("M"):
        scale, value = MIB, value[:-1]
    try:
        return int(value) * scale
    except ValueError:
        raise ValueError(f"not a size in bytes: {text!r}") from None
