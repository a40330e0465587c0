"""The client-facing message format: what a WebSocket client sends and receives.

Every message, both ways, is a JSON object with an integer ``type`` (the seed's
``WSMessage``). Server messages are compact UTF-8 JSON with a trailing newline,
byte-compatible with the original Go server's ``WriteJSON``::

    {"type":0,"data":{"wsId":"<uuid4>","heartbeat":10}}   welcome, the first frame
    {"type":1,"data":"PONG"}                              reply to {"type":1,"data":"PING"}
    {"type":<tag>,"data":<val>}                           a push to all
    {"type":<tag>,"data":<val>,"room":"<id>"}             a push to one room
    {"type":<tag>,"data":<val>,"user":"<uid>"}            a push to one user
    {"type":<tag>,"data":<val>,"room":"<id>","from":{"wsId":"<uuid4>","user":"<uid>"}}
                                                          a member's message to its room

With history on, a push also carries its stream position, ``"seq"`` and ``"epoch"``
(spliced in by the broker, see :mod:`pushgate.streams`); the welcome carries the
session token, and a resume is answered by a welcome that reports, per stream,
whether everything missed is replayed. docs/recovery.md is the protocol.

Types 0 and 1 are reserved, so a push ``tag`` is an integer from 2 up.

The format is written down once, here and beside it: what the server encodes and
parses, and what a client (:mod:`pushgate.client`) sends (:data:`PING`,
:meth:`ResumeRequest.as_message`); a client's operations, both ways, are
:mod:`pushgate.wireops`; what a client reads back, leniently, is
:mod:`pushgate.wireclient` (``parse_welcome``, ``parse_server_message``, ``is_pong``).

This module is pure: it knows nothing of sockets or of WebSocket framing.
"""

import json
import json.encoder
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from pushgate.errors import ClientFrameError, InvalidField
from pushgate.ids import ConnId, RoomId

TYPE_WELCOME = 0
TYPE_HEARTBEAT = 1
MIN_PUSH_TAG = 2
# The largest integer every JSON client (JavaScript included) represents exactly.
MAX_PUSH_TAG = 2**53 - 1

PONG = b'{"type":1,"data":"PONG"}\n'
# A client's heartbeat, sent as a text frame every heartbeat seconds; PONG answers it.
PING = b'{"type":1,"data":"PING"}'

