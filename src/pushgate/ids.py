"""The identifiers that cross module boundaries, as distinct types.

A :data:`ConnId` is the ``wsId`` a client learns from its welcome frame: the
canonical lower-case text form of a random (version 4) UUID. A :data:`RoomId` is
1-64 characters of ASCII letters, digits and ``_-.:``; :func:`pushgate.commands.parse_room_id`
is the one place that checks it.
"""

import os
import re
from typing import NewType

ConnId = NewType("ConnId", str)
RoomId = NewType("RoomId", str)

# What a room id may be (checked by pushgate.commands.parse_room_id).
ROOM_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def new_conn_id() -> ConnId:
    """Return a fresh wsId that no client can guess (122 random bits from the OS):
    ``str(uuid.uuid4())``, made without the UUID object (half the time, once per
    connection)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    hexed = raw.hex()
    return ConnId(f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}")


# For commands and messages that name no room or no connection.
NO_ROOM = RoomId("")
NO_CONN = ConnId("")
