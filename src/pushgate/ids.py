"""The identifiers that cross module boundaries, as distinct types.

A :data:`ConnId` is the ``wsId`` a client learns from its welcome frame: the
canonical lower-case text form of a random (version 4) UUID. A :data:`RoomId` is
1-64 characters of ASCII letters, digits and ``_-.:``; :func:`pushgate.commands.parse_room_id`
is the one place that checks it.
"""

import re
import uuid
from typing import NewType

ConnId = NewType("ConnId", str)
RoomId = NewType("RoomId", str)

# What a room id may be (checked by pushgate.commands.parse_room_id).
ROOM_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def new_conn_id() -> ConnId:
    """Return a fresh wsId that no client can guess (122 random bits from the OS)."""
    return ConnId(str(uuid.uuid4()))


# For commands and messages that name no room or no connection.
NO_ROOM = RoomId("")
NO_CONN = ConnId("")
