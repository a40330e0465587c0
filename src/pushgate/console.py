"""The console page and the browser client, served over HTTP.

``add_console_routes(app)`` adds to an aiohttp application::

    GET /                     the console page (static/console.html)
    GET /docs                 the logic API's reference, read from /openapi.json
    GET /static/<name>        console.css, console.js, charts.js, pushgate.js (text/javascript),
                              with Access-Control-Allow-Origin: * so any page may import them

The files are read from the package once and served from memory with an ETag, so
a page reload costs a 304. The page gets a Content-Security-Policy that allows its
own scripts only, and WebSocket and HTTP connections to any host (the gateway and
the API are configurable in the page). Nothing secret is ever put in the page: the
API key is typed by the person using it. Since a link's ``?api=`` and ``?ws=`` may
point anywhere, the page (console.js) uses a URL on another host than its own only
once the person confirms that host in a dialog; the key and the connection token go
to no other host. For other servers (the gateway),
:func:`static_file` gives a file's bytes and content type.

The page learns which gateway to connect to from its server: in a process that is
also a gateway (``serve``), :func:`show_gateway` makes the page say its address in
``<meta name="pushgate-gateway" content="HOST:PORT">`` (HOST empty: the host the page
was loaded from, when the gateway listens on every address or on the API's). A logic
node alone knows no gateway unless ``--console-gateway`` names it (``serve --workers``
names the workers' port to its logic child): its page guesses this host, port 8888
(``?ws=`` says otherwise).
"""

import hashlib
import html
from functools import cache
from importlib.resources import files
from typing import Protocol

from aiohttp import web


class GatewayAddress(Protocol):
    """Where the page's gateway listens, as (host, port), asked when the page is served."""

    def __call__(self) -> tuple[str, int]: ...


GATEWAY_KEY = web.AppKey("console_gateway", GatewayAddress)
_GATEWAY_META = b'<meta name="pushgate-gateway" content="">'
# Addresses that mean "every address": the page's own host reaches the gateway too.
ANY_ADDRESS = ("", "0.0.0.0", "::")

STATIC_FILES: dict[str, str] = {
    "console.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "pushgate.js": "text/javascript; charset=utf-8",
    "docs.html": "text/html; charset=utf-8",
    "docs.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss: http: https:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def static_file(name: str) -> tuple[bytes, str]:
    """The bytes and Content-Type of one shipped file; KeyError for any other name."""
    content_type = STATIC_FILES[name]
    return files("pushgate").joinpath("static", name).read_bytes(), content_type


def add_console_routes(app: web.Application) -> None:
    """Serve the console at ``/``, the API's reference page at ``/docs``, and their
    files under ``/static/``."""
    app.router.add_get("/", _console)
    app.router.add_get("/docs", _docs)
    app.router.add_get("/static/{name}", _static)


def show_gateway(app: web.Application, where: GatewayAddress) -> None:
    """Make the page served by ``app`` connect to the gateway ``where()`` names: its
    listening (host, port), asked on each request, once it listens (port 0 is only
    known then). Call before ``app`` is started."""
    app[GATEWAY_KEY] = where


def gateway_meta(ws_host: str, ws_port: int, api_host: str) -> bytes:
    """The page's meta element naming the gateway: an empty host where the page's
    own host reaches it (every address, or the address the page came through)."""
    host = "" if ws_host in ANY_ADDRESS or ws_host == api_host else ws_host
    if ":" in host:
        host = f"[{host}]"
    content = html.escape(f"{host}:{ws_port}")
    return f'<meta name="pushgate-gateway" content="{content}">'.encode()


async def _console(request: web.Request) -> web.StreamResponse:
    where = request.app.get(GATEWAY_KEY)
    if where is None:
        return _serve(request, "console.html")
    host, port = where()
    api_host = request.transport.get_extra_info("sockname")[0] if request.transport else ""
    meta = gateway_meta(host, port, api_host)
    body = static_file("console.html")[0].replace(_GATEWAY_META, meta)
    return _serve(request, "console.html", body=body)


async def _docs(request: web.Request) -> web.StreamResponse:
    """The logic API's reference: a page that reads /openapi.json (docs.js)."""
    return _serve(request, "docs.html")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    # Public files: a page on another origin may import pushgate.js (module scripts
    # are fetched with CORS).
    return _serve(request, name, {"Access-Control-Allow-Origin": "*"})


def _serve(
    request: web.Request,
    name: str,
    extra: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
) -> web.StreamResponse:
    """A shipped file (or ``body``, the file as rendered for this request)."""
    shipped, content_type = static_file(name)
    etag = _etag(name) if body is None else _etag_of(body)
    body = shipped if body is None else body
    headers = {**SECURITY_HEADERS, **(extra or {}), "ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = content_type
    return web.Response(body=body, headers=headers)


@cache
def _etag(name: str) -> str:
    return _etag_of(static_file(name)[0])


def _etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
