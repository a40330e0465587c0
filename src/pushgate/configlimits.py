"""The settings that bound what clients and API callers may take: the limits (see
docs/security.md) and the logic API's connections. Fields of
:class:`~pushgate.config.Config`, after those of configserver.py."""

from dataclasses import dataclass

from pushgate.configchecks import (
    KIB,
    MIB,
    at_least,
    parse_size,
    positive_seconds,
    zero_or_more,
)
from pushgate.configoptions import GATEWAY, LOGIC, Group, option
from pushgate.configserver import ServerSettings


@dataclass(frozen=True, slots=True)
class LimitSettings(ServerSettings):
    """Limits, and the logic API's connections."""

    max_message_bytes: int = option(
        4 * KIB,
        "largest client message; a larger one closes the connection with 1009",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=GATEWAY,
    )
    max_body_bytes: int = option(
        1 * MIB,
        "largest logic API request body; more is 413",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=LOGIC,
    )
    max_output_bytes: int = option(
        1 * MIB,
        "bytes held unsent for one client beyond the kernel's buffers; a client that "
        "reads too slowly to stay under it is closed with 1008, the others never wait",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(64, "bytes"),
        roles=GATEWAY,
    )
    # --max-output-total-bytes is checked against --max-output-bytes, in _between_settings.
    max_output_total_bytes: int = option(
        128 * MIB,
        "bytes held unsent for all clients together; past it, the clients holding the "
        "most are closed with 1008 until the rest fits (0: no limit)",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        roles=GATEWAY,
    )
    max_rooms_per_conn: int = option(
        100,
        "rooms one connection may be in at once; more is 409",
        metavar="N",
        group=Group.LIMITS,
        check=at_least(1),
        roles=GATEWAY,
    )
    max_connections: int = option(
        0,
        "open connections in all; one more is refused with 503 (0: the open-file limit, "
        "raised to its maximum at start, less 100 kept for the API and the broker)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connections_per_ip: int = option(
        0,
        "open connections from one client address; one more is refused (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connects_per_second: float = option(
        0.0,
        "new connections accepted per second, in bursts of up to one second's worth (0: no limit)",
        metavar="RATE",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_connects_per_second_per_ip: float = option(
        0.0,
        "new connections accepted per second from one client address (an IPv6 /64), "
        "checked before --max-connects-per-second, so that one address cannot take it "
        "all (0: a quarter of --max-connects-per-second, at least 1)",
        metavar="RATE",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_messages_per_second: int = option(
        50,
        "messages one client may send per second; more closes it with 1008 (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_frames_per_second: int = option(
        200,
        "WebSocket frames of any kind (ping, pong, continuation, data) one client may "
        "send per second, in bursts of up to one second's worth; more closes it with "
        "1008 (0: no limit)",
        metavar="N",
        group=Group.LIMITS,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_client_bytes_per_second: int = option(
        256 * KIB,
        "bytes one client may send per second (a burst may always hold one message of "
        "--max-message-bytes); more closes it with 1008 (0: no limit)",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=zero_or_more("no limit"),
        roles=GATEWAY,
    )
    max_handshake_bytes: int = option(
        16 * KIB,
        "largest WebSocket handshake request, request line and headers together; a "
        "larger one is answered 431",
        metavar="BYTES",
        group=Group.LIMITS,
        parse=parse_size,
        check=at_least(1024, "bytes"),
        roles=GATEWAY,
    )
    max_api_connections: int = option(
        64,
        "open connections to the logic API; one more is answered 503 and closed (the "
        "open-file reserve of 100 holds these and the broker's)",
        metavar="N",
        group=Group.API_CONNECTIONS,
        check=at_least(1),
        roles=LOGIC,
    )
    api_header_timeout: float = option(
        10.0,
        "time a logic API connection has to send a whole request header, from its "
        "first byte or from connecting",
        metavar="SECONDS",
        group=Group.API_CONNECTIONS,
        check=positive_seconds,
        roles=LOGIC,
    )
    api_keepalive_timeout: float = option(
        15.0,
        "an idle keep-alive connection to the logic API is closed after this long",
        metavar="SECONDS",
        group=Group.API_CONNECTIONS,
        check=positive_seconds,
        roles=LOGIC,
    )
