"""Broker URLs that need more than a prefix check (no ``redis`` import here: the
configuration validates them before any broker is made)."""

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

CLUSTER_SCHEME = "redis+cluster://"
TLS_CLUSTER_SCHEME = "rediss+cluster://"
CLUSTER_SCHEMES = (CLUSTER_SCHEME, TLS_CLUSTER_SCHEME)

# Query parameters of a rediss+cluster:// URL, as redis-py names them for rediss://.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
CERT_REQS = ("none", "optional", "required")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The masters and the connection options of
    ``redis+cluster://[user:pass@]h:p,h:p`` (``rediss+cluster://`` for TLS, with
    ``?ssl_ca_certs=PATH`` and the other ``TLS_OPTIONS`` as query parameters).

    Raises ValueError naming what is wrong.
    """
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"{url!r} does not start with {' or '.join(CLUSTER_SCHEMES)}")
    parts = urlsplit("redis://" + url[len(scheme) :])
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
    query = dict(parse_qsl(parts.query))
    if scheme == TLS_CLUSTER_SCHEME:
        options["ssl"] = True
        for name, value in query.items():
            if name not in TLS_OPTIONS:
                raise ValueError(f"unknown option {name!r}: use {', '.join(TLS_OPTIONS)}")
            if name == "ssl_cert_reqs" and value not in CERT_REQS:
                raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
            options[name] = value
    elif query:
        raise ValueError(f"options {sorted(query)} need TLS: {TLS_CLUSTER_SCHEME}")
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{item!r} is not HOST:PORT")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, options
