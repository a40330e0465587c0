"""Broker URLs that need more than a prefix check (no ``redis`` import here: the
configuration validates them before any broker is made)."""

from typing import Any
from urllib.parse import unquote, urlsplit

CLUSTER_SCHEME = "redis+cluster://"


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The masters and the connection options of ``redis+cluster://[user:pass@]h:p,h:p``.

    Raises ValueError naming what is wrong.
    """
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"{url!r} does not start with {CLUSTER_SCHEME}")
    parts = urlsplit("redis://" + url[len(CLUSTER_SCHEME) :])
    options: dict[str, Any] = {}
    hosts = parts.netloc
    if "@" in hosts:
        userinfo, hosts = hosts.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0")
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{item!r} is not HOST:PORT")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, options