# WebSocket close codes pushgate sends (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000  # echo of a client's own close (sent by the websockets protocol)
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_UNSUPPORTED_DATA = 1003  # valid JSON, but not a message object with an integer type
CLOSE_INVALID_DATA = 1007  # not UTF-8, or not JSON
CLOSE_POLICY_VIOLATION = 1008  # slow consumer: too many bytes waiting to be sent to it
CLOSE_MESSAGE_TOO_BIG = 1009  # a client message over the limit (sent by the protocol)
CLOSE_HEARTBEAT_TIMEOUT = 1011  # silent for longer than the idle timeout
CLOSE_INTERNAL_ERROR = 1011  # a bug on the server's side; its log has the details
CLOSE_SERVICE_RESTART = 1012  # the gateway is draining: resume at once, elsewhere
CLOSE_TRY_AGAIN_LATER = 1013  # a resume could not be completed now (the broker is away)
CLOSE_SESSION_TAKEN = 4001  # another connection resumed this session: do not reconnect
# Codes that tell a client not to come back: like an HTTP 4xx, the same connection
# would be refused again. The SDKs stop on them (and on 4001); an operator's own
# disconnect code (4000-4999) outside the range lets them reconnect.
CLOSE_NO_RECONNECT = range(4400, 4500)
CLOSE_SESSION_ENDED = 4410  # an operator ended the session (endSession, no code given)

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The same encoder's C core, made once: JSONEncoder.encode makes it anew on every
# call, which costs more than encoding a small message. No circular check: a server
# message holds only what it was built from and JSON a client sent.
_make_encoder: "Callable[..., Callable[[object, int], Sequence[str]]] | None" = getattr(
    json.encoder,
    "c_make_encoder",
    None,  # None: an interpreter without the C module
)
_encode_chunks = (
    None
    if _make_encoder is None
    else _make_encoder(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def encode(message: dict[str, object]) -> bytes:
    """Serialize one server message: compact UTF-8 JSON and a newline."""
    if _encode_chunks is None:
        return _encoder.encode(message).encode() + b"\n"
    return "".join(_encode_chunks(message, 0)).encode() + b"\n"


def encode_push(
    tag: int,
    val: object,
    room: RoomId | None = None,
    user: str | None = None,
    *,
    exclude: str | None = None,
    sender: dict[str, object] | None = None,
    event: str | None = None,
) -> bytes:
    """Serialize a push once; the same bytes then go to every recipient.

    ``exclude``: the wsId it is not for, written first (``{"exclude":"<wsId>",...``)
    so that every node finds it in the bytes without parsing them
    (:func:`excluded_conn`); ``sender``: a client message's ``from``; ``event``: the
    event name a Pusher client hears it under (pusherwire.py).
    Raises InvalidField("val") for a value JSON cannot carry (a lone surrogate, a
    number too large for a float).
    """
    message: dict[str, object] = {} if exclude is None else {"exclude": exclude}
    message["type"] = tag
    if event is not None:
        message["event"] = event
    message["data"] = val
    if room is not None:
        message["room"] = room
    elif user is not None:
        message["user"] = user
    if sender is not None:
        message["from"] = sender
    try:
        return encode(message)
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        raise InvalidField("val", f"cannot be sent as JSON text: {exc}") from None


@dataclass(frozen=True, slots=True)
class StreamReport:
    """Whether a stream was recovered, and where it is now."""

    recovered: bool
    epoch: str
    seq: int

    def as_json(self) -> dict[str, object]:
        return {"recovered": self.recovered, "epoch": self.epoch, "seq": self.seq}

    @classmethod
    def from_json(cls, value: object) -> "StreamReport | None":
        """Read :meth:`as_json` back, as a client does: None when ``value`` is no
        object; a missing key reads as not recovered, epoch ``""``, seq 0."""
        if not isinstance(value, dict):
            return None
        seq = value.get("seq")
        return cls(
            bool(value.get("recovered")),
            str(value.get("epoch", "")),
            seq if is_int(seq) else 0,
        )


EXCLUDE_PREFIX = b'{"exclude":"'


def excluded_conn(message: bytes) -> str | None:
    """The wsId a push is not for, when :func:`encode_push` wrote one: a bytes
    comparison for every other push, so the fan-out of each node pays nothing for it."""
    if not message.startswith(EXCLUDE_PREFIX):
        return None
    start = len(EXCLUDE_PREFIX)
    return message[start : message.index(b'"', start)].decode()


def encode_welcome(
    conn_id: ConnId,
    heartbeat: float,
    *,
    session: str | None = None,
    resumed: bool = False,
    streams: dict[str, StreamReport] | None = None,
    reason: str | None = None,
    rooms: list[str] | None = None,
) -> bytes:
    """The first message on every connection: the client's wsId and PING interval;
    with sessions on, its session token and whether it resumed (and, when it did,
    each stream's recovery); for a client that reads events (``?v=2``), its rooms."""
    seconds = int(heartbeat) if float(heartbeat).is_integer() else heartbeat
    data: dict[str, object] = {"wsId": conn_id, "heartbeat": seconds}
    if session is not None:
        data["session"] = session
        data["resumed"] = resumed
    if streams is not None:
        data.update(recovery(streams))
    if reason is not None:
        data["reason"] = reason
    if rooms is not None:
        data["rooms"] = rooms
    return encode({"type": TYPE_WELCOME, "data": data})


def encode_notice(streams: dict[str, StreamReport]) -> bytes:
    """A gap the server could not fill (or a lost history), told to every client on
    those streams: the same bytes for all, so no wsId."""
    return encode({"type": TYPE_WELCOME, "data": recovery(streams)})


def recovery(streams: dict[str, StreamReport]) -> dict[str, object]:
    """The ``recovered`` and ``streams`` keys of a welcome after a resume, or of a notice."""
    return {
        "recovered": all(r.recovered for r in streams.values()),
        "streams": {name: r.as_json() for name, r in streams.items()},
    }


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """A client's first message on ``/connect?resume=1``."""

    ws_id: ConnId
    session: str
    since: dict[str, tuple[str, int]]

    def as_message(self) -> dict[str, object]:
        """The message a client sends to ask for its session back (what
        :func:`parse_resume` reads), before it is serialized."""
        since = {name: [epoch, seq] for name, (epoch, seq) in self.since.items()}
        data = {"wsId": self.ws_id, "session": self.session, "since": since}
        return {"type": TYPE_WELCOME, "data": data}


def parse_resume(message: "ClientMessage") -> ResumeRequest:
    """Read a resume message: ``{"type":0,"data":{"wsId","session","since"}}``.

    Raises :class:`ClientFrameError` (1003) naming what is wrong.
    """
    data = message.data
    if message.type != TYPE_WELCOME or not isinstance(data, dict):
        raise ClientFrameError(
            CLOSE_UNSUPPORTED_DATA,
            'expected a resume message {"type":0,"data":{"wsId","session","since"}} first',
        )
    ws_id, session, since = data.get("wsId"), data.get("session"), data.get("since", {})
    if not isinstance(ws_id, str) or not isinstance(session, str):
        raise ClientFrameError(
            CLOSE_UNSUPPORTED_DATA, 'a resume needs "wsId" and "session" strings'
        )
    if not isinstance(since, dict):
        raise ClientFrameError(CLOSE_UNSUPPORTED_DATA, '"since" must be an object')
    positions: dict[str, tuple[str, int]] = {}
    for stream, position in since.items():
        if (
            not isinstance(position, list)
            or len(position) != 2
            or not isinstance(position[0], str)
            or not isinstance(position[1], int)
            or isinstance(position[1], bool)
            or position[1] < 0
        ):
            # A close reason holds 123 bytes of UTF-8: both quotes are cut short.
            why = f'"since" of {stream[:36]!r} must be ["<epoch>", <seq>], got {position!r:.36}'
            raise ClientFrameError(
                CLOSE_UNSUPPORTED_DATA, why.encode()[:123].decode(errors="ignore")
            )
        positions[stream] = (position[0], position[1])
    return ResumeRequest(ConnId(ws_id), session, positions)


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
        value = decode_json(text)
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


# Made once: json.loads with an argument builds a decoder on every call.
_decoder = json.JSONDecoder(parse_constant=reject_constant)


def decode_json(text: str) -> object:
    """Decode a client's JSON text (NaN and Infinity refused: they are not JSON);
    raises ValueError, or RecursionError when it nests too deep."""
    return _decoder.decode(text)


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


def is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a boolean (JSON's true is no number)."""
    return isinstance(value, int) and not isinstance(value, bool)
