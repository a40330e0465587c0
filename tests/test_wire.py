"""The client-facing message format: server frames to the byte, client frames parsed."""

import json
import re
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushgate.errors import ClientFrameError, InvalidField
from pushgate.ids import ConnId, RoomId, new_conn_id
from pushgate.wire import (
    CLOSE_INVALID_DATA,
    CLOSE_UNSUPPORTED_DATA,
    PING,
    PONG,
    ClientMessage,
    ResumeRequest,
    StreamReport,
    encode_notice,
    encode_push,
    encode_welcome,
    parse_client_message,
    parse_resume,
)
from pushgate.wireclient import Notice, Push, Welcome, parse_server_message, parse_welcome

MAX_REASON_BYTES = 123
WS_ID = ConnId("0b8f8a52-3c3e-4f0e-9d8e-2a3c7f1e5b6d")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def assert_frame_error(payload: bytes, code: int) -> ClientFrameError:
    """Parse ``payload``, expect a ClientFrameError with ``code``, and return it."""
    with pytest.raises(ClientFrameError) as info:
        parse_client_message(payload)
    assert info.value.code == code
    assert len(info.value.reason.encode("utf-8")) <= MAX_REASON_BYTES
    return info.value


def parse_or_error(payload: bytes) -> ClientMessage | ClientFrameError:
    """The parsed message, or the ClientFrameError that parsing raised."""
    try:
        return parse_client_message(payload)
    except ClientFrameError as exc:
        return exc


# Server messages


def test_push_to_all_is_compact_json_with_a_newline() -> None:
    """A push to all is compact JSON with type and data, then a newline."""
    assert encode_push(3, "test push") == b'{"type":3,"data":"test push"}\n'


def test_push_keeps_non_ascii_text_as_utf8() -> None:
    """Non-ASCII text goes out as UTF-8 bytes, not as \\u escapes."""
    assert encode_push(2, "héllo 中文 🎉") == '{"type":2,"data":"héllo 中文 🎉"}\n'.encode()


def test_push_carries_any_json_value() -> None:
    """A push's data may be an object, an array, a number or null, compactly encoded."""
    val = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert encode_push(7, val) == b'{"type":7,"data":{"a":[1,2.5,null,true],"b":{"c":"d"}}}\n'
    assert encode_push(7, None) == b'{"type":7,"data":null}\n'


def test_room_push_adds_the_room_key_last() -> None:
    """A push to a room names the room after type and data."""
    assert encode_push(3, "hi", RoomId("lobby")) == b'{"type":3,"data":"hi","room":"lobby"}\n'


def test_push_to_all_has_no_room_key() -> None:
    """A push to all never carries a room key, even when data is an object."""
    frame = encode_push(3, {"x": 1})
    assert b"room" not in frame


def test_welcome_gives_wsid_and_integer_heartbeat() -> None:
    """The welcome frame carries the wsId and a whole heartbeat as an integer."""
    expected = f'{{"type":0,"data":{{"wsId":"{WS_ID}","heartbeat":10}}}}\n'.encode()
    assert encode_welcome(WS_ID, 10) == expected
    assert encode_welcome(WS_ID, 10.0) == expected


def test_welcome_keeps_a_fractional_heartbeat() -> None:
    """A fractional heartbeat interval is sent as a JSON number with its fraction."""
    expected = f'{{"type":0,"data":{{"wsId":"{WS_ID}","heartbeat":2.5}}}}\n'.encode()
    assert encode_welcome(WS_ID, 2.5) == expected


def test_pong_is_the_heartbeat_reply() -> None:
    """The PONG reply is exactly the Go server's bytes."""
    assert PONG == b'{"type":1,"data":"PONG"}\n'


# Client messages: accepted


def test_ping_is_a_heartbeat() -> None:
    """A client's PING parses as a heartbeat with its data."""
    message = parse_client_message(b'{"type":1,"data":"PING"}')
    assert message == ClientMessage(1, "PING")
    assert message.is_heartbeat
    assert PING == b'{"type":1,"data":"PING"}'


