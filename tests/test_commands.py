"""The logic API's requests: parsed from form or JSON fields, checked, or refused by name."""

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushgate.commands import (
    Disconnect,
    Fields,
    Membership,
    PushAll,
    PushConn,
    PushRoom,
    PushUser,
    UserMembership,
    parse_batch,
    parse_batch_item,
    parse_close_code,
    parse_close_reason,
    parse_conn_id,
    parse_flag,
    parse_membership,
    parse_room_id,
    parse_tag,
    parse_user_id,
)
from pushgate.errors import InvalidField
from pushgate.ids import ROOM_ID_PATTERN, ConnId, RoomId

WS_ID = "0b8f8a52-3c3e-4f0e-9d8e-2a3c7f1e5b6d"


def refused(field: str, value: object) -> InvalidField:
    """Parse ``value`` as ``field``, expect InvalidField naming it, and return the error."""
    parsers = {"tag": parse_tag, "id": parse_room_id, "wsId": parse_conn_id}
    with pytest.raises(InvalidField) as info:
        parsers[field](value)
    assert info.value.field == field
    return info.value


# Whole requests


def test_push_all_from_form_fields() -> None:
    """A curl -d form (every value a string) makes a push to all with an integer tag."""
    assert PushAll.from_fields({"val": "test push", "tag": "3"}) == PushAll(3, "test push")


def test_push_room_from_form_fields() -> None:
    """A form push to a room takes the room id and tag from strings."""
    push = PushRoom.from_fields({"id": "1", "tag": "3", "val": "hello"})
    assert push == PushRoom(room=RoomId("1"), tag=3, val="hello")


def test_membership_from_form_fields() -> None:
    """A form join names the room and the wsId as strings."""
    membership = Membership.from_fields({"id": "1", "wsId": WS_ID})
    assert membership == Membership(room=RoomId("1"), conn=ConnId(WS_ID))


@pytest.mark.parametrize(
    "val",
    [None, {"a": [1, 2]}, [1, "two", None], 3.5, 0, True, "", "中文"],
)
def test_push_all_from_json_fields_keeps_any_val(val: object) -> None:
    """A JSON push keeps its val as given, whatever JSON value it is (null included)."""
    assert PushAll.from_fields({"tag": 2, "val": val}) == PushAll(2, val)


def test_push_room_from_json_fields_takes_an_integer_room_id() -> None:
    """A JSON push to a room accepts an integer room id and names the room as text."""
    push = PushRoom.from_fields({"id": 9, "tag": 4, "val": {"k": None}})
    assert (push.room, push.tag, push.val) == ("9", 4, {"k": None})


def test_membership_from_json_fields() -> None:
    """A JSON join takes an integer room id and canonicalises the wsId."""
    membership = Membership.from_fields({"id": 9, "wsId": WS_ID.upper()})
    assert (membership.room, membership.conn) == ("9", WS_ID)


@pytest.mark.parametrize(
    ("build", "fields", "missing"),
    [
        (PushAll.from_fields, {"tag": "3"}, "val"),
        (PushAll.from_fields, {"val": "x"}, "tag"),
        (PushRoom.from_fields, {"tag": "3", "val": "x"}, "id"),
        (PushRoom.from_fields, {"id": "1", "val": "x"}, "tag"),
        (PushRoom.from_fields, {"id": "1", "tag": "3"}, "val"),
        (Membership.from_fields, {"wsId": WS_ID}, "id"),
        (Membership.from_fields, {"id": "1"}, "wsId"),
    ],
)
def test_missing_field_is_named(
    build: Callable[[Fields], object], fields: Fields, missing: str
) -> None:
    """A request without a required field is refused with that field's name."""
    with pytest.raises(InvalidField) as info:
        build(fields)
    assert info.value.field == missing
    assert "required" in info.value.message


def test_null_val_is_not_missing() -> None:
    """A JSON val of null is a value, not a missing field."""
    assert PushRoom.from_fields({"id": "r", "tag": 2, "val": None}).val is None


def test_invalid_field_in_whole_request_is_named() -> None:
    """A request whose tag is bad is refused naming tag, not another field."""
    with pytest.raises(InvalidField) as info:
        PushRoom.from_fields({"id": "ok", "tag": "1", "val": "x"})
    assert info.value.field == "tag"


