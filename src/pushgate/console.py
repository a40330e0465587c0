"""The console page and the browser client, served over HTTP.

``add_console_routes(app)`` adds to an aiohttp application::

    GET /                     the console page (static/console.html)
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
"""

import hashlib
from functools import cache
from importlib.resources import files

from aiohttp import web

STATIC_FILES: dict[str, str] = {
    "console.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "pushgate.js": "text/javascript; charset=utf-8",
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
    """Serve the console at ``/`` and its files under ``/static/``."""
    app.router.add_get("/", _console)
    app.router.add_get("/static/{name}", _static)


async def _console(request: web.Request) -> web.StreamResponse:
    return _serve(request, "console.html")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    # Public files: a page on another origin may import pushgate.js (module scripts
    # are fetched with CORS).
    return _serve(request, name, {"Access-Control-Allow-Origin": "*"})


def _serve(
    request: web.Request, name: str, extra: dict[str, str] | None = None
) -> web.StreamResponse:
    body, content_type = static_file(name)
    etag = _etag(name)
    headers = {**SECURITY_HEADERS, **(extra or {}), "ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = content_type
    return web.Response(body=body, headers=headers)


@cache
def _etag(name: str) -> str:
    return '"' + hashlib.sha256(static_file(name)[0]).hexdigest()[:16] + '"'
