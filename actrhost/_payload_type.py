"""The lanes (DESIGN §3), as a Python enum with the wire values of ``PayloadType``."""

from __future__ import annotations

from enum import IntEnum


class PayloadType(IntEnum):
    """Which lane a message travels on; the values are the protobuf enum's."""

    RPC_RELIABLE = 0
    RPC_SIGNAL = 1
    STREAM_RELIABLE = 2
    STREAM_LATENCY_FIRST = 3
    MEDIA_RTP = 4