@pytest.mark.parametrize("msg_type", [0, 2, 42, -5, 2**53, 2**70])
def test_any_integer_type_is_accepted(msg_type: int) -> None:
    """Any integer type parses, and only type 1 counts as a heartbeat."""
    message = parse_client_message(json.dumps({"type": msg_type, "data": 1}).encode())
    assert message.type == msg_type
    assert not message.is_heartbeat


def test_data_is_optional() -> None:
    """A message without data parses, with data None."""
    assert parse_client_message(b'{"type":1}') == ClientMessage(1, None)


def test_non_ascii_utf8_message_is_accepted() -> None:
    """A UTF-8 message with non-ASCII text parses to that text."""
    message = parse_client_message('{"type":5,"data":"中文 é"}'.encode())
    assert message.data == "中文 é"


# Client messages: rejected


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b'{"type":1,"data":"\xc3"}', b"\xed\xa0\x80", b'{"type":1}\x80'],
)
def test_invalid_utf8_closes_with_1007(payload: bytes) -> None:
    """A message that is not valid UTF-8 closes the connection with 1007."""
    assert_frame_error(payload, CLOSE_INVALID_DATA)


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"PING", b'{"type":1,}', b"{'type':1}", b'{"type":1} x', b"[" * 100_000],
)
def test_invalid_json_closes_with_1007(payload: bytes) -> None:
    """A message that is not JSON closes the connection with 1007."""
    assert_frame_error(payload, CLOSE_INVALID_DATA)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":1,"data":NaN}',
        b'{"type":1,"data":Infinity}',
        b'{"type":1,"data":-Infinity}',
        b'{"type":NaN}',
    ],
)
def test_nan_and_infinity_close_with_1007(payload: bytes) -> None:
    """NaN and Infinity are not JSON: they close the connection with 1007."""
    assert_frame_error(payload, CLOSE_INVALID_DATA)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"[1]", "an array"),
        (b'"PING"', "a string"),
        (b"null", "null"),
        (b"1", "a number"),
        (b"true", "a boolean"),
    ],
)
def test_non_object_json_closes_with_1003(payload: bytes, kind: str) -> None:
    """Valid JSON that is not an object closes with 1003 and says what arrived."""
    error = assert_frame_error(payload, CLOSE_UNSUPPORTED_DATA)
    assert error.reason.endswith(kind)


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (b'{"data":"PING"}', "missing"),
        (b'{"type":"1","data":"PING"}', "a string"),
        (b'{"type":true}', "a boolean"),
        (b'{"type":1.0}', "a number"),
        (b'{"type":null}', "null"),
        (b'{"type":{}}', "an object"),
    ],
)
def test_missing_or_non_integer_type_closes_with_1003(payload: bytes, said: str) -> None:
    """A message object without an integer type closes with 1003 and says why."""
    error = assert_frame_error(payload, CLOSE_UNSUPPORTED_DATA)
    assert said in error.reason


@given(st.binary() | st.text().map(str.encode))
def test_arbitrary_bytes_parse_or_close_with_1003_or_1007(payload: bytes) -> None:
    """Whatever a client sends, parsing yields a message or a 1003/1007 close, nothing else."""
    result = parse_or_error(payload)
    if isinstance(result, ClientFrameError):
        assert result.code in (CLOSE_UNSUPPORTED_DATA, CLOSE_INVALID_DATA)
        assert len(result.reason.encode("utf-8")) <= MAX_REASON_BYTES
    else:
        assert isinstance(result, ClientMessage)
        assert isinstance(result.type, int)
        assert not isinstance(result.type, bool)


