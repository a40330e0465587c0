"""A Flask app that uses pushgate (README, "Use it from your web app"): it knows who
its user is, so it mints that user's connection token, serves a page whose
pushgate.js (loaded from the gateway) connects with it, and pushes to the user, to
a room and to everyone through the logic API with the blocking SyncPushAPI.

    pip install flask pushgate
    PUSHGATE_TOKEN_SECRET=$(openssl rand -hex 32) pushgate serve &
    PUSHGATE_TOKEN_SECRET=<the same> flask --app examples/flask/app.py run

Then open http://127.0.0.1:5000/?user=ann in a browser, and in another tab
http://127.0.0.1:5000/?user=bob: each page shows what reaches it; its buttons ask
the app to push. A real app takes the user from its own login session, not from the
query string, and keeps the API key (``PUSHGATE_API_KEY``) on the server side, as
here: the page never talks to the logic API.
"""

import json
import os
from typing import Any

from flask import Flask, abort, request

from pushgate.syncpushapi import SyncPushAPI
from pushgate.tokens import make_token

# Where pushgate is: the gateway as the browser reaches it, the API as this app does.
GATEWAY_URL = os.environ.get("PUSHGATE_GATEWAY_URL", "ws://127.0.0.1:8888/connect")
API_URL = os.environ.get("PUSHGATE_API_URL", "http://127.0.0.1:9999")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>pushgate from Flask: {user}</title>
<h1>Hello, {user}</h1>
<p id="state">connecting…</p>
<button id="me">push to me</button>
<button id="news">push to the news room</button>
<button id="all">push to everyone</button>
<ul id="log"></ul>
<script type="module">
  import {{ PushgateClient }} from {pushgate_js};
  const log = (text) => {{
    const item = document.createElement("li");
    item.textContent = text;
    document.getElementById("log").append(item);
  }};
  // The token is fetched when the client (re)connects, so an expired one is renewed.
  const token = async () => (await (await fetch("/token")).json()).token;
  const client = new PushgateClient({gateway}, {{ token }});
  client.addEventListener("message", (e) =>
    log(`${{e.detail.room ?? e.detail.user ?? "all"}}: ${{JSON.stringify(e.detail.data)}}`));
  client.addEventListener("open", () => {{
    document.getElementById("state").textContent = `connected as ${{client.wsId}}`;
  }});
  for (const target of ["me", "news", "all"]) {{
    const push = () => fetch(`/push/${{target}}`, {{ method: "POST" }});
    document.getElementById(target).onclick = push;
  }}
  window.pushgate = client;  // for the curious (and tests/test_example_flask.py)
  await client.connect();
</script>
"""


def create_app(token_secret: str, api: SyncPushAPI, gateway_url: str = GATEWAY_URL) -> Flask:
    """The app, with the secret it shares with pushgate (--token-secret) and the API
    client it pushes with."""
    app = Flask(__name__)
    pushgate_js = gateway_url.replace("ws", "http", 1).rsplit("/", 1)[0] + "/static/pushgate.js"

    def current_user() -> str:
        # A real app: the user of its login session. Here: ?user=, or the cookie it set.
        user = request.args.get("user") or request.cookies.get("user")
        if not user or not user.isalnum() or len(user) > 32:
            abort(400, "who are you? open /?user=NAME (letters and digits)")
        return user

    @app.get("/")
    def page() -> Any:
        user = current_user()
        html = PAGE.format(
            user=user, gateway=json.dumps(gateway_url), pushgate_js=json.dumps(pushgate_js)
        )
        response = app.make_response(html)
        response.set_cookie("user", user, httponly=True, samesite="Strict")
        return response

    @app.get("/token")
    def token() -> Any:
        # The user's connection token: its user, its rooms, a name others may see.
        user = current_user()
        minted = make_token(token_secret, user, rooms=["news"], ttl=3600, info={"name": user})
        return {"token": minted}

    @app.post("/push/<target>")
    def push(target: str) -> Any:
        user = current_user()
        message = {"from": user, "text": f"{user} pressed '{target}'"}
        if target == "me":
            result = api.push_user(user, message, tag=2)
        elif target == "news":
            result = api.push_room("news", message, tag=2)
        elif target == "all":
            result = api.push_all(message, tag=2)
        else:
            abort(404)
        return {"delivered": result.delivered}

    return app


def main() -> Flask:
    """The app as `flask --app examples/flask/app.py run` makes it."""
    secret = os.environ.get("PUSHGATE_TOKEN_SECRET", "")
    if not secret:
        raise SystemExit("set PUSHGATE_TOKEN_SECRET to pushgate's --token-secret")
    return create_app(secret, SyncPushAPI(API_URL, api_key=os.environ.get("PUSHGATE_API_KEY")))


if __name__ == "__main__":
    main().run()
