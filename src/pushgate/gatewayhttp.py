"""The gateway's answer to the one HTTP request each connection makes: the request
hook in front of the WebSocket endpoints, as websockets' ``process_request``.

Checked in order: a ``Host`` header (400 without one), the method (405: an upgrade
is a GET, the side paths are read with GET or HEAD), then the path: ``/connect``
(the pushgate protocol: a valid upgrade goes to the gatekeeper, which admits it or
says why not), ``/echo`` (``--conformance-echo`` only), ``/healthz`` and ``/readyz``,
``/static/pushgate.js``, ``/events`` (Server-Sent Events: the gatekeeper as for
``/connect``, then a 200 whose body is the stream, sseconnection.py), ``/app/<key>``
(the Pusher protocol, where ``--pusher-app`` names apps: pusherproto.py), and 404
for anything else. What it answers with a WebSocket or a stream is an
:class:`Upgrade`: which protocol and transport the connection speaks from now on.

With ``--connect-hook``, an upgrade the gatekeeper admitted without a connection
token is not answered yet: its :class:`Upgrade` carries the hook's pending verdict
(``deciding``), and the connection answers once it comes (connecthook.py).
"""

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from pushgate import __version__
from pushgate.console import static_file
from pushgate.gatekeeper import ADMITTED_WITHOUT_TOKEN, Admitted, Gatekeeper
from pushgate.ids import new_conn_id
from pushgate.namespaces import Namespaces, SubscribePolicy
from pushgate.pusherapps import PusherApp, PusherApps
from pushgate.pusherwire import PROTOCOL_VERSION
from pushgate.pushgateops import PushgateShared
from pushgate.security import Refusal
from pushgate.ssequery import QueryError, SseQuery, SseStart, parse_query, resolve

if TYPE_CHECKING:
    from pushgate.connecthook import ConnectHook
    from pushgate.node import Node

ENDPOINT = "/connect"
PUSHER_PREFIX = "/app/"  # Pusher's clients connect to /app/<key>
# The Pusher protocol versions served: 7, and the 5 and 6 that older clients ask
# for (the same messages for what they use).
PUSHER_VERSIONS = range(5, PROTOCOL_VERSION + 1)
ECHO_ENDPOINT = "/echo"
EVENTS_PATH = "/events"  # Server-Sent Events (docs/sse.md)
HEALTH_PATHS = ("/healthz", "/readyz")
BROWSER_CLIENT_PATH = "/static/pushgate.js"
SERVER_HEADER = f"pushgate/{__version__}"
# The HTTP methods the gateway answers: a WebSocket upgrade is a GET; the side paths
# (health, pushgate.js, 404s) are read with GET or HEAD.
UPGRADE_METHODS = ("GET",)
READ_METHODS = ("GET", "HEAD")

