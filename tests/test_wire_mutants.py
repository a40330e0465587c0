"""The wire format of a client's operations (docs/protocol.md, "Subscribing",
"Publishing" and "Events"), without a server: what is read from a subscribe,
unsubscribe, refresh or publish, what each malformed one is told (400, the connection
kept), the bytes of replies, events and pushes that leave a connection out, and what
a client reads back from them. (tests/test_subscriptions.py and
tests/test_client_messages.py run them through a gateway.)"""

import json

import pytest

from pushgate.ids import ConnId, RoomId
from pushgate.streams import with_position
from pushgate.wire import MAX_PUSH_TAG, PONG, encode_push, encode_welcome, excluded_conn
from pushgate.wireclient import Reply, RoomEvent, is_pong, parse_server_message, parse_welcome
from pushgate.wireops import (
    OPERATIONS,
    Operation,
    OperationError,
    encode_event,
    encode_reply,
    is_operation,
    parse_operation,
)

WS_ID = ConnId("0b8f8a52-3c3e-4f0e-9d8e-2a3c7f1e5b6d")


def test_the_operations_are_those_of_the_protocol() -> None:
    assert {"subscribe", "unsubscribe", "refresh"} <= set(OPERATIONS)


def test_an_operation_is_a_type_0_object_with_an_op() -> None:
    assert is_operation({"op": "subscribe"})
    assert is_operation({"op": None})
    assert not is_operation({"wsId": "w", "session": "s"})
    assert not is_operation(["op"])
    assert not is_operation("op")


def test_a_subscribe_names_its_room_and_may_show_a_grant_or_a_token() -> None:
    assert parse_operation({"op": "subscribe", "room": "lobby:1"}) == Operation(
        "subscribe", RoomId("lobby:1")
    )
    assert parse_operation(
        {"op": "subscribe", "room": "chat:42", "id": 2, "grant": "ab12"}
    ) == Operation("subscribe", RoomId("chat:42"), 2, "ab12", None)
    assert parse_operation(
        {"op": "unsubscribe", "room": "chat:42", "id": "x" * 64, "token": "t" * 8192}
    ) == Operation("unsubscribe", RoomId("chat:42"), "x" * 64, None, "t" * 8192)
    assert parse_operation({"op": "refresh", "room": "r", "id": 0, "token": "jwt"}) == Operation(
        "refresh", RoomId("r"), 0, None, "jwt"
    )


def refused(data: object) -> tuple[str, str | None, int | str | None]:
    """What a malformed operation is told: its reason, and the op and id echoed."""
    with pytest.raises(OperationError) as info:
        parse_operation(data)
    error = info.value
    assert str(error) == error.reason
    return error.reason, error.op, error.id


ID_REASON = '"id" must be an integer or a string of at most 64 characters'
OP_REASON = f'"op" must be one of {", ".join(OPERATIONS)}'
ROOM_REASON = '"room" must be 1-64 characters of letters, digits and _-.:'


@pytest.mark.parametrize(
    ("data", "told"),
    [
        ("subscribe", ("an operation is a JSON object", None, None)),
        ({"op": "subscribe", "room": "r", "id": "x" * 65}, (ID_REASON, None, None)),
        ({"op": "subscribe", "room": "r", "id": True}, (ID_REASON, None, None)),
        ({"op": "subscribe", "room": "r", "id": 1.5}, (ID_REASON, None, None)),
        ({"op": "join", "room": "r", "id": 7}, (OP_REASON, None, 7)),
        ({"room": "r", "id": "a"}, (OP_REASON, None, "a")),
        ({"op": "subscribe", "id": 1}, (ROOM_REASON, "subscribe", 1)),
        ({"op": "subscribe", "room": "a b", "id": 1}, (ROOM_REASON, "subscribe", 1)),
        ({"op": "subscribe", "room": 5}, (ROOM_REASON, "subscribe", None)),
        (
            {"op": "subscribe", "room": "r", "grant": "", "id": 9},
            ('"grant" must be a string of 1-8192 characters', "subscribe", 9),
        ),
        (
            {"op": "subscribe", "room": "r", "grant": 12},
            ('"grant" must be a string of 1-8192 characters', "subscribe", None),
        ),
        (
            {"op": "subscribe", "room": "r", "token": "t" * 8193},
            ('"token" must be a string of 1-8192 characters', "subscribe", None),
        ),
        ({"op": "refresh", "room": "r", "id": 3}, ('a refresh needs a "token"', "refresh", 3)),
        (
            {"op": "refresh", "room": "r", "grant": "g"},
            ('a refresh needs a "token"', "refresh", None),
        ),
    ],
)
def test_a_malformed_operation_is_told_what_is_wrong(
    data: object, told: tuple[str, str | None, int | str | None]
) -> None:
    """The reason names the field; the op and the id come back when they were usable,
    so the client can match the refusal to its request."""
    assert refused(data) == told


