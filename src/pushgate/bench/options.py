"""The options of one ``pushgate bench`` invocation, checked: bounds and loopback.

Every count and duration has a ceiling, so no invocation can run unbounded, and
every URL must name a loopback address: the bench opens thousands of connections
and must never aim them at another machine.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from pushgate.bench.clientkinds import CLIENT_SCENARIOS, CLIENTS, PUSHGATE, SSE, ClientKind
from pushgate.bench.scenarios import ATTACKS, SCENARIOS, Scenario
from pushgate.security import is_loopback

# Ceilings
MAX_CONNECTIONS = 200_000
MAX_PUSHES = 1_000_000
MAX_DURATION = 600.0
MAX_RATE = 100_000.0
MAX_SIZE = 512 * 1024
MIN_SIZE = 32  # room for "<19-digit ns> <seq> " and some padding
MAX_REPEAT = 20
MAX_WORKERS = 64
MAX_SENDERS = 64
MAX_SOURCES = 250
# How chat's API phase sends the clients' messages again: as batches of the items due
# within a few milliseconds (POST /push/batch), or each on its own (POST /push/room).
API_PUSHES = ("batch", "room")
# A worker keeps this many descriptors for itself (pipes, epoll, the Python runtime).
WORKER_FD_RESERVE = 64
CONNECTIONS_PER_WORKER = 15_000  # default share, under this machine's 20,000 fd cap
RESUME_ON = ("same", "other")  # --resume-on: the gateway a client resumes on
MAX_ROOM_SIZE = 10_000  # chat: members of each room
MAX_ATTACKERS = 15_000  # --non-readers, --fat-handshakes: one attacker process each
# Our own server keeps this many descriptors for itself (listening sockets, the API's
# connections, the broker, the runtime) beside one per connection.
SERVER_FD_RESERVE = 200


class BenchError(Exception):
    """The bench cannot run as asked; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything one invocation was asked to do."""

    scenario: Scenario
    connections: int = 1000
    # Pushes
    rate: float = 0.0  # pushes per second; 0 sends them back to back
    pushes: int | None = None
    duration: float | None = None
    size: int = 100  # bytes of each push's val
    senders: int = 4  # concurrent HTTP connections that push
    tag: int = 2
    # Runs and output
    repeat: int = 1
    json: bool = False
    quiet: bool = False
    # Clients
    workers: int | None = None
    sources: int = 8  # loopback source addresses 127.0.0.2, 127.0.0.3, ...
    connect_concurrency: int = 200  # handshakes in flight per worker
    connect_timeout: float = 30.0  # per connection
    connect_retries: int = 0  # a handshake the server dropped is tried again this often
    drain_timeout: float = 5.0  # stop waiting once deliveries stall this long
    client_ping: float = 0.0  # seconds between a client's application PINGs; 0: none
    slow: int = 0  # clients that stop reading for slow_pause seconds when pushes start
    slow_pause: float = 1.0
    churn_rate: float = 100.0  # churn: connections opened (and later closed) per second
    churn_lifetime: float = 1.0
    # churn: worker processes of their own open and close the churning connections,
    # so that their work does not delay the measured clients' reads (None: --workers)
    churn_workers: int | None = None
    resume_on: str = "same"  # resume, reconnect: the gateway a client comes back on
    outage: float = 0.0  # resume, reconnect: seconds between the drop and the comeback
    token_secret: str | None = None  # the server's: reconnects get a token naming ROOM
    # The chat scenario (pushgate.bench.chat); its --rate is messages per second per client
    room_size: int = 10  # members of each room
    subscribe_rate: float = 2000.0  # subscribes per second over every client; 0: all at once
    resume_rate: float | None = None  # per client, during the resume phase; None: --rate
    api_push: str = "batch"  # the API phase: "batch" (POST /push/batch) or "room" (one each)
    # The abuse scenario's attackers (pushgate.bench.abusers)
    attacks: tuple[str, ...] = ATTACKS
    non_readers: int = 300
    fat_handshakes: int = 300
    # The wire protocol the clients speak (pushgate.bench.clientkinds)
    client: str = PUSHGATE
    # The server under test: our own child process unless ws_urls is given
    ws_urls: tuple[str, ...] = ()
    api_url: str | None = None
    server_pids: tuple[int, ...] = ()
    server_args: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        return bool(self.ws_urls)

    @property
    def push_count(self) -> int | None:
        """The number of pushes, when bounded by count rather than by time."""
        if self.pushes is not None:
            return self.pushes
        if self.duration is not None:
            return None
        return self.scenario.default_pushes

    @property
    def push_duration(self) -> float | None:
        if self.duration is not None:
            return self.duration
        if self.pushes is not None:
            return None
        return self.scenario.default_duration

    @property
    def client_kind(self) -> ClientKind:
        return ClientKind(self.client)

    @property
    def resume_shift(self) -> int:
        """How many --ws-url places after its own a client resumes on."""
        return 1 if self.resume_on == "other" else 0

    @property
    def worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(2, -(-self.connections // CONNECTIONS_PER_WORKER))

    @property
    def churn_worker_count(self) -> int:
        return self.worker_count if self.churn_workers is None else self.churn_workers

    def check(self, fd_limit: int) -> None:
        """Raise BenchError when an option is out of bounds or a URL is not loopback."""
        _within("--connections", self.connections, 1, MAX_CONNECTIONS)
        _within("--rate", self.rate, 0, MAX_RATE)
        if self.pushes is not None:
            _within("--pushes", self.pushes, 1, MAX_PUSHES)
        if self.duration is not None:
            _within("--duration", self.duration, 0.1, MAX_DURATION)
        if self.pushes is not None and self.duration is not None:
            raise BenchError("give --pushes or --duration, not both")
        if not self.scenario.pushes and self.pushes is not None:
            raise BenchError(f"{self.scenario.name} sends no pushes: give --duration")
        _within("--size", self.size, MIN_SIZE, MAX_SIZE)
        _within("--repeat", self.repeat, 1, MAX_REPEAT)
        _within("--senders", self.senders, 1, MAX_SENDERS)
        _within("--sources", self.sources, 1, MAX_SOURCES)
        _within("--connect-timeout", self.connect_timeout, 0.1, 600)
        _within("--connect-retries", self.connect_retries, 0, 10)
        _within("--drain-timeout", self.drain_timeout, 0.1, 600)
        _within("--churn-rate", self.churn_rate, 0.1, 10_000)
        _within("--churn-lifetime", self.churn_lifetime, 0, 60)
        _within("--slow", self.slow, 0, self.connections)
        _within("--slow-pause", self.slow_pause, 0, 60)
        _within("--client-ping", self.client_ping, 0, 3600)
        if self.workers is not None:
            _within("--workers", self.workers, 1, MAX_WORKERS)
        if self.churn_workers is not None:
            _within("--churn-workers", self.churn_workers, 1, MAX_WORKERS)
        _within("--outage", self.outage, 0, 60)
        if self.resume_on not in RESUME_ON:
            raise BenchError(f"--resume-on must be one of {', '.join(RESUME_ON)}")
        if self.scenario.drops and self.slow:
            raise BenchError(f"{self.scenario.name} drops every client: --slow does not apply")
        if self.client != PUSHGATE:
            self._check_client()
        if self.scenario.name == "abuse":
            self._check_abuse(fd_limit)
        if self.scenario.name == "chat":
            self._check_chat()
        per_worker = -(-self.connections // self.worker_count)
        if per_worker > fd_limit - WORKER_FD_RESERVE:
            raise BenchError(
                f"{per_worker} connections per worker would pass the open-file limit "
                f"({fd_limit}); use --workers {-(-self.connections // (fd_limit - 1000))} or more"
            )
        if self.external:
            if self.api_url is None and self.scenario.pushes:
                raise BenchError("--ws-url needs --api-url too, to push")
            if self.scenario.needs_welcome and self.api_url is None:
                raise BenchError(f"{self.scenario.name} needs --api-url to join rooms")
            if self.server_args:
                raise BenchError("--server-arg and the server flags only apply to its own server")
        elif self.api_url is not None or self.server_pids:
            raise BenchError("--api-url and --server-pid measure an external server: add --ws-url")
        for url in self.ws_urls:
            check_url(url, ("ws",), "--ws-url")
        if self.api_url is not None:
            check_url(self.api_url, ("http",), "--api-url")

    @property
    def chat_resume_rate(self) -> float:
        """Chat: the API's pushes per second per client during the resume phase."""
        return self.rate if self.resume_rate is None else self.resume_rate

    def _check_client(self) -> None:
        """Clients of another protocol: the scenarios they can run, on our own server,
        which is the one whose Pusher app and namespaces the bench knows."""
        if self.client not in CLIENTS:
            raise BenchError(f"--client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.scenario.name not in CLIENT_SCENARIOS:
            raise BenchError(
                f"--client {self.client} runs {', '.join(CLIENT_SCENARIOS)}, "
                f"not {self.scenario.name}"
            )
        if self.external:
            raise BenchError(
                f"--client {self.client} runs against the bench's own server (it sets up "
                "the Pusher app and the public namespace), not --ws-url"
            )
        if self.client == SSE and self.client_ping:
            raise BenchError("--client sse sends nothing after its request: no --client-ping")

    def _check_chat(self) -> None:
        """The chat scenario: clients publish on a schedule for --duration seconds,
        and each needs a user, which only a token signed with the server's secret gives."""
        if self.pushes is not None:
            raise BenchError("chat publishes for --duration seconds: give --duration, not --pushes")
        if self.rate <= 0:
            raise BenchError("chat needs --rate above 0: messages per second per client")
        _within("--room-size", self.room_size, 2, MAX_ROOM_SIZE)
        _within("--subscribe-rate", self.subscribe_rate, 0, MAX_RATE)
        _within("--resume-rate", self.chat_resume_rate, 0, MAX_RATE)
        if self.api_push not in API_PUSHES:
            raise BenchError(f"--api-push is one of {', '.join(API_PUSHES)}")
        if self.slow:
            raise BenchError("chat drops every client: --slow does not apply")
        if self.external and self.token_secret is None:
            raise BenchError(
                "chat gives each client a user with a connection token: give the "
                "server's --token-secret"
            )

    def _check_abuse(self, fd_limit: int) -> None:
        """The abuse scenario: two phases of --duration, attacks known, and every
        connection within one process's open files: each attacker process holds its
        own, and our own server holds them all."""
        if self.pushes is not None:
            raise BenchError("abuse runs two phases of --duration seconds: give --duration")
        if self.slow:
            raise BenchError(
                "abuse brings its own slow clients (--non-readers): --slow does not apply"
            )
        unknown = sorted(set(self.attacks) - set(ATTACKS))
        if unknown or not self.attacks:
            raise BenchError(
                f"--attacks takes a comma-separated list of {', '.join(ATTACKS)}; "
                f"got {','.join(self.attacks) or 'nothing'}"
            )
        _within(
            "--non-readers", self.non_readers, 1, min(MAX_ATTACKERS, fd_limit - WORKER_FD_RESERVE)
        )
        _within(
            "--fat-handshakes",
            self.fat_handshakes,
            1,
            min(MAX_ATTACKERS, fd_limit - WORKER_FD_RESERVE),
        )
        held = self.connections + 2  # the two flooders
        held += self.non_readers if "nonreaders" in self.attacks else 0
        held += self.fat_handshakes if "handshakes" in self.attacks else 0
        if not self.external and held > fd_limit - SERVER_FD_RESERVE:
            raise BenchError(
                f"{held} connections would pass the server's open-file limit ({fd_limit}); "
                "use fewer --connections, --non-readers or --fat-handshakes"
            )


def _within(flag: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BenchError(f"{flag} must be from {low:g} to {high:g}, got {value:g}")


def check_url(url: str, schemes: tuple[str, ...], flag: str) -> None:
    """Raise BenchError unless ``url`` has one of ``schemes`` and a loopback host."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise BenchError(f"{flag} {url!r}: expected a {' or '.join(schemes)}:// URL")
    if parts.port is None:
        raise BenchError(f"{flag} {url!r}: give the port explicitly")
    if not is_loopback(parts.hostname or ""):
        raise BenchError(
            f"{flag} {url!r}: the bench only measures servers on this machine; "
            "use a loopback address (127.0.0.1, ::1 or localhost)"
        )


def scenario_named(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise BenchError(
            f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}"
        ) from None
