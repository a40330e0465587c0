"""The ``pushgate bench`` subcommand's options: its help texts (the scenarios, what
each measures, the figures, examples) and :func:`add_bench_parser`, which adds the
subcommand to an ``add_subparsers()`` object; :func:`pushgate.bench.cli.run_bench`
runs what it parsed.
"""

import argparse

from pushgate.bench.clientkinds import CLIENTS, PUSHER_APP_ID, PUSHER_KEY, PUSHGATE
from pushgate.bench.options import API_PUSHES, MAX_DURATION, RESUME_ON
from pushgate.bench.scenarios import ATTACKS, CHAT_NAMESPACES, ROOM, SCENARIOS
from pushgate.configchecks import parse_size

DESCRIPTION = """\
Measure a push server on this machine: deliveries per second, server CPU per
delivery, delivery latency, server memory per connection, and messages lost.

By default it starts its own `pushgate serve` on free loopback ports, so that the
server's CPU and RSS can be read from /proc; clients run in worker processes over
several loopback source addresses (127.0.0.2, ...). Every push carries its send
time and a sequence number; each client counts what it receives.
"""

EPILOG = (
    "scenarios:\n"
    + "".join(f"  {s.name:<10} {s.summary}\n" for s in SCENARIOS.values())
    + f"""
pacing: --rate 0 sends pushes back to back (each of --senders HTTP connections
sends its next push as soon as the previous one was answered); --rate R schedules
R pushes per second. A run ends after --pushes M or --duration S (at most
{MAX_DURATION:g} s), then waits for the last deliveries (--drain-timeout).

resume: every client joins one room and counts, per stream (all, room:bench),
the positions (seq, epoch) in the frames. Pushes alternate between the room and
all at --rate (default 5/s). After --duration seconds (default 2) or --pushes M,
every client aborts its TCP connection at the same moment (no close frame) and
at once (or after --outage seconds) opens /connect?resume=1, with
--connect-concurrency handshakes in flight per worker, on its own gateway or
(--resume-on other) the next --ws-url, sending its wsId, session and per-stream
positions. Pushes go on until every client caught up. Reported: resume time
(from the drop to the last welcome); caught-up time (from the drop until every
client had every push published up to the last resume: the highest seq of each
stream in the welcomes), beside the time the same N clients took to connect
afresh (connect time); server CPU per resume (from the drop to caught up, live
pushes included); pushes replayed; resumes not recovered; and pushes lost or
duplicated, from the seqs of every stream of every client (both must be 0).

reconnect: the same drop under the same pushes, but the clients reconnect afresh
instead of resuming (a new wsId, back in the room with a token signed with
--token-secret, nothing replayed, nothing counted lost): reconnect time (from the
drop to the last welcome), the room's members after, and CPU per reconnect, the
baseline a resume storm is compared with. `resume --fresh` is its old name, kept
as an alias.

abuse (issue 25): N honest clients (default 300) receive pushes to all at --rate
(default 20/s, val 1 KB) for --duration seconds (default 10) with nothing else
going on, then as long again while every attack starts at once, each kind in its
own process, from 127.0.0.254 over loopback: a ping flooder and a never-ending
fragmented message (one WebSocket connection each, sending masked frames as fast
as the socket takes them, reading and discarding what comes back), --non-readers
connections with a 4 KB receive buffer that never read after the handshake, and
--fat-handshakes connections that each send 128 headers of 8 KB and never end the
request (--attacks picks some). Reported per phase: the honest clients' latency
(p50, p99, max, and attacked / quiet) and pushes expected, received and lost;
GET /healthz on the gateway's and the API's port, polled every 100 ms, p99 and
max; server RSS before, at its peak under attack, and after; and what the server
did to each attacker: the close code and when (seconds from the attack's start),
a TCP connection dropped without a close frame, the status a handshake got. A
push not answered within 5 s counts as a push error. The last line says which
parts of issue 25's bar the run missed (p99 within 2x of quiet, nothing lost,
/healthz under 200 ms, under 300 MB more RSS, both flooders closed). Exit status
3 when an honest client lost a push, whether the server closed it or not.

chat: the server runs with --namespaces '{CHAT_NAMESPACES}' (its own server
gets a made-up --token-secret; give an external one's), and each client connects
with a token whose sub is its index (presence is per user) and belongs to room
chat:<index // --room-size>. Four phases, each metered on its own:
  subscribe: every client subscribes itself, --subscribe-rate a second over all
    of them (default 2000; 0: all at once): the round trip of each (its frame sent
    to its reply, p50/p99/max), the server's CPU per subscribe, and the presence
    joins each member heard: the join of every member whose join comes at or after
    its own in the room's stream, its own included (R(R+1)/2 in a room of R), and
    every member known once (in its reply's roster, or by a later join);
  publish: every member publishes --rate messages a second (default 1) to its
    room for --duration seconds (default 10), data "<sent ns> <seq> xxx" of --size
    bytes; deliveries, latency, server and client CPU per delivery, and the
    publishes' replies (refused ones by code, e.g. 429 over
    --max-client-messages-per-second, 50 by default);
  api: the same messages, as many per client as the server took from it, on the
    same schedule, sent by the bench with POST /push/batch (--api-push room: one
    POST /push/room each) to the same rooms with
    exclude=<the sender's wsId>: the same deliveries, so the line
    "CPU/delivery, messages / API" compares the two (the goal is at most 1.2);
  resume: the API's pushes go on at --resume-rate per client (default --rate);
    after 1 s every client drops its TCP connection at once and resumes its
    session (as in resume); once all are back, one push to each room for all its
    members, and until each caught up: resumes, presence events heard meanwhile
    (the goal is none: a resume is not a leave), and losses.
Losses are counted by position in each room's stream, presence events included:
a member is owed every position from its own join on, except its own messages and
the API's pushes that leave it out.

--client: broadcast, room and idle run their clients over another protocol, to
compare the server's CPU per delivery (and memory per connection) with pushgate's
own clients'. Every kind gets the same pushes (POST /push/room or /push/all) and is
counted the same way: a Pusher client reads the bench's val in its event's data
string, a stream in the pushgate JSON of its data: line. pusher: the own server gets
--pusher-app {PUSHER_APP_ID}:{PUSHER_KEY}:<made up>; each client opens
/app/{PUSHER_KEY}?protocol=7 and, in room, subscribes to channel {ROOM} (the room
{PUSHER_APP_ID}:{ROOM}, where the pushes go); a push to all reaches it without a
channel. sse: the own server gets --namespaces =public (the default namespace is
public) and each client reads GET /events, in room /events?room={ROOM}. Neither
needs POST /room/join. Only against the bench's own server.

figures: server CPU is utime+stime of the server process(es) over the push phase;
client CPU is the measured clients' workers' own (churn's own workers are counted
apart); waiting for a CPU is the share of the phase the server's loop, or a client
worker, was ready to run but had no core; latency is from the push's send time to
its arrival at a client; RSS per connection is the server's RSS growth over the
connect phase divided by the connections; lost counts pushes a client should have
received but did not (those on clients the server closed are shown apart, with
the close codes).

examples:
  pushgate bench broadcast --connections 1000 --rate 20 --pushes 200
  pushgate bench room --connections 10000 --pushes 300 --repeat 3
  pushgate bench idle --connections 19000 --duration 30 --workers 2
  pushgate bench rooms --connections 5000 --rate 2000 --duration 10 --json
  pushgate bench resume -n 10000 --rate 5 --duration 3 --repeat 3
  pushgate bench reconnect -n 10000
  scripts/bench-cluster resume -n 10000 --resume-on other
  pushgate bench abuse --attacks ping,nonreaders --non-readers 1000
  pushgate bench room -n 10000 --pushes 30 --senders 1 --client pusher
  pushgate bench broadcast -n 1000 --rate 20 --pushes 400 --senders 1 --client sse
  pushgate bench chat -n 10000 --room-size 10 --rate 1 --duration 10 --repeat 3
  scripts/bench-cluster chat -n 10000 --room-size 10 --rate 1
  pushgate bench broadcast --ws-url ws://127.0.0.1:8888/connect \\
      --api-url http://127.0.0.1:9999 --server-pid 12345

Only loopback URLs are accepted. Ctrl-C stops the run and every process it started.
"""
)