# Tags


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2), ("2", 2), ("3", 3), (2**53 - 1, 2**53 - 1), (str(2**53 - 1), 2**53 - 1)],
)
def test_tag_accepts_integers_from_2_to_2_53_minus_1(value: object, expected: int) -> None:
    """Tags from 2 to 2**53-1 are accepted, as numbers or decimal text."""
    assert parse_tag(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (1, "1"),
        (-2, "-2"),
        ("1", "'1'"),
        ("abc", "'abc'"),
        ("", "''"),
        ("3.0", "'3.0'"),
        (2**53, str(2**53)),
        (str(2**53), repr(str(2**53))),
        (True, "True"),
        (False, "False"),
        (3.0, "3.0"),
        (None, "None"),
        ([3], "[3]"),
    ],
)
def test_tag_refuses_reserved_out_of_range_and_non_integers(value: object, shown: str) -> None:
    """Reserved, out-of-range and non-integer tags are refused, naming what arrived."""
    error = refused("tag", value)
    assert error.message.endswith(f"got {shown}")


def test_error_message_cuts_a_long_value_short() -> None:
    """A huge bad value is quoted only in part, so error messages stay short."""
    error = refused("tag", "x" * 10_000)
    assert "'xxx" in error.message
    assert len(error.message) < 200


# Room ids


@pytest.mark.parametrize(
    "value",
    ["1", "a", "lobby", "Room_1.2:3-4", "a" * 64, "-", ":", "."],
)
def test_room_id_accepts_1_to_64_allowed_characters(value: str) -> None:
    """Room ids of 1-64 letters, digits and _-.: are accepted unchanged."""
    assert parse_room_id(value) == value


@pytest.mark.parametrize(("value", "expected"), [(9, "9"), (0, "0"), (123456, "123456")])
def test_integer_room_id_becomes_text(value: int, expected: str) -> None:
    """A non-negative JSON integer room id is taken as its decimal text."""
    assert parse_room_id(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", "''"),
        ("a" * 65, "'aaa"),
        ("a b", "'a b'"),
        ("中文", "'中文'"),
        ("lobby\n", "'lobby\\n'"),
        ("a/b", "'a/b'"),
        (-1, "-1"),
        (True, "True"),
        (1.0, "1.0"),
        (None, "None"),
        (10**64, "'1000"),
    ],
)
def test_room_id_refuses_bad_text_and_non_text(value: object, shown: str) -> None:
    """Room ids that are empty, too long, have other characters or are not text are refused."""
    error = refused("id", value)
    assert f"got {shown}" in error.message


@given(st.text() | st.from_regex(ROOM_ID_PATTERN, fullmatch=True))
def test_any_text_room_id_is_valid_or_refused_as_id(value: str) -> None:
    """Any text is either a room id matching the pattern, unchanged, or refused as field id."""
    result: RoomId | InvalidField
    try:
        result = parse_room_id(value)
    except InvalidField as exc:
        result = exc
    if isinstance(result, InvalidField):
        assert result.field == "id"
        assert not ROOM_ID_PATTERN.fullmatch(value)
    else:
        assert result == value
        assert ROOM_ID_PATTERN.fullmatch(result)


# wsIds


@pytest.mark.parametrize("value", [WS_ID, WS_ID.upper(), "0B8F8A52-3c3e-4F0E-9d8e-2A3C7F1E5B6D"])
def test_wsid_is_canonicalised_to_lower_case(value: str) -> None:
    """A wsId in any letter case is accepted as the lower-case form the welcome gave."""
    assert parse_conn_id(value) == WS_ID


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", "''"),
        ("not-a-uuid", "'not-a-uuid'"),
        (WS_ID[:-1], repr(WS_ID[:-1])),
        (WS_ID + "0", repr(WS_ID + "0")),
        (WS_ID.replace("0", "g"), "'gb8f"),
        (123, "123"),
        (None, "None"),
        ([WS_ID], "['0b8f"),
    ],
)
def test_wsid_refuses_what_is_not_a_uuid(value: object, shown: str) -> None:
    """Anything that is not a UUID is refused as wsId, naming what arrived."""
    error = refused("wsId", value)
    assert f"got {shown}" in error.message


@pytest.mark.parametrize(
    "value",
    ["+" + "1" * 31, "0x" + "a" * 30, " " + "a" * 31, "\u0661" * 32],
)
def test_wsid_refuses_int_syntax_that_is_not_uuid_hex(value: str) -> None:
    """Text that only int() reads as hex (a sign, 0x, spaces, non-ASCII digits) is no wsId."""
    refused("wsId", value)


# Users, single connections and user memberships


def test_push_user_names_the_user_as_text() -> None:
    """A push to a user: ``uid`` as a token's ``sub`` would name it (an integer
    becomes its text)."""
    assert PushUser.from_fields({"uid": "alice", "tag": "3", "val": "hi"}) == PushUser(
        "alice", 3, "hi"
    )
    assert PushUser.from_fields({"uid": 42, "tag": 2, "val": None}) == PushUser("42", 2, None)


def test_push_conn_names_one_connection() -> None:
    push = PushConn.from_fields({"wsId": WS_ID.upper(), "tag": "5", "val": [1]})
    assert push == PushConn(ConnId(WS_ID), 5, [1])


