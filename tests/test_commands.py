"""The logic API's requests: parsed from form or JSON fields, checked, or refused by name."""

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushgate.commands import (
    ROOM_ID_PATTERN,
    Fields,
    Membership,
    PushAll,
    PushRoom,
    parse_conn_id,
    parse_room_id,
    parse_tag,
)
from pushgate.errors import InvalidField
from pushgate.ids import ConnId, RoomId

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