# Flags passed through to our own `pushgate serve` as they are.
SERVER_FLAGS = (
    ("--max-output-bytes", parse_size, "BYTES", "slow-client limit of the server"),
    ("--heartbeat", float, "SECONDS", "PING interval the server announces"),
    ("--idle-timeout", float, "SECONDS", "server closes connections silent this long"),
    ("--close-timeout", float, "SECONDS", "server's closing-handshake timeout"),
    ("--log-level", str, "LEVEL", "server log level"),
)


def add_bench_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``bench`` subcommand, with its options, to ``subparsers``."""
    parser = subparsers.add_parser(
        "bench",
        help="measure fan-out: deliveries/s, CPU per delivery, latency, RSS per connection",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario_arg",
        nargs="?",
        metavar="SCENARIO",
        choices=list(SCENARIOS),
        default=None,
        help=f"one of {', '.join(SCENARIOS)} (default: broadcast)",
    )
    parser.add_argument("--scenario", choices=list(SCENARIOS), help="the same, as an option")

    load = parser.add_argument_group("load")
    load.add_argument(
        "-n",
        "--connections",
        type=int,
        metavar="N",
        help="client connections (default: 1000; abuse: 300 honest ones)",
    )
    load.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="pushes per second; 0 sends them back to back (default: 0; 5 for resume "
        "and reconnect, 20 for abuse); chat: messages per second per client (default: 1)",
    )
    load.add_argument(
        "--pushes",
        type=int,
        metavar="M",
        help="pushes per run (default: 100 for broadcast and room); resume, reconnect: "
        "pushes before the drop",
    )
    load.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="seconds of pushing, or of idling (default: 10 for rooms, idle, churn, "
        "chat's publishing); "
        "resume, reconnect: seconds of pushes before the drop (default: 2); abuse: of "
        "each phase, quiet and attacked (default: 10)",
    )
    load.add_argument(
        "--size",
        type=parse_size,
        metavar="BYTES",
        help="bytes of each push's val (default: 100; abuse: 1K)",
    )
    load.add_argument(
        "--senders",
        type=int,
        default=4,
        metavar="K",
        help="concurrent HTTP connections that push (default: 4)",
    )
    load.add_argument(
        "--churn-rate",
        type=float,
        default=100.0,
        metavar="R",
        help="churn: connections opened (and closed) per second (default: 100)",
    )
    load.add_argument(
        "--churn-lifetime",
        type=float,
        default=1.0,
        metavar="S",
        help="churn: seconds each churning connection stays open (default: 1)",
    )
    load.add_argument(
        "--churn-workers",
        type=int,
        metavar="W",
        help="churn: worker processes that open and close the churning connections, "
        "apart from the measured clients' workers (default: as many as --workers)",
    )
    load.add_argument(
        "--resume-on",
        choices=RESUME_ON,
        default="same",
        help="resume, reconnect: each client comes back on its own gateway (same), or on "
        "the next --ws-url (other; the same with one URL) (default: same)",
    )
    load.add_argument(
        "--outage",
        type=float,
        default=0.0,
        metavar="S",
        help="resume, reconnect: seconds the clients stay away between the drop and "
        "their return (default: 0, they come back at once)",
    )
    load.add_argument(
        "--fresh",
        action="store_true",
        help="deprecated: `resume --fresh` is the reconnect scenario's old name",
    )

    chat = parser.add_argument_group("chat")
    chat.add_argument(
        "--room-size",
        type=int,
        metavar="R",
        help="members of each room: client i is in chat:<i // R> (default: 10)",
    )
    chat.add_argument(
        "--subscribe-rate",
        type=float,
        metavar="R",
        help="subscribes per second over all clients; 0: all at once (default: 2000)",
    )
    chat.add_argument(
        "--resume-rate",
        type=float,
        metavar="R",
        help="the API's pushes per second per client while everyone resumes; 0: none "
        "(default: --rate)",
    )
    chat.add_argument(
        "--api-push",
        choices=API_PUSHES,
        help="how the API phase sends the same messages: batch, the items due within "
        "5 ms in one POST /push/batch; room, one POST /push/room each, as a back end "
        "that relays one event at a time (default: batch)",
    )

    abuse = parser.add_argument_group("abuse (issue 25)")
    abuse.add_argument(
        "--attacks",
        metavar="LIST",
        help=f"the attacks to make, comma-separated (default: all: {','.join(ATTACKS)})",
    )
    abuse.add_argument(
        "--non-readers",
        type=int,
        metavar="K",
        help="connections that complete the handshake and never read (default: 300)",
    )
    abuse.add_argument(
        "--fat-handshakes",
        type=int,
        metavar="K",
        help="connections that send 1 MB of headers and never end the request (default: 300)",
    )

    clients = parser.add_argument_group("clients")
    clients.add_argument(
        "--workers",
        type=int,
        metavar="W",
        help="client worker processes (default: one per 15,000 connections, at least 2)",
    )
    clients.add_argument(
        "--client",
        choices=CLIENTS,
        default=PUSHGATE,
        help="the protocol the clients speak: pushgate (WebSocket, /connect), pusher "
        "(Pusher Channels over WebSocket, /app/KEY: its own server serves a made-up "
        "--pusher-app; room: each subscribes to the channel of the room), sse "
        "(Server-Sent Events, GET /events: its own server makes the default namespace "
        "public; room: /events?room=bench); broadcast, room and idle only "
        "(default: pushgate)",
    )
    clients.add_argument(
        "--sources",
        type=int,
        default=8,
        metavar="K",
        help="loopback source addresses 127.0.0.2... to spread over (default: 8)",
    )
    clients.add_argument(
        "--connect-concurrency",
        type=int,
        default=200,
        metavar="K",
        help="handshakes in flight per worker (default: 200)",
    )
    clients.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="per connection (default: 30)",
    )
    clients.add_argument(
        "--connect-retries",
        type=int,
        default=0,
        metavar="K",
        help="try a handshake the server dropped (closed or reset before its 101) up to "
        "K times more, on a new connection, as a client of the seed's Go server must: "
        "it drops an upgrade request that took over 10 ms to arrive (default: 0)",
    )
    clients.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="stop waiting for deliveries after this long without one (default: 5)",
    )
    clients.add_argument(
        "--client-ping",
        type=float,
        default=0.0,
        metavar="S",
        help='send the application {"type":1,"data":"PING"} every S seconds '
        "(default: 0, none; clients always answer protocol pings)",
    )
    clients.add_argument(
        "--slow",
        type=int,
        default=0,
        metavar="K",
        help="K clients stop reading for --slow-pause seconds when pushes "
        "start, to exercise the slow-client policy (default: 0)",
    )
    clients.add_argument(
        "--slow-pause",
        type=float,
        default=1.0,
        metavar="S",
        help="how long the --slow clients stop reading (default: 1)",
    )

    server = parser.add_argument_group(
        "server under test",
        "By default the bench starts `pushgate serve` itself; these flags pass through to it.",
    )
    for flag, parse, metavar, text in SERVER_FLAGS:
        server.add_argument(flag, type=parse, metavar=metavar, help=text)
    server.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="any other argument for `pushgate serve` (repeatable), "
        "e.g. --server-arg=--max-rooms-per-conn=5",
    )
    server.add_argument(
        "--ws-url",
        action="append",
        default=[],
        metavar="URL",
        help="measure an external server: its gateway URL (repeatable: "
        "connections are spread over the URLs)",
    )
    server.add_argument("--api-url", metavar="URL", help="the external server's logic API")
    server.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="the external server's process(es), to read CPU and RSS (repeatable)",
    )
    server.add_argument(
        "--token-secret",
        metavar="SECRET",
        help="the server's --token-secret: reconnect brings each client back with a "
        "token naming the room, as an app without resume puts its clients back in "
        "their rooms (its own server gets one made up); without it, in no room; "
        "chat gives each client a token naming its user (required with --ws-url)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="runs; the table shows each, their median and min-max (default: 1)",
    )
    output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per run on stdout (the table goes to stderr)",
    )
    output.add_argument("-q", "--quiet", action="store_true", help="no progress display")