def reply(raw: bytes) -> object:
    assert raw.endswith(b"\n")
    message = json.loads(raw)
    assert message["type"] == 0
    return message["data"]


def test_replies_say_ok_with_the_position_and_the_end_of_a_token() -> None:
    """As docs/protocol.md shows them, key for key and in that order."""
    assert encode_reply("subscribe", 2, "chat:42", position=("9f2c1a7e", 41)) == (
        b'{"type":0,"data":{"op":"subscribe","id":2,"ok":true,"room":"chat:42",'
        b'"position":["9f2c1a7e",41]}}\n'
    )
    assert reply(
        encode_reply("subscribe", 3, "chat:42", position=("e", 0), expires=1764950400.9)
    ) == {
        "op": "subscribe",
        "id": 3,
        "ok": True,
        "room": "chat:42",
        "position": ["e", 0],
        "expires": 1764950400,
    }
    assert reply(encode_reply("unsubscribe", None, "r")) == {
        "op": "unsubscribe",
        "ok": True,
        "room": "r",
    }


def test_a_refusal_says_its_code_and_reason() -> None:
    assert encode_reply("subscribe", 2, "chat:42", code=403, reason="not for you") == (
        b'{"type":0,"data":{"op":"subscribe","id":2,"ok":false,"room":"chat:42",'
        b'"code":403,"reason":"not for you"}}\n'
    )
    assert reply(encode_reply("subscribe", "a", None, code=400)) == {
        "op": "subscribe",
        "id": "a",
        "ok": False,
        "code": 400,
        "reason": "",
    }


def test_an_event_tells_a_v2_client_its_rooms_changed_and_why() -> None:
    assert encode_event("left", "chat:42", "expired") == (
        b'{"type":0,"data":{"op":"left","room":"chat:42","reason":"expired"}}\n'
    )


# Publishing (docs/protocol.md, "Publishing")


def test_a_publish_carries_a_tag_any_data_and_whether_it_echoes() -> None:
    assert parse_operation(
        {"op": "publish", "room": "chat:42", "tag": 7, "data": {"text": "hi"}, "id": 6}
    ) == Operation("publish", RoomId("chat:42"), 6, tag=7, data={"text": "hi"}, echo=False)
    assert parse_operation(
        {"op": "publish", "room": "r", "tag": MAX_PUSH_TAG, "data": None, "echo": True}
    ) == Operation("publish", RoomId("r"), None, tag=MAX_PUSH_TAG, data=None, echo=True)
    assert parse_operation({"op": "publish", "room": "r", "tag": 2, "data": 0}).tag == 2


TAG_REASON = f'a publish needs a "tag", an integer from 2 to {MAX_PUSH_TAG}'


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"tag": 1, "data": 1}, TAG_REASON),
        ({"tag": MAX_PUSH_TAG + 1, "data": 1}, TAG_REASON),
        ({"tag": "7", "data": 1}, TAG_REASON),
        ({"tag": True, "data": 1}, TAG_REASON),
        ({"data": 1}, TAG_REASON),
        ({"tag": 7}, 'a publish needs "data" (any JSON value)'),
        ({"tag": 7, "data": 1, "echo": "yes"}, '"echo" must be true or false'),
        ({"tag": 7, "data": 1, "echo": 1}, '"echo" must be true or false'),
    ],
)
def test_a_malformed_publish_is_told_what_is_wrong(data: dict[str, object], reason: str) -> None:
    assert refused({"op": "publish", "room": "r", "id": 4, **data}) == (reason, "publish", 4)


def test_a_malformed_operation_is_answered_400() -> None:
    with pytest.raises(OperationError) as info:
        parse_operation({"op": "publish", "room": "r"})
    assert info.value.code == 400


@pytest.mark.parametrize(
    "operation",
    [
        Operation("subscribe", RoomId("lobby:1")),
        Operation("subscribe", RoomId("chat:42"), 2, grant="ab12"),
        Operation("refresh", RoomId("chat:42"), "r-1", token="a.b.c"),
        Operation("unsubscribe", RoomId("chat:42"), 0),
        Operation("publish", RoomId("chat:42"), 6, tag=7, data={"text": "hi"}),
        Operation("publish", RoomId("chat:42"), None, tag=2, data=None, echo=True),
    ],
)
def test_what_a_client_sends_is_what_the_server_reads(operation: Operation) -> None:
    """The SDK's message for an operation reads back as that operation."""
    message = json.loads(json.dumps(operation.as_message()))
    assert message["type"] == 0
    assert is_operation(message["data"])
    assert parse_operation(message["data"]) == operation


def test_a_clients_message_leaves_out_what_it_does_not_say() -> None:
    """As docs/protocol.md writes them: no null keys, a publish's three keys."""
    assert Operation("subscribe", RoomId("r")).as_message() == {
        "type": 0,
        "data": {"op": "subscribe", "room": "r"},
    }
    assert Operation("publish", RoomId("r"), 1, tag=7, data="x").as_message() == {
        "type": 0,
        "data": {"op": "publish", "room": "r", "id": 1, "tag": 7, "data": "x", "echo": False},
    }


