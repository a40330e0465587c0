"""What the logic API's handlers (api.py) and middlewares (apimiddlewares.py)
share: the keys of what its aiohttp application holds (the node, the cluster's
control, the API keys, ...) and how it answers: one compact JSON line, ``{"ok":true,
...}`` or ``{"ok":false,"error":"..."}``."""

import json
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from pushgate.control import Control
from pushgate.metrics import Registries
from pushgate.node import Node
from pushgate.security import ApiKeys

NODE_KEY = web.AppKey("node", Node)
CONTROL_KEY = web.AppKey("control", Control)
METRICS_KEY = web.AppKey("metrics", Registries)
API_KEYS_KEY = web.AppKey("api_keys", ApiKeys)
API_HOST_KEY = web.AppKey("api_host", str)
PUSHER_IDS_KEY = web.AppKey("pusher_ids", list[str])
STARTED_KEY = web.AppKey("started", float)

_compact = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def _json_line(value: object) -> str:
    """An answer's body: compact JSON ending with a newline, so that a terminal
    prompt after ``curl`` starts on a line of its own, and answers can be read as
    JSON lines."""
    return _compact(value) + "\n"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ok(body: dict[str, object], status: int = 200) -> web.Response:
    return web.json_response({"ok": True, **body}, status=status, dumps=_json_line)


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response(
        {"ok": False, "error": message, **extra}, status=status, dumps=_json_line
    )