# Refusals that are a limit tripping, and the option that sets the limit.
LIMIT_REFUSALS = {
    "server_full": "max_connections",
    "ip_limit": "max_connections_per_ip",
    "connect_rate": "max_connects_per_second",
    "ip_connect_rate": "max_connects_per_second_per_ip",
    "connect_hook_busy": "connect_hook_max_calls",
}


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A request answered with a WebSocket: ``echo`` (the conformance endpoint) or
    the pushgate protocol, for a client the gatekeeper ``admitted``, that resumes a
    session first (``resume``) or opens a new one."""

    echo: bool = False
    admitted: Admitted | None = None
    resume: bool = False
    events: bool = False  # ?v=2: it reads control events (docs/protocol.md)
    # GET /events: a Server-Sent Events stream of what this query names (no WebSocket).
    stream: SseQuery | None = None
    # The connect hook's verdict, to wait for before answering (None: answer now).
    deciding: "asyncio.Task[Admitted | Refusal] | None" = None
    # The Pusher protocol: its app (None with ``pusher``: the key names none, or the
    # version is not served: told in the protocol, ``pusher_refusal``, then closed).
    pusher: bool = False
    app: PusherApp | None = None
    pusher_refusal: tuple[int, str] | None = None


class GatewayRoutes:
    """What the gateway answers; one per gateway, shared by its connections."""

    def __init__(
        self,
        node: "Node",
        gatekeeper: Gatekeeper,
        *,
        echo: bool = False,
        namespaces: Namespaces | None = None,
        connect_hook: "ConnectHook | None" = None,
        pusher_apps: PusherApps | None = None,
    ) -> None:
        self._node = node
        self.gatekeeper = gatekeeper
        self._hook = connect_hook  # asked about handshakes without a token
        # Who may subscribe a connection to a room (docs/protocol.md, "Subscribing").
        self.subscriptions = SubscribePolicy(namespaces or Namespaces(), gatekeeper.tokens)
        self._echo = echo  # serve /echo (--conformance-echo)
        self._pusher_apps = pusher_apps or PusherApps()
        # Open Pusher connections by app on this gateway (their max_connections).
        self.pusher_counts: Counter[str] = Counter()
        self._pushgate: PushgateShared | None = None
        # A plain upgrade without a query or a token, admitted: all alike.
        self._plain_upgrades = {
            verified: Upgrade(admitted=admitted)
            for verified, admitted in ADMITTED_WITHOUT_TOKEN.items()
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._now = 0.0

    def now(self) -> float:
        """The event loop's clock, as one float object for every connection that reads
        it in the same turn of the loop (uvloop's clock moves once a turn, by the
        millisecond): a connection keeps the time of its last read, and thousands
        that read in one turn keep one float, not one each."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if now != self._now:
            self._now = now
        return self._now

    def pushgate(self, heartbeat: float, handshake_timeout: float) -> PushgateShared:
        """What the pushgate protocol of every connection here shares (one object)."""
        shared = self._pushgate
        if shared is None or (shared.heartbeat, shared.handshake_timeout) != (
            heartbeat,
            handshake_timeout,
        ):
            shared = PushgateShared(self._node, self.subscriptions, heartbeat, handshake_timeout)
            self._pushgate = shared
        return shared

    def answer(
        self, proto: ServerProtocol, request: Request, peer: str, now: float
    ) -> tuple[Response, Upgrade | None]:
        """The response to send, and the upgrade it makes (None: no WebSocket);
        ``now`` is the event loop's clock."""
        path = request.path.partition("?")[0]
        upgrade = None
        if "Host" not in request.headers:  # RFC 9112 3.2: a request without one is a 400
            response = proto.reject(400, "Bad Request: no Host header\n")
        elif request.method not in _allowed_methods(path):
            allowed = ", ".join(_allowed_methods(path))
            response = proto.reject(405, f"Method Not Allowed: {path} answers {allowed}\n")
            response.headers["Allow"] = allowed
        elif path == ENDPOINT:
            response, upgrade = self._admit(proto, request, peer, now)
        elif path.startswith(PUSHER_PREFIX) and self._pusher_apps:
            response, upgrade = self._admit_pusher(proto, request, path, peer, now)
        elif path == EVENTS_PATH:
            response, upgrade = self._events(proto, request, peer, now)
        elif path == ECHO_ENDPOINT and self._echo:
            response = proto.accept(request)
            upgrade = Upgrade(echo=True) if response.status_code == 101 else None
        elif path in HEALTH_PATHS:
            response = self._health(proto, path)
        elif path == BROWSER_CLIENT_PATH:
            response = _browser_client(proto)
        else:
            response = proto.reject(404, f"Not Found: the WebSocket endpoint is {ENDPOINT}\n")
        response.headers["Server"] = SERVER_HEADER
        if request.method == "HEAD":
            response.body = b""  # its headers, Content-Length included, as for a GET
        return response, upgrade

    def plain_upgrade(self, origin: str | None, query: str) -> Upgrade | None:
        """The upgrade a plain request to /connect makes (plainupgrade.py: its Origin
        and query), decided as :meth:`_admit` decides; None when the full path must
        answer it: a refusal (it says why, and counts it), or a connect hook to ask
        (it is given the whole request)."""
        if self._hook is not None:
            return None
        verdict = self.gatekeeper.decide(origin, query, [])
        if isinstance(verdict, Refusal) or verdict.subprotocol is not None:
            return None  # (no subprotocol is offered: none is answered)
        if not query and verdict is ADMITTED_WITHOUT_TOKEN[verdict.verified]:
            return self._plain_upgrades[verdict.verified]
        return _pushgate_upgrade(verdict, query)

    def refused(self, refusal: Refusal, peer: str, now: float) -> None:
        """Count a refusal for the metrics, and log it (once per kind per interval)."""
        meters = self._node.meters
        meters.refused[refusal.kind] += 1
        if refusal.kind in LIMIT_REFUSALS:
            meters.limits[LIMIT_REFUSALS[refusal.kind]] += 1
        if refusal.kind != "connect_hook_failed":  # the hook logged why, in one line
            self.gatekeeper.refusals.refused(
                refusal.kind, f"refused a connection from {peer}: {refusal.reason}", now
            )

    def hook_refusal(
        self, proto: ServerProtocol, refusal: Refusal, peer: str, now: float
    ) -> Response:
        """The answer to a handshake the connect hook refused, or could not judge."""
        self.refused(refusal, peer, now)
        response = proto.reject(refusal.status, refusal.reason + "\n")
        response.headers["Server"] = SERVER_HEADER
        return response

    def _admit(
        self, proto: ServerProtocol, request: Request, peer: str, now: float
    ) -> tuple[Response, Upgrade | None]:
        """A valid upgrade to /connect goes to the gatekeeper; refused, it gets the
        gatekeeper's status and reason and no WebSocket. Admitted without a token,
        it goes to the connect hook, if any (a token decides alone)."""
        response = proto.accept(request)
        if response.status_code != 101:
            return response, None
        verdict = self.gatekeeper.check(request)
        if isinstance(verdict, Refusal):
            self.refused(verdict, peer, now)
            return proto.reject(verdict.status, verdict.reason + "\n"), None
        if verdict.subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = verdict.subprotocol
            # Answered: the connection need not keep it (a browser's token, at times).
            verdict = replace(verdict, subprotocol=None)
        upgrade = _pushgate_upgrade(verdict, request.path.partition("?")[2])
        if self._hook is not None and verdict.claims is None:
            asked = self._hook.ask(request, peer, verdict, resume=upgrade.resume)
            if isinstance(asked, Refusal):  # too many calls in flight
                self.refused(asked, peer, now)
                return proto.reject(asked.status, asked.reason + "\n"), None
            upgrade = replace(upgrade, deciding=asked)
        return response, upgrade

    def _admit_pusher(
        self, proto: ServerProtocol, request: Request, path: str, peer: str, now: float
    ) -> tuple[Response, Upgrade | None]:
        """A Pusher client's upgrade: Origin as for any; an unknown key or version is
        accepted and then told in the protocol (pusher:error and a close code in the
        4000s), which is what its clients act on (an HTTP refusal they retry)."""
        response = proto.accept(request)
        if response.status_code != 101:
            return response, None
        refusal = self.gatekeeper.check_origin(request)
        if refusal is not None:
            self.refused(refusal, peer, now)
            return proto.reject(refusal.status, refusal.reason + "\n"), None
        key = path[len(PUSHER_PREFIX) :]
        app = self._pusher_apps.by_key(key)
        version = parse_qs(request.path.partition("?")[2]).get("protocol", [""])[-1]
        problem: tuple[int, str] | None = None
        if app is None:
            problem = (4001, f"App key {key} not in this cluster")
        elif not version:
            problem = (4008, "No protocol version supplied: connect with ?protocol=7")
        elif not version.isdigit() or int(version) not in PUSHER_VERSIONS:
            problem = (4007, f"Unsupported protocol version {version}: this server speaks 7")
        admitted = Admitted(None, None)
        return response, Upgrade(admitted=admitted, pusher=True, app=app, pusher_refusal=problem)

    def _events(
        self, proto: ServerProtocol, request: Request, peer: str, now: float
    ) -> tuple[Response, Upgrade | None]:
        """``GET /events``: the gatekeeper decides as for an upgrade (Origin, token),
        then the query is read (400 when it cannot be: a room id, a Last-Event-ID);
        without a token, the connect hook (if any) decides too. The streams are
        settled by :meth:`open_stream`, once the claims are final."""
        verdict = self.gatekeeper.check(request)
        if isinstance(verdict, Refusal):
            self.refused(verdict, peer, now)
            return proto.reject(verdict.status, verdict.reason + "\n"), None
        try:
            query = parse_query(
                request.path.partition("?")[2], request.headers.get("Last-Event-ID")
            )
        except QueryError as exc:
            return proto.reject(400, f"Bad Request: {exc}\n"), None
        upgrade = Upgrade(admitted=verdict, stream=query)
        if self._hook is not None and verdict.claims is None:
            asked = self._hook.ask(request, peer, verdict, resume=False)
            if isinstance(asked, Refusal):  # too many calls in flight
                self.refused(asked, peer, now)
                return proto.reject(asked.status, asked.reason + "\n"), None
            upgrade = replace(upgrade, deciding=asked)
        return _stream_response(request.headers.get("Origin")), upgrade

    def open_stream(
        self, proto: ServerProtocol, response: Response, upgrade: Upgrade, peer: str, now: float
    ) -> tuple[Response, SseStart | None]:
        """The streams an admitted ``/events`` request opens (its token's rooms and
        user, the rooms it names as their namespaces allow), with ``response`` (its
        200); or a refusal (401, 403, 400, 409) and None."""
        admitted, query = upgrade.admitted, upgrade.stream
        assert admitted is not None
        assert query is not None
        verdict = resolve(
            query,
            admitted.conn_id or new_conn_id(),
            admitted.claims,
            self.subscriptions,
            max_rooms=self._node.hub.max_rooms_per_conn,
        )
        if isinstance(verdict, Refusal):
            self.refused(verdict, peer, now)
            refusal = proto.reject(verdict.status, verdict.reason + "\n")
            refusal.headers["Server"] = SERVER_HEADER
            return refusal, None
        return response, verdict

    def _health(self, proto: ServerProtocol, path: str) -> Response:
        """``/healthz``: the process serves. ``/readyz``: and its broker is ready."""
        ready = path == "/healthz" or self._node.ready
        status = "serving" if path == "/healthz" else ("ready" if ready else "not ready")
        body = json.dumps({"ok": ready, "status": status}, separators=(",", ":"))
        response = proto.reject(200 if ready else 503, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response


def _browser_client(proto: ServerProtocol) -> Response:
    """pushgate.js, so a page can import the client from the gateway it talks to."""
    body, content_type = static_file("pushgate.js")
    response = proto.reject(200, "")
    response.body = body
    for name, value in (
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
    ):
        del response.headers[name]
        response.headers[name] = value
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _stream_response(origin: str | None) -> Response:
    """The head of an event stream: no length (it ends when the connection does),
    not cached or transformed, not buffered by nginx; readable by the page of an
    ``origin`` the Origin policy allowed (EventSource reads cross-origin with CORS)."""
    headers = Headers(
        [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache, no-transform"),
            ("X-Accel-Buffering", "no"),
            ("Connection", "close"),
        ]
    )
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return Response(200, "OK", headers)


def _allowed_methods(path: str) -> tuple[str, ...]:
    upgrades = path in (ENDPOINT, ECHO_ENDPOINT, EVENTS_PATH) or path.startswith(PUSHER_PREFIX)
    return UPGRADE_METHODS if upgrades else READ_METHODS


def _pushgate_upgrade(admitted: Admitted, query: str) -> Upgrade:
    """The pushgate protocol for an admitted client, as its query asks: ``resume``
    (it resumes a session first), ``v=2`` (it reads control events)."""
    parsed = parse_qs(query)
    return Upgrade(
        admitted=admitted, resume="resume" in parsed, events=parsed.get("v", [""])[-1] == "2"
    )