@given(
    msg_type=st.integers(),
    data=json_values,
    with_data=st.booleans(),
    extra=st.dictionaries(st.text().filter(lambda k: k not in ("type", "data")), json_values),
    ensure_ascii=st.booleans(),
)
def test_json_object_with_integer_type_round_trips(
    msg_type: int,
    data: object,
    with_data: bool,
    extra: dict[str, object],
    ensure_ascii: bool,
) -> None:
    """Any JSON object with an integer type parses to that type and data."""
    obj: dict[str, object] = {**extra, "type": msg_type}
    if with_data:
        obj["data"] = data
    payload = json.dumps(obj, ensure_ascii=ensure_ascii).encode("utf-8")
    message = parse_client_message(payload)
    assert message.type == msg_type
    assert message.data == (data if with_data else None)


# Both sides: what a client sends, and reads back from what the server encodes


def test_a_resume_request_reads_back_as_sent() -> None:
    """The resume message a client sends is what the server parses, and its bytes
    (the client serializes with json.dumps' defaults) are the Python client's."""
    request = ResumeRequest(WS_ID, "s3cret", {"all": ("e1", 3), "room:a": ("e2", 0)})
    payload = json.dumps(request.as_message())
    assert payload == (
        f'{{"type": 0, "data": {{"wsId": "{WS_ID}", "session": "s3cret", '
        '"since": {"all": ["e1", 3], "room:a": ["e2", 0]}}}'
    )
    assert parse_resume(parse_client_message(payload.encode())) == request


def test_a_welcome_reads_back_as_encoded() -> None:
    """A first welcome, and the answer to a resume, read back field for field."""
    assert parse_welcome(encode_welcome(WS_ID, 2.5)) == Welcome(WS_ID, 2.5)
    streams = {"all": StreamReport(True, "e1", 7), "room:a": StreamReport(False, "e2", 9)}
    encoded = encode_welcome(WS_ID, 10, session="s", resumed=True, streams=streams)
    assert parse_welcome(encoded) == Welcome(WS_ID, 10.0, "s", True, False, streams)
    refused = encode_welcome(WS_ID, 10, session="t", reason="session expired")
    assert parse_welcome(refused).reason == "session expired"


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (b'{"type":1,"data":"PONG"}', "not a welcome"),
        (b'{"type":0,"data":{"heartbeat":10}}', "no wsId"),
        (b'{"type":0,"data":{"wsId":"w","heartbeat":0}}', "not a positive number"),
        (b'{"type":0,"data":{"wsId":"w","heartbeat":true}}', "not a positive number"),
        (b"not json", "Expecting value"),
    ],
)
def test_anything_but_a_welcome_is_refused_first(payload: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_welcome(payload)


def test_pushes_read_back_with_their_target_and_position() -> None:
    """A push reads back as encoded; its stream position, when spliced in, too."""
    assert parse_server_message(encode_push(3, {"a": 1})) == Push(3, {"a": 1})
    push = parse_server_message(b'{"type":7,"data":"x","room":"r","seq":5,"epoch":"e"}\n')
    assert push == Push(7, "x", "r")
    assert isinstance(push, Push)
    assert (push.stream, push.seq, push.epoch) == ("room:r", 5, "e")
    to_user = parse_server_message(encode_push(2, None, user="alice"))
    assert isinstance(to_user, Push)
    assert (to_user.user, to_user.stream) == ("alice", "user:alice")


def test_a_notice_reads_back_and_the_rest_is_passed_over() -> None:
    """A notice names the streams not recovered; a PONG, a welcome, a type that is
    no integer, or a seq that is a boolean, are passed over or ignored."""
    streams = {"all": StreamReport(False, "e3", 4)}
    assert parse_server_message(encode_notice(streams)) == Notice(streams)
    for other in (PONG, encode_welcome(WS_ID, 10), b'{"type":"2"}', b"[2]", b'{"type":true}'):
        assert parse_server_message(other) is None
    odd = parse_server_message(b'{"type":2,"data":1,"seq":true,"room":5}')
    assert isinstance(odd, Push)
    assert (odd.room, odd.seq) == (None, 0)
    with pytest.raises(ValueError, match="Expecting value"):
        parse_server_message(b"not json")
    with pytest.raises(UnicodeDecodeError):  # a ValueError too
        parse_server_message(b"\xff not UTF-8")


# What each refusal tells a client, and what a client reads leniently


def closed_with(parse: Callable[[], object]) -> tuple[int, str]:
    """The close code and reason of the ClientFrameError ``parse`` raises."""
    with pytest.raises(ClientFrameError) as info:
        parse()
    return info.value.code, info.value.reason


def test_a_value_json_cannot_carry_is_refused_as_val() -> None:
    """A lone surrogate cannot be sent as UTF-8 JSON: the API's 400 names ``val``."""
    with pytest.raises(InvalidField) as info:
        encode_push(2, "\ud800")
    assert info.value.field == "val"
    assert info.value.message.startswith("cannot be sent as JSON text: ")


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"{", CLOSE_INVALID_DATA, "message is not valid JSON"),
        (b'{"data":1}', CLOSE_UNSUPPORTED_DATA, 'expected an integer "type", it is missing'),
        (b'{"type":{}}', CLOSE_UNSUPPORTED_DATA, 'expected an integer "type", got an object'),
        (
            b"[]",
            CLOSE_UNSUPPORTED_DATA,
            'expected a JSON object with an integer "type", got an array',
        ),
    ],
)
def test_a_refused_message_is_closed_with_a_reason_saying_why(
    payload: bytes, code: int, reason: str
) -> None:
    assert closed_with(lambda: parse_client_message(payload)) == (code, reason)


