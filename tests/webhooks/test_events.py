"""The pure parts of webhooks: events, receivers, ids, bodies, signatures."""

import json

from pushgate.webhooks.events import (
    Entry,
    Queued,
    Receiver,
    WebhookEvent,
    body,
    encode,
    event_id,
    id_count,
    id_ms,
    lost_between,
)
from pushgate.webhooks.signing import sign, verify

SECRET = b"k" * 32
ROOMS = frozenset({"member_joined", "room_occupied"})


def test_an_event_is_queued_with_its_rooms_namespace() -> None:
    """A room event carries its room's namespace (the part before the first ':', or
    the default ""), a session event none; the JSON keeps the data as given."""
    chat = encode(WebhookEvent("member_joined", {"room": "chat:42", "user": "é"}, 1700))
    lobby = encode(WebhookEvent("room_occupied", {"room": "lobby"}, 1701))
    session = encode(WebhookEvent("session_started", {"wsId": "abc"}, 1702))
    assert (chat.namespace, lobby.namespace, session.namespace) == ("chat", "", None)
    assert json.loads(chat.payload) == {
        "name": "member_joined",
        "time_ms": 1700,
        "data": {"room": "chat:42", "user": "é"},
    }


def test_a_receiver_gets_the_events_it_names_of_its_namespaces() -> None:
    """Without namespaces a receiver gets every event it names; with them, only the
    room events of those namespaces (the default one is "")."""
    everything = Receiver("http://a/", ROOMS | {"session_started"})
    chat = Receiver("http://a/", ROOMS, frozenset({"chat", ""}))
    assert everything.wants("session_started", None)
    assert everything.wants("member_joined", "other")
    assert not everything.wants("member_left", "chat")
    assert chat.wants("member_joined", "chat")
    assert chat.wants("member_joined", "")
    assert not chat.wants("member_joined", "other")
    assert not chat.wants("session_started", None)


def test_a_receivers_key_follows_its_url_and_filters() -> None:
    """Two receivers configured alike share a key (a cursor); any difference splits it."""
    one = Receiver("http://a/", ROOMS, frozenset({"chat"}))
    assert one.key == Receiver("http://a/", frozenset(sorted(ROOMS)), frozenset({"chat"})).key
    assert one.key != Receiver("http://b/", ROOMS, frozenset({"chat"})).key
    assert one.key != Receiver("http://a/", ROOMS).key
    assert one.key != Receiver("http://a/", ROOMS, frozenset({"chat", "x"})).key


def test_a_body_splices_each_id_into_its_event() -> None:
    """The POST body is {"events": [...]}, each event with its id first."""
    first = Queued("5-1", encode(WebhookEvent("room_vacated", {"room": "a"}, 3)))
    second = Queued("6-2", Entry("x", None, b'{"name":"x","time_ms":4,"data":{}}'))
    assert json.loads(body([first, second])) == {
        "events": [
            {"id": "5-1", "name": "room_vacated", "time_ms": 3, "data": {"room": "a"}},
            {"id": "6-2", "name": "x", "time_ms": 4, "data": {}},
        ]
    }


def test_ids_count_the_events_between_them() -> None:
    """An id carries when it was queued and its count: a gap says how many are
    missing; a count that went back says the queue started again."""
    assert (id_ms(event_id(1700, 9)), id_count(event_id(1700, 9))) == (1700, 9)
    assert lost_between(None, "5-1") == 0
    assert lost_between("5-1", "5-2") == 0
    assert lost_between("5-1", "9-7") == 5
    assert lost_between("5-9", "9-1") is None


def test_a_signature_verifies_its_body_secret_and_time() -> None:
    """verify() accepts the header sign() made for the body, and nothing else: another
    body, another secret, a time out of tolerance, a malformed header."""
    payload = b'{"events":[]}'
    header = sign(SECRET, payload, 1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify(SECRET, payload, header, now=1_000_100)
    assert not verify(SECRET, payload + b" ", header, now=1_000_100)
    assert not verify(b"x" * 32, payload, header, now=1_000_100)
    assert not verify(SECRET, payload, header, now=1_000_301)
    assert not verify(SECRET, payload, header.replace("t=", "t=x"), now=1_000_100)
    assert not verify(SECRET, payload, "v1=é", now=1_000_100)


def test_any_of_several_signatures_may_match() -> None:
    """A header with two v1 (a secret being rotated) verifies under either secret."""
    payload = b"{}"
    old = sign(b"o" * 32, payload, 50).rpartition(",")[2]
    header = sign(SECRET, payload, 50) + "," + old
    assert verify(SECRET, payload, header, now=50)
    assert verify(b"o" * 32, payload, header, now=50)
