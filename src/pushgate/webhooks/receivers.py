"""Which webhook receivers the settings name, and what each wants: --webhook,
--namespace-webhooks (and a namespace's ``webhook`` in --config), --pusher-webhook.

Pure: no I/O.
"""

from pushgate.config import Config
from pushgate.webhooks.events import Receiver

# The events that need the rooms' members, or the sessions, kept in the presence store.
ROOM_EVENTS = frozenset({"room_occupied", "room_vacated", "member_joined", "member_left"})
SESSION_EVENTS = frozenset({"session_started", "session_ended"})
# What a Pusher app's receiver gets besides the room events (webhooks/pusherformat.py).
PUSHER_EVENTS = frozenset({"client_message", "cache_miss"})


def webhook_receivers(config: Config) -> list[Receiver]:
    """The --webhook URLs, each wanting the --webhook-events, and client messages
    (which only namespaces with +webhook send); then each --namespace-webhooks URL,
    wanting the room events of --webhook-events and client messages, of its
    namespaces only; then each --pusher-webhook URL, wanting its app's room events,
    client messages and cache misses, in Pusher's format."""
    events = frozenset(name.strip() for name in config.webhook_events.split(",") if name.strip())
    urls = [url.strip() for url in config.webhook.split(",") if url.strip()]
    receivers = [Receiver(url, events | {"client_message"}) for url in urls]
    by_url: dict[str, set[str]] = {}
    for spec in config.namespace_webhooks.split(","):
        name, equals, url = spec.partition("=")
        if equals:
            by_url.setdefault(url.strip(), set()).add(name.strip())
    room_events = (events & ROOM_EVENTS) | {"client_message"}
    receivers += [Receiver(url, room_events, frozenset(names)) for url, names in by_url.items()]
    apps = config.pusher_apps
    for app_id, url in config.pusher_receivers:
        app = apps.by_id(app_id)
        if app is not None:  # it is: Config checked every id names an app
            wanted = ROOM_EVENTS | PUSHER_EVENTS
            receivers.append(Receiver(url, wanted, frozenset({app.id}), (app.key, app.secret)))
    return receivers