def resume(data: object, msg_type: int = 0) -> ResumeRequest:
    return parse_resume(ClientMessage(msg_type, data))


def test_a_resume_without_positions_resumes_every_stream_from_its_start() -> None:
    assert resume({"wsId": WS_ID, "session": "s"}) == ResumeRequest(WS_ID, "s", {})


@pytest.mark.parametrize(
    ("msg_type", "data", "reason"),
    [
        (
            1,
            {"wsId": WS_ID, "session": "s"},
            'expected a resume message {"type":0,"data":{"wsId","session","since"}} first',
        ),
        (
            0,
            "resume",
            'expected a resume message {"type":0,"data":{"wsId","session","since"}} first',
        ),
        (0, {"wsId": WS_ID}, 'a resume needs "wsId" and "session" strings'),
        (0, {"wsId": 7, "session": "s"}, 'a resume needs "wsId" and "session" strings'),
        (0, {"wsId": WS_ID, "session": "s", "since": []}, '"since" must be an object'),
    ],
)
def test_a_resume_that_is_not_one_is_closed_saying_what_was_expected(
    msg_type: int, data: object, reason: str
) -> None:
    assert closed_with(lambda: resume(data, msg_type)) == (CLOSE_UNSUPPORTED_DATA, reason)


@pytest.mark.parametrize(
    "position", ["e", ["e"], ["e", 1, 2], [1, 2], ["e", "1"], ["e", 1.0], ["e", True], ["e", -1]]
)
def test_each_position_must_be_an_epoch_and_a_seq(position: object) -> None:
    """Every way a position can be malformed is refused on its own, naming it."""
    data = {"wsId": WS_ID, "session": "s", "since": {"all": position}}
    code, reason = closed_with(lambda: resume(data))
    assert code == CLOSE_UNSUPPORTED_DATA
    assert reason == f'"since" of \'all\' must be ["<epoch>", <seq>], got {position!r}'


@pytest.mark.parametrize(
    ("stream", "position"),
    [("room:" + "r" * 200, ["e"] * 100), ("room:" + "é" * 60, "\x00" * 60), ("all", "€" * 100)],
)
def test_a_long_stream_or_position_is_cut_short_in_the_reason(
    stream: str, position: object
) -> None:
    """The reason quotes the start of the stream and of what came, and fits a close
    frame (123 bytes of UTF-8) whatever their length and characters: a longer one
    could not be sent at all."""
    data = {"wsId": WS_ID, "session": "s", "since": {stream: position}}
    code, reason = closed_with(lambda: resume(data))
    assert code == CLOSE_UNSUPPORTED_DATA
    assert reason.startswith(f'"since" of {stream[:20]!r}'[:-1])
    assert len(reason.encode()) <= MAX_REASON_BYTES


