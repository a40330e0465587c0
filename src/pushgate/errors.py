"""Every error pushgate raises on purpose derives from :class:`PushgateError`.

The tree::

    PushgateError
    ├── InvalidField        a request field is missing or malformed (HTTP 400)
    ├── UnknownConnection   no open connection has this wsId (HTTP 404)
    ├── RoomLimitExceeded   the connection is already in as many rooms as allowed (HTTP 409)
    ├── ClientFrameError    a client's WebSocket message is unusable (closes that connection)
    ├── SessionTaken        another connection resumed the session first (closes with 4001)
    ├── BrokerUnavailable   the broker cannot be reached, or a node did not answer (HTTP 503)
    ├── ConfigError         an option has a value pushgate cannot use
    └── StartupError        a server could not start (e.g. its port is in use)
"""


class PushgateError(Exception):
    """The root of pushgate's own errors."""


class InvalidField(PushgateError):
    """A request field is missing or does not have the expected form."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownConnection(PushgateError):
    """No open connection has this wsId (it never existed, or it has closed)."""

    def __init__(self, conn_id: str) -> None:
        super().__init__(f"no open connection with wsId {conn_id}")
        self.conn_id = conn_id


class RoomLimitExceeded(PushgateError):
    """Joining one more room would put a connection over the per-connection cap."""

    def __init__(self, conn_id: str, limit: int) -> None:
        super().__init__(f"connection {conn_id} is already in {limit} rooms, the limit")
        self.conn_id = conn_id
        self.limit = limit


class ClientFrameError(PushgateError):
    """A client message cannot be used; the connection is closed with ``code``.

    ``code`` is a WebSocket close code (RFC 6455 section 7.4.1) and ``reason`` the
    close reason sent with it, which must fit in 123 bytes of UTF-8.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class SessionTaken(PushgateError):
    """A resume lost its session to a later claim of it, made elsewhere before this
    one could be completed: its connection is closed as the taken one would be."""

    def __init__(self, conn_id: str) -> None:
        super().__init__(f"session {conn_id} was resumed by another connection")
        self.conn_id = conn_id


class ConfigError(PushgateError):
    """An option's value cannot be used; the message names the option."""


class StartupError(PushgateError):
    """A server could not start; the message says which one and why."""


class BrokerUnavailable(PushgateError):
    """The broker cannot be reached, or another node did not answer in time.

    Nothing was delivered, or it is unknown whether it was: the caller may retry.
    """
