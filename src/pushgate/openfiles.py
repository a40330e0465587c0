"""Open files, which every connection is: this process's limit raised as far as it
goes, and how many the WebSocket clients may take, so that they never take the last
one the logic API, the metrics endpoint or the broker needs.
"""

import contextlib

from pushgate.apisite import files_needed
from pushgate.config import Config

# Open files kept from the WebSocket clients, at least (see fd_reserve).
FD_RESERVE = 100
# Of them: standard streams, the event loop's, the listening sockets, the logs.
BASE_FILES = 20
# Connections to the --metrics-address endpoint (a scraper or two, and a person).
METRICS_CONNECTIONS = 8


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to the hard one; return it.

    Each connection is an open file: the default soft limit (often 1,024) would cap
    the gateway long before memory or CPU do.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 0


def connection_cap(config: Config) -> int:
    """--max-connections, or by default the open-file limit less a reserve, so that
    clients can never take the last file the API or the broker needs."""
    if config.max_connections:
        return config.max_connections
    try:
        import resource
    except ImportError:
        return 0
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(1, soft - fd_reserve(config))


def fd_reserve(config: Config) -> int:
    """Open files the WebSocket clients can never take: the logic API's connections
    (capped at --max-api-connections) and the metrics endpoint's, the broker's pool,
    and BASE_FILES; FD_RESERVE at least (what the defaults need, with no Redis)."""
    files = BASE_FILES + files_needed(config.max_api_connections)
    files += files_needed(METRICS_CONNECTIONS)
    if config.clustered:
        from pushgate.broker.redis import MAX_CONNECTIONS

        # A cluster's pool is twice as large, and it adds a subscriber per master.
        files += 3 * MAX_CONNECTIONS if config.redis_cluster else MAX_CONNECTIONS
    return max(FD_RESERVE, files)
