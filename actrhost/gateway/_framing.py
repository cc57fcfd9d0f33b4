"""What travels on a gateway data channel: whole frames, parts of large frames, control.

Every data-channel message starts with one kind byte:

=========  ==========================================================================
``0x01``   FRAME: the rest is one protobuf ``Frame`` (docs/protocol.md), unchanged
``0x02``   PART: header ``!BIHH`` (kind, message id, part index, part count), then a
           slice of a frame too large for one data-channel message
``0x03``   CONTROL: the rest is a JSON object with ``"op"`` (hello, ping, ack, again, media, …)
``0x04``   BATCH: small frames of one lane, each as ``!I`` length + the frame
=========  ==========================================================================

A batch carries the frames a gateway produced in one turn of its loop for one lane of
one connection (calls from many callers under load): one SCTP message, DTLS record and
datagram instead of one each, in the same order.

Parts of one message carry the same id and count; the receiver reassembles them in a
bounded :class:`Reassembler`. On an ordered channel the parts of a message arrive
contiguously and in order; on the unordered latency-first channel they may interleave,
arrive out of order, or not at all, so the reassembler keeps a few partial messages and
evicts the oldest (counted as a drop).
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KIND_FRAME = 0x01
KIND_PART = 0x02
KIND_CONTROL = 0x03
KIND_BATCH = 0x04

_PART = struct.Struct("!BIHH")
_LENGTH = struct.Struct("!I")
PART_HEADER_BYTES = _PART.size
#: Largest frame a peer may send in parts; larger ones are refused as malformed. A
#: stream chunk read from a shared-memory ring is at most a ring (64 MiB by default).
MAX_FRAME_BYTES = 128 * 1024 * 1024
#: What a frame's header may grow by when the gateway rewrites it (see fits_between_nodes).
HEADER_ROOM_BYTES = 1024
_MAX_PARTS = 0xFFFF


class MalformedMessage(ValueError):
    """A data-channel message that does not follow this format (dropped and counted)."""


def parse_control(data: bytes) -> dict[str, Any]:
    """The JSON object of a CONTROL message (``data`` starts with its kind byte); raises
    :class:`MalformedMessage`."""
    try:
        message = json.loads(data[1:])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # (RecursionError: JSON nested a thousand levels deep, a 2 KB message.)
        raise MalformedMessage(f"control message is not JSON: {exc!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise MalformedMessage("control message without an 'op'")
    return message


def frame_message(frame: bytes) -> bytes:
    """One whole frame as a data-channel message."""
    return b"\x01" + frame


def control_message(message: dict[str, Any]) -> bytes:
    """A control message (JSON) as a data-channel message."""
    return b"\x03" + json.dumps(message, separators=(",", ":")).encode()


def batch_message(frames: list[bytes]) -> bytes:
    """Several frames as one data-channel message (the caller keeps it within the
    channel's message size)."""
    pack = _LENGTH.pack
    return b"\x04" + b"".join(pack(len(frame)) + frame for frame in frames)


def batch_size(frame: bytes) -> int:
    """What ``frame`` adds to a batch message."""
    return _LENGTH.size + len(frame)


def fits_between_nodes(size_bytes: int) -> bool:
    """Whether a local frame of ``size_bytes`` can go to another node once the gateway
    has rewritten its header (ids, deadline; at most a few bytes longer). Checked on the
    size as received, so a frame too large is refused without encoding it again (0.4 s
    for 128 MiB, long enough to starve the keepalives)."""
    return size_bytes <= MAX_FRAME_BYTES - HEADER_ROOM_BYTES


def too_large(what: str, size_bytes: int) -> str:
    """Why a frame of ``size_bytes`` may not go to another node."""
    return (
        f"{what} of {size_bytes} bytes exceeds the {MAX_FRAME_BYTES - HEADER_ROOM_BYTES} "
        "bytes a message to another node may carry"
    )


def split_frame(frame: bytes, message_id: int, max_message_bytes: int) -> Iterator[bytes]:
    """The data-channel messages carrying ``frame``: one, or parts of at most
    ``max_message_bytes`` each, made as they are taken. Raises ValueError at once (not
    when the first part is taken) for a frame over :data:`MAX_FRAME_BYTES`.
    """
    if len(frame) + 1 <= max_message_bytes:
        return iter((b"\x01" + frame,))
    if len(frame) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES} bytes")
    room = max_message_bytes - PART_HEADER_BYTES
    count = -(-len(frame) // room)
    if count > _MAX_PARTS:
        raise ValueError(f"frame of {len(frame)} bytes needs {count} parts (max {_MAX_PARTS})")
    return _parts(frame, message_id, room, count)


def _parts(frame: bytes, message_id: int, room: int, count: int) -> Iterator[bytes]:
    view = memoryview(frame)
    msg_id = message_id & 0xFFFFFFFF
    for index in range(count):
        yield _PART.pack(KIND_PART, msg_id, index, count) + view[index * room : (index + 1) * room]


def frames_in_batch(message: bytes) -> int:
    """How many frames a batch message made by :func:`batch_message` holds."""
    return len(_unbatch(message))


def unbatch(message: bytes) -> list[bytes]:
    """The frames of a batch message made by :func:`batch_message`."""
    return _unbatch(message)


def _unbatch(data: bytes) -> list[bytes]:
    frames = []
    at, end = 1, len(data)
    unpack = _LENGTH.unpack_from
    while at < end:
        if at + _LENGTH.size > end:
            raise MalformedMessage("batch ends inside a length")
        (size,) = unpack(data, at)
        at += _LENGTH.size
        if size == 0 or at + size > end:
            raise MalformedMessage(f"batch frame of {size} bytes at {at} of {end}")
        frames.append(data[at : at + size])
        at += size
    if not frames:
        raise MalformedMessage("empty batch")
    return frames


@dataclass
class _Partial:
    count: int
    parts: list[bytes | None]
    received: int = 0
    size_bytes: int = 0


class Reassembler:
    """Turns the messages of one channel back into frames and control messages.

    ``max_partial`` bounds how many messages may be incomplete at once (1 is enough on
    an ordered channel); the oldest incomplete message is evicted beyond it and counted
    in :attr:`evicted`.
    """

    def __init__(self, max_partial: int) -> None:
        self._max_partial = max_partial
        self._partial: OrderedDict[int, _Partial] = OrderedDict()
        self.evicted = 0

    def feed(self, data: bytes) -> tuple[str, Any] | None:
        """Take one message; return ``("frame", bytes)``, ``("frames", [bytes, ...])``
        (a batch), ``("control", dict)`` or None (a part of an incomplete frame). Raises
        :class:`MalformedMessage`."""
        if not isinstance(data, bytes) or not data:
            raise MalformedMessage("empty or text message")
        kind = data[0]
        if kind == KIND_FRAME:
            return "frame", data[1:]
        if kind == KIND_CONTROL:
            return "control", parse_control(data)
        if kind == KIND_PART:
            return self._part(data)
        if kind == KIND_BATCH:
            return "frames", _unbatch(data)
        raise MalformedMessage(f"unknown message kind 0x{kind:02x}")

    def _part(self, data: bytes) -> tuple[str, Any] | None:
        if len(data) <= PART_HEADER_BYTES:
            raise MalformedMessage(f"part of {len(data)} bytes has no payload")
        _kind, msg_id, index, count = _PART.unpack_from(data)
        if count < 2 or index >= count:
            raise MalformedMessage(f"part {index} of {count} is impossible")
        partial = self._partial.get(msg_id)
        if partial is None:
            while len(self._partial) >= self._max_partial:
                self._partial.popitem(last=False)
                self.evicted += 1
            partial = self._partial[msg_id] = _Partial(count, [None] * count)
        elif partial.count != count:
            del self._partial[msg_id]
            raise MalformedMessage(
                f"message {msg_id}: part count changed {partial.count} -> {count}"
            )
        if partial.parts[index] is not None:
            raise MalformedMessage(f"message {msg_id}: part {index} received twice")
        payload = data[PART_HEADER_BYTES:]
        partial.size_bytes += len(payload)
        if partial.size_bytes > MAX_FRAME_BYTES:
            del self._partial[msg_id]
            raise MalformedMessage(f"message {msg_id} grows beyond {MAX_FRAME_BYTES} bytes")
        partial.parts[index] = payload
        partial.received += 1
        if partial.received < count:
            return None
        del self._partial[msg_id]
        return "frame", b"".join(partial.parts)  # type: ignore[arg-type]

    @property
    def partial_count(self) -> int:
        """Messages started but not complete."""
        return len(self._partial)

    def clear(self) -> None:
        """Forget every incomplete message (the channel was replaced)."""
        self._partial.clear()