@pytest.mark.parametrize(
    ("build", "fields", "missing"),
    [
        (PushUser.from_fields, {"tag": "3", "val": "x"}, "uid"),
        (PushUser.from_fields, {"uid": "a", "val": "x"}, "tag"),
        (PushUser.from_fields, {"uid": "a", "tag": "3"}, "val"),
        (PushConn.from_fields, {"tag": "3", "val": "x"}, "wsId"),
        (PushConn.from_fields, {"wsId": WS_ID, "val": "x"}, "tag"),
        (PushConn.from_fields, {"wsId": WS_ID, "tag": "3"}, "val"),
        (UserMembership.from_fields, {"uid": "a"}, "id"),
        (UserMembership.from_fields, {"id": "r"}, "uid"),
    ],
)
def test_missing_field_of_a_user_or_connection_request_is_named(
    build: Callable[[Fields], object], fields: Fields, missing: str
) -> None:
    with pytest.raises(InvalidField) as info:
        build(fields)
    assert (info.value.field, info.value.message) == (missing, "is required")


def test_a_membership_names_one_connection_or_one_user() -> None:
    """A join or leave with ``wsId`` moves that connection, with ``uid`` every
    connection of the user; both at once is refused."""
    assert parse_membership({"id": "r", "wsId": WS_ID}) == Membership(RoomId("r"), ConnId(WS_ID))
    assert parse_membership({"id": 7, "uid": 42}) == UserMembership(RoomId("7"), "42")
    with pytest.raises(InvalidField) as info:
        parse_membership({"id": "r", "wsId": WS_ID, "uid": "a"})
    assert (info.value.field, info.value.message) == ("uid", "give wsId or uid, not both")
    with pytest.raises(InvalidField) as info:
        parse_membership({"id": "r"})
    assert info.value.field == "wsId"


@pytest.mark.parametrize("value", ["a", "x" * 128, "Ünïcode user", "a b", 0, -5])
def test_user_id_accepts_1_to_128_printable_characters(value: object) -> None:
    assert parse_user_id(value) == str(value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("", "''"), ("x" * 129, "'xxx"), ("a\tb", "'a\\tb'"), (True, "True"), (None, "None")],
)
def test_user_id_refuses_what_a_token_could_not_name(value: object, shown: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_user_id(value)
    assert info.value.field == "uid"
    assert info.value.message.startswith(f"must be 1-128 printable characters, got {shown}")


# Disconnects


def test_a_disconnect_by_default_closes_with_4000_and_keeps_the_session() -> None:
    assert Disconnect.from_fields({"wsId": WS_ID}) == Disconnect(
        ConnId(WS_ID), None, 4000, "disconnected by the operator", False
    )


def test_a_disconnect_that_ends_the_session_closes_with_4410_by_default() -> None:
    """4410 is in the range the SDKs do not reconnect after: an ended session's client
    must not come straight back as a new one."""
    assert Disconnect.from_fields({"wsId": WS_ID, "endSession": True}) == Disconnect(
        ConnId(WS_ID), None, 4410, "session ended by the operator", True
    )


def test_a_disconnect_of_a_user_with_its_code_reason_and_end_of_session() -> None:
    fields = {"uid": "alice", "code": "4999", "reason": "bye", "endSession": "true"}
    assert Disconnect.from_fields(fields) == Disconnect(None, "alice", 4999, "bye", True)


@pytest.mark.parametrize("fields", [{}, {"wsId": WS_ID, "uid": "alice"}])
def test_a_disconnect_names_exactly_one_connection_or_user(fields: Fields) -> None:
    with pytest.raises(InvalidField) as info:
        Disconnect.from_fields(fields)
    assert (info.value.field, info.value.message) == (
        "wsId",
        "give wsId or uid (exactly one of them)",
    )


@pytest.mark.parametrize(("value", "code"), [(4000, 4000), ("4500", 4500), (4999, 4999)])
def test_a_close_code_is_one_for_applications(value: object, code: int) -> None:
    assert parse_close_code(value) == code


@pytest.mark.parametrize("value", [3999, 5000, 1000, "1001", True, None, 4000.0, "x"])
def test_a_close_code_outside_4000_4999_is_refused(value: object) -> None:
    with pytest.raises(InvalidField) as info:
        parse_close_code(value)
    assert info.value.field == "code"
    assert info.value.message == f"must be an integer from 4000 to 4999, got {value!r}"


def test_a_close_reason_fits_a_close_frame() -> None:
    """At most 123 bytes of UTF-8 (counted in bytes, not characters)."""
    assert parse_close_reason("x" * 123) == "x" * 123
    assert parse_close_reason("") == ""
    for value in ("x" * 124, "é" * 62, 42, None):
        with pytest.raises(InvalidField) as info:
            parse_close_reason(value)
        assert info.value.field == "reason"
        assert info.value.message.startswith("must be text of at most 123 bytes, got ")


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        *[(True, True), ("true", True), (" TRUE ", True), ("1", True), (1, True)],
        *[
            (False, False),
            ("false", False),
            ("False", False),
            ("0", False),
            ("", False),
            (0, False),
        ],
    ],
)
def test_a_flag_is_json_true_or_false_or_their_form_text(value: object, flag: bool) -> None:
    assert parse_flag("endSession", value) is flag