def test_a_stream_and_a_position_are_quoted_up_to_36_characters() -> None:
    stream = "room:" + "r" * 31
    data = {"wsId": WS_ID, "session": "s", "since": {stream: ["e", -1]}}
    assert closed_with(lambda: resume(data))[1] == (
        f'"since" of {stream!r} must be ["<epoch>", <seq>], got [\'e\', -1]'
    )
    longer = stream + "s"
    data = {"wsId": WS_ID, "session": "s", "since": {longer: "x" * 40}}
    assert closed_with(lambda: resume(data))[1] == (
        f'"since" of {stream!r} must be ["<epoch>", <seq>], got \'{"x" * 35}'
    )


def test_a_welcome_says_whether_a_session_resumed_and_the_rooms_when_asked() -> None:
    """With sessions on, ``resumed`` is false unless it resumed; ``rooms`` is there
    only for a client that asked for events."""
    first = json.loads(encode_welcome(WS_ID, 10, session="s"))
    assert first["data"] == {"wsId": WS_ID, "heartbeat": 10, "session": "s", "resumed": False}
    with_rooms = json.loads(encode_welcome(WS_ID, 10, rooms=["a", "b"]))
    assert with_rooms["data"] == {"wsId": WS_ID, "heartbeat": 10, "rooms": ["a", "b"]}


def test_a_resume_that_recovered_everything_reads_back_as_recovered() -> None:
    streams = {"all": StreamReport(True, "e1", 7)}
    encoded = encode_welcome(WS_ID, 10, session="s", resumed=True, streams=streams)
    assert parse_welcome(encoded) == Welcome(WS_ID, 10.0, "s", True, True, streams)


def test_a_stream_report_missing_its_keys_reads_as_not_recovered_at_the_start() -> None:
    assert StreamReport.from_json({}) == StreamReport(False, "", 0)
    assert StreamReport.from_json({"recovered": 1, "epoch": "e", "seq": "3"}) == StreamReport(
        True, "e", 0
    )
    assert StreamReport.from_json([]) is None


def test_a_welcome_with_a_short_heartbeat_is_read() -> None:
    """Any positive heartbeat is a heartbeat, less than a second too."""
    for heartbeat in (0.5, 1):
        assert parse_welcome(encode_welcome(WS_ID, heartbeat)).heartbeat == heartbeat


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (
            b'{"type":1,"data":"PONG"}',
            'the first message is not a welcome: b\'{"type":1,"data":"PONG"}\'',
        ),
        (b'{"type":0,"data":{"heartbeat":10}}', "the welcome has no wsId"),
        (b'{"type":0,"data":[]}', "the welcome has no wsId"),
    ],
)
def test_what_is_no_welcome_is_refused_saying_what_arrived(payload: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        parse_welcome(payload)


def test_a_refused_first_message_is_quoted_in_its_first_hundred_characters() -> None:
    payload = '{"type":3,"data":"' + "x" * 200 + '"}'
    said = "the first message is not a welcome: " + payload[:100]
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        parse_welcome(payload)


def test_a_notice_whose_streams_are_no_object_is_passed_over() -> None:
    assert parse_server_message(b'{"type":0,"data":{"recovered":false,"streams":[1]}}') is None
    notice = parse_server_message(b'{"type":0,"data":{"recovered":false}}')
    assert notice == Notice({})


def test_a_push_whose_epoch_is_no_string_has_none() -> None:
    push = parse_server_message(b'{"type":2,"data":1,"seq":4,"epoch":5}')
    assert isinstance(push, Push)
    assert (push.seq, push.epoch) == (4, "")


def test_a_wsid_is_a_canonical_random_uuid4() -> None:
    """new_conn_id makes what str(uuid.uuid4()) makes: version 4, the RFC 4122
    variant, canonical lower-case text; never the same twice."""
    made = [new_conn_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    for ws_id in made:
        parsed = uuid.UUID(ws_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == ws_id
