"""Data-stream chunks and media samples as actors see them (the protobuf stays underneath).

``payload`` / ``data`` accept bytes, a memoryview or a numpy array. On receive they hold a
read-only zero-copy view — a numpy array again when an array was sent — valid only until
the callback returns: copy it (``bytes(view)``, ``array.copy()``) to keep it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class MediaType(StrEnum):
    """Kind of a media track."""

    AUDIO = "audio"
    VIDEO = "video"


class DataStream:
    """One chunk of a data stream: ``stream_id``, ``sequence``, ``payload``, metadata, time."""

    __slots__ = ("metadata", "payload", "sequence", "stream_id", "timestamp_ms")

    def __init__(
        self,
        stream_id: str,
        sequence: int = 0,
        payload: Any = b"",
        metadata: dict[str, str] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        self.stream_id = stream_id
        self.sequence = sequence
        self.payload = payload
        self.metadata = dict(metadata or {})
        self.timestamp_ms = timestamp_ms

    def __repr__(self) -> str:
        size = getattr(self.payload, "nbytes", None) or len(self.payload)
        return f"DataStream({self.stream_id!r} #{self.sequence}, {size} bytes)"


class MediaSample:
    """One media sample: ``data`` (encoded bytes or a raw frame as an array), RTP timestamp.

    The timestamp is an RTP one, 32 bits without sign: from 0 to 4,294,967,295 (a 90 kHz
    clock passes it after 13.3 hours: wrap it, as RTP does); another raises ValueError
    when the sample is sent.
    """

    __slots__ = ("codec", "data", "media_type", "timestamp")

    def __init__(
        self,
        data: Any = b"",
        timestamp: int = 0,
        codec: str = "",
        media_type: MediaType | str = MediaType.VIDEO,
    ) -> None:
        self.data = data
        self.timestamp = timestamp
        self.codec = codec
        self.media_type = MediaType(media_type)

    def __repr__(self) -> str:
        size = getattr(self.data, "nbytes", None) or len(self.data)
        kind = self.media_type.value
        return f"MediaSample({kind} {self.codec or '?'} ts={self.timestamp}, {size} bytes)"