@pytest.mark.parametrize("value", ["yes", "no", "2", None, [True]])
def test_a_flag_that_is_no_yes_or_no_is_refused_by_name(value: object) -> None:
    with pytest.raises(InvalidField) as info:
        parse_flag("endSession", value)
    assert (info.value.field, info.value.message) == (
        "endSession",
        f"must be true or false, got {value!r}",
    )


# Batches


def test_a_batch_holds_1_to_1000_pushes() -> None:
    assert parse_batch([{}]) == [{}]
    assert len(parse_batch([{}] * 1000)) == 1000
    not_a_batch: list[object] = [[], [{}] * 1001, {"target": "all"}, None]
    for value in not_a_batch:
        with pytest.raises(InvalidField) as info:
            parse_batch(value)
        assert (info.value.field, info.value.message) == (
            "batch",
            "the body must be a JSON array of 1 to 1000 pushes",
        )


def test_each_batch_item_is_the_push_its_target_names() -> None:
    assert parse_batch_item({"target": "all", "tag": 2, "val": 1}) == PushAll(2, 1)
    assert parse_batch_item({"target": "room", "id": "r", "tag": 2, "val": 1}) == PushRoom(
        RoomId("r"), 2, 1
    )
    assert parse_batch_item({"target": "user", "uid": "u", "tag": 2, "val": 1}) == PushUser(
        "u", 2, 1
    )
    assert parse_batch_item({"target": "conn", "wsId": WS_ID, "tag": 2, "val": 1}) == PushConn(
        ConnId(WS_ID), 2, 1
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([1], "each item must be a JSON object, got [1]"),
        ({"tag": 2, "val": 1}, "must be one of all, room, user, conn; got None"),
        ({"target": "rooms", "tag": 2}, "must be one of all, room, user, conn; got 'rooms'"),
    ],
)
def test_a_batch_item_without_a_known_target_is_refused(item: object, message: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_batch_item(item)
    assert (info.value.field, info.value.message) == ("target", message)


def test_a_batch_items_own_fields_are_checked_as_a_single_push() -> None:
    with pytest.raises(InvalidField) as info:
        parse_batch_item({"target": "room", "tag": 2, "val": 1})
    assert info.value.field == "id"


def test_a_disconnects_bad_end_session_is_named() -> None:
    with pytest.raises(InvalidField) as info:
        Disconnect.from_fields({"wsId": WS_ID, "endSession": "maybe"})
    assert info.value.field == "endSession"


def test_a_reason_too_long_is_refused_saying_what_arrived() -> None:
    with pytest.raises(InvalidField) as info:
        parse_close_reason(42)
    assert info.value.message == "must be text of at most 123 bytes, got 42"


def test_a_value_is_quoted_whole_up_to_40_characters_then_cut_to_40() -> None:
    """What arrived is quoted as Python's repr, 40 characters at most, the cut ones
    ending in an ellipsis."""
    whole = "x" * 38  # its repr is 40 characters
    assert refused("tag", whole).message.endswith(f"got {whole!r}")
    cut = refused("tag", "y" * 39).message
    assert cut.endswith("got '" + "y" * 36 + "...")


# Pushes that leave one connection out


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        (PushAll.from_fields, {"tag": 2, "val": 1}),
        (PushRoom.from_fields, {"id": "r", "tag": 2, "val": 1}),
        (PushUser.from_fields, {"uid": "u", "tag": 2, "val": 1}),
    ],
)
def test_a_push_may_exclude_one_connection_by_its_wsid(
    build: Callable[[Fields], PushAll | PushRoom | PushUser], fields: dict[str, object]
) -> None:
    """``exclude`` is a wsId in any letter case; absent or empty (a form's blank
    field), nobody is left out; anything else is refused as ``exclude``."""
    assert build({**fields, "exclude": WS_ID.upper()}).exclude == WS_ID
    assert build(fields).exclude is None
    assert build({**fields, "exclude": ""}).exclude is None
    with pytest.raises(InvalidField) as info:
        build({**fields, "exclude": "nobody"})
    assert (info.value.field, info.value.message) == (
        "exclude",
        "must be a UUID as sent in the welcome frame, got 'nobody'",
    )
