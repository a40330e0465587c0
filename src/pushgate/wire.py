"""The client-facing message format: what a WebSocket client sends and receives.

Every message, both ways, is a JSON object with an integer ``type`` (the seed's
``WSMessage``). Server messages are compact UTF-8 JSON with a trailing newline,
byte-compatible with the original Go server's ``WriteJSON``::

    {"type":0,"data":{"wsId":"<uuid4>","heartbeat":10}}   welcome, the first frame
    {"type":1,"data":"PONG"}                              reply to {"type":1,"data":"PING"}
    {"type":<tag>,"data":<val>}                           a push to all
    {"type":<tag>,"data":<val>,"room":"<id>"}             a push to one room

Types 0 and 1 are reserved, so a push ``tag`` is an integer from 2 up.

This module is pure: it knows nothing of sockets or of WebSocket framing.
"""

import json
from dataclasses import dataclass

from pushgate.errors import ClientFrameError, InvalidField
from pushgate.ids import ConnId, RoomId

TYPE_WELCOME = 0
TYPE_HEARTBEAT = 1
MIN_PUSH_TAG = 2
# The largest integer every JSON client (JavaScript included) represents exactly.
MAX_PUSH_TAG = 2**53 - 1

PONG = b'{"type":1,"data":"PONG"}\n'

# WebSocket close codes pushgate sends (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000  # echo of a client's own close (sent by the websockets protocol)
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_UNSUPPORTED_DATA = 1003  # valid JSON, but not a message object with an integer type
CLOSE_INVALID_DATA = 1007  # not UTF-8, or not JSON
CLOSE_POLICY_VIOLATION = 1008  # slow consumer: too many bytes waiting to be sent to it
CLOSE_MESSAGE_TOO_BIG = 1009  # a client message over the limit (sent by the protocol)
CLOSE_HEARTBEAT_TIMEOUT = 1011  # silent for longer than the idle timeout
CLOSE_INTERNAL_ERROR = 1011  # a bug on the server's side; its log has the details

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(message: dict[str, object]) -> bytes:
    """Serialize one server message: compact UTF-8 JSON and a newline."""
    return _encoder.encode(message).encode() + b"\n"


def encode_push(tag: int, val: object, room: RoomId | None = None) -> bytes:
    """Serialize a push once; the same bytes then go to every recipient.

    Raises InvalidField("val") for a value JSON cannot carry (a lone surrogate, a
    number too large for a float).
    """
    message = (
        {"type": tag, "data": val} if room is None else {"type": tag, "data": val, "room": room}
    )
    try:
        return encode(message)
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        raise InvalidField("val", f"cannot be sent as JSON text: {exc}") from None


def encode_welcome(conn_id: ConnId, heartbeat: float) -> bytes:
    """The first message on every connection: the client's wsId and PING interval."""
    seconds = int(heartbeat) if float(heartbeat).is_integer() else heartbeat
    return encode({"type": TYPE_WELCOME, "data": {"wsId": conn_id, "heartbeat": seconds}})


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A message received from a client: its ``type`` and its optional ``data``."""

    type: int
    data: object = None

    @property
    def is_heartbeat(self) -> bool:
        return self.type == TYPE_HEARTBEAT


def parse_client_message(payload: bytes) -> ClientMessage:
    """Parse one client message (the payload of a text or binary frame).

    Raises :class:`ClientFrameError` with the close code to send: 1007 when the
    payload is not UTF-8 JSON, 1003 when it is JSON but not an object with an
    integer ``type``.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientFrameError(
            CLOSE_INVALID_DATA, f"message is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        value = json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        raise ClientFrameError(CLOSE_INVALID_DATA, "message is not valid JSON") from None
    if not isinstance(value, dict):
        raise ClientFrameError(
            CLOSE_UNSUPPORTED_DATA,
            f'expected a JSON object with an integer "type", got {_json_kind(value)}',
        )
    if "type" not in value:
        raise ClientFrameError(CLOSE_UNSUPPORTED_DATA, 'expected an integer "type", it is missing')
    msg_type = value["type"]
    if not isinstance(msg_type, int) or isinstance(msg_type, bool):
        raise ClientFrameError(
            CLOSE_UNSUPPORTED_DATA,
            f'expected an integer "type", got {_json_kind(msg_type)}',
        )
    return ClientMessage(msg_type, value.get("data"))


def reject_constant(name: str) -> object:
    """For json.loads(parse_constant=...): NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def _json_kind(value: object) -> str:
    """Name a decoded JSON value's kind, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
