"""The settings of where and how pushgate runs: where to listen, its processes, the
cluster, sessions and recovery, heartbeat, timeouts and stopping. The first fields
of :class:`~pushgate.config.Config` (config.py says how a setting is declared)."""

from dataclasses import dataclass

from pushgate.configchecks import (
    MIB,
    broker_url,
    empty_or_console_gateway,
    empty_or_readable_file,
    must_be,
    node_name,
    non_negative_seconds,
    parse_size,
    parse_workers,
    port,
    positive_seconds,
    zero_or_more,
)
from pushgate.configoptions import GATEWAY, LOGIC, Group, flag, option


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where to listen, processes, cluster, sessions and recovery, timeouts."""

    ws_host: str = option(
        "0.0.0.0",
        "address the WebSocket gateway listens on",
        metavar="HOST",
        group=Group.LISTEN,
        roles=GATEWAY,
    )
    ws_port: int = option(
        8888,
        "port of the gateway; clients connect to ws://HOST:PORT/connect",
        metavar="PORT",
        group=Group.LISTEN,
        check=port,
        roles=GATEWAY,
    )
    api_host: str = option(
        "127.0.0.1",
        "address the logic HTTP API listens on (keep it private)",
        metavar="HOST",
        group=Group.LISTEN,
        roles=LOGIC,
    )
    api_port: int = option(
        9999,
        "port of the logic HTTP API",
        metavar="PORT",
        group=Group.LISTEN,
        check=port,
        roles=LOGIC,
    )
    console_gateway: str = option(
        "",
        "the gateway the console page (GET / on the API) connects to, HOST:PORT (HOST "
        "empty: the host the page was loaded from); default: serve's own gateway, or "
        "this host's port 8888 for a logic node alone",
        metavar="HOST:PORT",
        group=Group.LISTEN,
        check=empty_or_console_gateway,
        roles=LOGIC,
    )
    tls_cert: str = option(
        "",
        "serve TLS with this certificate chain (PEM): clients connect to wss://, the API "
        "answers https:// (a reverse proxy in front is the other way: docs/operations.md)",
        metavar="FILE",
        group=Group.LISTEN,
        check=empty_or_readable_file,
    )
    tls_key: str = option(
        "",
        "the private key (PEM) of --tls-cert",
        metavar="FILE",
        group=Group.LISTEN,
        check=empty_or_readable_file,
    )
    workers: int = option(  # 0: one per CPU ("auto")
        1,
        "gateway processes sharing the WebSocket port (serve and gateway; auto: one per "
        "CPU). More than 1 runs a supervisor that restarts a worker that dies; they share "
        "--broker, or a private redis-server it starts when none is given (see "
        "docs/scaling.md)",
        metavar="N",
        group=Group.PROCESSES,
        parse=parse_workers,
        check=must_be(lambda n: n >= 0, "auto or a number of processes, 1 or more"),
        roles=GATEWAY,
    )
    reuse_port: bool = flag(
        "listen with SO_REUSEPORT, so that several gateways share the WebSocket port "
        "(--workers sets it)",
        group=Group.PROCESSES,
        roles=GATEWAY,
    )
    broker: str = option(
        "memory://",
        "message broker: memory:// keeps everything in this process; redis://HOST:PORT/DB "
        "joins the cluster that shares that Redis (or Valkey); "
        "redis+cluster://HOST:PORT,HOST:PORT spreads topics over the shards of a "
        "Redis Cluster (Redis 7 or later, sharded pub/sub; rediss+cluster:// for TLS, "
        "?ssl_ca_certs=PATH for a private CA)",
        metavar="URL",
        group=Group.CLUSTER,
        check=broker_url,
    )
    # --prefix is checked with the broker, in _between_settings.
    prefix: str = option(
        "pushgate:",
        "prefix of every Redis key and channel; one per cluster",
        metavar="TEXT",
        group=Group.CLUSTER,
    )
    node_id: str = option(
        "",
        "this node's name in the cluster (default: random)",
        metavar="ID",
        group=Group.CLUSTER,
        check=node_name,
    )
    node_ttl: float = option(
        10.0,
        "a node that stops refreshing its Redis entries (killed) is forgotten after this, "
        "and the wsIds it held stop resolving",
        metavar="SECONDS",
        group=Group.CLUSTER,
        check=positive_seconds,
    )
    unfollow_after: float = option(
        10.0,
        "on a cluster (a Redis broker), a gateway keeps receiving a room's (or user's) "
        "pushes this long after its last member there left, so that a client that "
        "comes back (a reconnect, a resume) finds the room followed and is caught up "
        "from the gateway's memory instead of a history read; 0 lets go at once",
        metavar="SECONDS",
        group=Group.CLUSTER,
        check=zero_or_more("at once"),
        roles=GATEWAY,
    )
    control_timeout: float = option(
        2.0,
        "time a logic node waits for the gateway holding a wsId to answer a join or leave",
        metavar="SECONDS",
        group=Group.CLUSTER,
        check=positive_seconds,
        roles=LOGIC,
    )
    history_size: int = option(
        100,
        "pushes each stream (all, a room, a user) keeps for clients that resume; "
        "0 turns history, positions and recovery off (see docs/recovery.md)",
        metavar="N",
        group=Group.RECOVERY,
        check=zero_or_more("no history"),
    )
    history_ttl: float = option(
        300.0,
        "how long a stream keeps each push; a client away longer resumes without "
        "recovery (and is told so)",
        metavar="SECONDS",
        group=Group.RECOVERY,
        check=positive_seconds,
    )
    session_ttl: float = option(
        60.0,
        "how long a session (wsId, rooms, user) waits for its client to resume after "
        "its connection ends; 0: a connection's end is its session's end",
        metavar="SECONDS",
        group=Group.RECOVERY,
        check=non_negative_seconds,
    )
    # --history-max-bytes is checked against --max-body-bytes, in _between_settings.
    history_max_bytes: int = option(
        64 * MIB,
        "memory the history of all streams together may take with --broker memory:// "
        "(with Redis, history is in Redis); past it the oldest pushes go first, and a "
        "client that missed them is told it was not recovered (0: no limit)",
        metavar="BYTES",
        group=Group.RECOVERY,
        parse=parse_size,
    )
    heartbeat: float = option(
        10.0,
        "PING interval announced in the welcome frame",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    idle_timeout: float = option(
        30.0,
        "close (1011) a connection that sent nothing, not even a pong, for this long; "
        "a silent connection is sent a protocol ping half-way",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    handshake_timeout: float = option(
        10.0,
        "time a new TCP connection has to complete the WebSocket handshake; in a "
        "cluster, also the longest a welcome waits for the wsId to be announced",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    close_timeout: float = option(
        5.0,
        "time a client has to answer a close frame before its TCP connection is dropped",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=positive_seconds,
        roles=GATEWAY,
    )
    shutdown_timeout: float = option(
        10.0,
        "on SIGTERM/SIGINT, after the drain, time to let connections close and output drain",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=non_negative_seconds,
        roles=GATEWAY,
    )
    drain_seconds: float = option(
        5.0,
        "on SIGTERM/SIGINT, report not ready and close the connections spread over this "
        "long with 1012 (service restart), so that clients resume elsewhere a few at a time",
        metavar="SECONDS",
        group=Group.TIMEOUTS,
        check=non_negative_seconds,
        roles=GATEWAY,
    )