# Pushes that leave a connection out, and say who sent them


def test_a_push_that_excludes_a_connection_names_it_first() -> None:
    """Every node finds the excluded wsId in the bytes without parsing them."""
    encoded = encode_push(
        7, {"text": "hi"}, RoomId("chat:42"), exclude="w-1", sender={"wsId": "w-1", "user": "ann"}
    )
    assert encoded == (
        b'{"exclude":"w-1","type":7,"data":{"text":"hi"},"room":"chat:42",'
        b'"from":{"wsId":"w-1","user":"ann"}}\n'
    )
    assert excluded_conn(encoded) == "w-1"
    assert excluded_conn(with_position(encoded, 4, "e")) == "w-1"


def test_a_push_for_everyone_excludes_nobody() -> None:
    assert excluded_conn(encode_push(7, {"exclude": "w-1"})) is None
    assert excluded_conn(encode_push(7, "x", sender={"wsId": "w-1"})) is None
    assert excluded_conn(b'{"type":7,"data":"{\\"exclude\\":\\"w-1\\""}\n') is None


# What a client reads back


def test_a_pong_is_recognised_as_sent() -> None:
    assert is_pong(PONG)
    assert is_pong(PONG.decode())
    assert is_pong(PONG.strip())
    assert not is_pong(b'{"type":1,"data":"PING"}')
    assert not is_pong(b'{"type":1,"data":"PONG","x":1}\n')


def test_a_v2_welcome_reads_back_with_its_rooms() -> None:
    """``rooms`` only when the server told them (a v=2 client), strings only."""
    assert parse_welcome(encode_welcome(WS_ID, 10, rooms=["a", "b"])).rooms == ("a", "b")
    assert parse_welcome(encode_welcome(WS_ID, 10, rooms=[])).rooms == ()
    assert parse_welcome(encode_welcome(WS_ID, 10)).rooms is None
    odd = b'{"type":0,"data":{"wsId":"w","heartbeat":10,"rooms":["a",1,null]}}'
    assert parse_welcome(odd).rooms == ("a",)
    assert parse_welcome(b'{"type":0,"data":{"wsId":"w","heartbeat":10,"rooms":"a"}}').rooms is None


def test_a_reply_reads_back_as_encoded() -> None:
    ok = encode_reply("subscribe", 3, "chat:42", position=("e", 41), expires=1764950400)
    assert parse_server_message(ok) == Reply(
        "subscribe", 3, True, "chat:42", ("e", 41), 1764950400, None, ""
    )
    refused_ = encode_reply("publish", "p-1", "chat:42", code=403, reason="not a member")
    assert parse_server_message(refused_) == Reply(
        "publish", "p-1", False, "chat:42", None, None, 403, "not a member"
    )
    assert parse_server_message(encode_reply("unsubscribe", None, None)) == Reply(
        "unsubscribe", None, True
    )


def test_a_reply_with_keys_of_the_wrong_kind_passes_them_over() -> None:
    data = {
        "op": "subscribe",
        "ok": 1,
        "id": 1.5,
        "room": "r",
        "position": ["e", "41"],
        "expires": "soon",
        "code": "403",
        "reason": None,
    }
    assert parse_server_message(json.dumps({"type": 0, "data": data})) == Reply(
        "subscribe", None, False, "r"
    )
    for position in (["e"], ["e", 1, 2], [1, 2], "e:1", ["e", True]):
        data = {"op": "subscribe", "ok": True, "position": position}
        reply = parse_server_message(json.dumps({"type": 0, "data": data}))
        assert reply == Reply("subscribe", None, True), position


def test_an_event_reads_back_as_encoded() -> None:
    assert parse_server_message(encode_event("joined", "news", "server")) == RoomEvent(
        True, "news", "server"
    )
    assert parse_server_message(encode_event("left", "chat:42", "expired")) == RoomEvent(
        False, "chat:42", "expired"
    )
    no_reason = b'{"type":0,"data":{"op":"left","room":"news"}}'
    assert parse_server_message(no_reason) == RoomEvent(False, "news", "")


@pytest.mark.parametrize(
    "data",
    [
        {"op": "joined"},
        {"op": "moved", "room": "news", "reason": "server"},
        {"op": 5, "room": "news", "ok": True},
        {"op": "left", "room": 5, "reason": "server"},
        {"op": "subscribe", "room": ["r"], "ok": True},
    ],
)
def test_an_op_message_that_is_neither_reply_nor_event_is_passed_over(
    data: dict[str, object],
) -> None:
    assert parse_server_message(json.dumps({"type": 0, "data": data})) is None


def test_a_reply_is_told_from_a_notice_by_its_op() -> None:
    """An operation's reply may say ``ok`` false without being a lost-pushes notice."""
    message = {"type": 0, "data": {"op": "subscribe", "ok": False, "recovered": False}}
    assert isinstance(parse_server_message(json.dumps(message)), Reply)
