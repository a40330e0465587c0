"""How `pushgate listen` prints a push (terminal.format_push): pure, no sockets."""

import json
from datetime import UTC, datetime

from pushgate.terminal import format_push
from pushgate.wireclient import Push, Sender

WHEN = datetime(2026, 12, 5, 17, 30, 1, 234000, tzinfo=UTC)


def text(push: Push) -> str:
    return format_push(push, WHEN, as_json=False).split("  ", 1)[1]


def test_each_push_says_where_it_was_pushed() -> None:
    assert text(Push(3, {"a": 1}, room="news")) == 'type 3  room news  {"a":1}'
    assert text(Push(4, "hi", user="ann")) == 'type 4  user ann  "hi"'
    assert text(Push(5, "all of you")) == 'type 5  all  "all of you"'


def test_a_members_message_says_who_sent_it() -> None:
    said = Push(7, "hello", room="chat:1", sender=Sender("3cc9", "ann"))
    assert text(said) == 'type 7  room chat:1  from ann  "hello"'
    anonymous = Push(7, "hello", room="chat:1", sender=Sender("3cc9"))
    assert text(anonymous) == 'type 7  room chat:1  from 3cc9  "hello"'


def test_json_keeps_everything_the_push_had() -> None:
    push = Push(7, "hello", "chat:1", None, 42, "9f2c", Sender("3cc9", "ann"))
    assert json.loads(format_push(push, WHEN, as_json=True)) == {
        "time": "2026-12-05T17:30:01.234Z",
        "type": 7,
        "data": "hello",
        "room": "chat:1",
        "from": {"wsId": "3cc9", "user": "ann"},
        "seq": 42,
        "epoch": "9f2c",
    }
    to_user = json.loads(format_push(Push(4, 1, user="ann"), WHEN, as_json=True))
    assert to_user == {"time": "2026-12-05T17:30:01.234Z", "type": 4, "data": 1, "user": "ann"}
