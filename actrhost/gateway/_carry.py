"""What a failed connection hands to the next one to the same node, and how the receiving
side recognises what it had already.

A tell's or a reliable stream chunk's sender was told it went, and never hears about the
link: when the link fails, what had not surely arrived goes again on the next connection
(docs/gateway.md, Failure). "Surely arrived" is what the other side confirmed: its
``ack`` messages carry how many stream frames (``r``) and how many messages on each call
channel (``m``) it has received on this connection. Everything after that is in doubt:
it may have arrived, or been lost with the link.

What was in doubt goes behind an ``again`` control message on its own channel, which says
which items of the failed connection follow; the receiving gateway looks up how many that
connection brought it and drops those it had (``duplicates_dropped``):

* stream channel: ``{"op": "again", "session": S, "first": i, "count": n}``: the next
  ``n`` frames are frames ``i``… of connection ``S``;
* call channels: ``{"op": "again", "session": S, "items": [i, …]}``: each of the next
  frames or batches holds the tells of message ``i`` of connection ``S`` on this channel
  (calls and answers are never sent again: their callers have failed with 503).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _envelope as wire
from .._envelope import TELL, Envelope
from .._errors import BadRequest
from . import _framing as framing

#: Items listed in one ``again`` message (each index a few bytes of JSON: well within a
#: data-channel message).
AGAIN_ITEMS_MAX = 2000


class Carried(NamedTuple):
    """One item a failed connection hands to its successor: a frame (``FRAME``), a
    data-channel message sent as it is (``MESSAGE``: a batch or a whole frame), or a
    control message that goes on the lane's channel in order with them (``CONTROL``)."""

    lane: int
    data: bytes
    kind: int

    @classmethod
    def message(cls, lane: int, data: bytes) -> Carried:
        """A data-channel message to send as it is: ``again`` (a control message), or
        frames (``MESSAGE``)."""
        return cls(lane, data, CONTROL if data[0] == framing.KIND_CONTROL else MESSAGE)

    def frame_count(self) -> int:
        """How many frames this item carries (0 for a control message)."""
        if self.kind == FRAME:
            return 1
        return frames_in_message(self.data)


FRAME, MESSAGE, CONTROL = 0, 1, 2


def frames_in_message(message: bytes) -> int:
    """How many frames one of our data-channel messages carries (whole ones only)."""
    kind = message[0]
    if kind == framing.KIND_BATCH:
        return framing.frames_in_batch(message)
    return 1 if kind == framing.KIND_FRAME else 0


def again(session_id: str, **fields: Any) -> bytes:
    """An ``again`` control message for connection ``session_id``."""
    return framing.control_message({"op": "again", "session": session_id, **fields})


def tells_to_carry(
    lane: int, session_id: str, messages: list[bytes], first: int, never_left: int
) -> tuple[list[Carried], list[bytes]]:
    """What goes again of the messages a call channel sent without confirmation
    (``messages``, the first of them message ``first`` of the connection; the last
    ``never_left`` of them, and the rest of a frame in parts, never transmitted), and the
    calls and answers among those that never left (dropped: their callers fail with 503).

    Each message's tells go in one item. Those of messages that may have arrived go behind
    ``again`` messages naming the message each item came from; those that never left
    follow without (the other side cannot have them, whatever it remembers).
    """
    in_doubt = first + len(messages) - never_left  # index of the first that never left
    reassembler = framing.Reassembler(max_partial=1)
    doubtful: list[tuple[int, Carried]] = []
    certain: list[Carried] = []
    dropped: list[bytes] = []
    for index, message in enumerate(messages, start=first):
        try:
            got = reassembler.feed(bytes(message))
        except framing.MalformedMessage:
            continue
        if got is None or got[0] == "control":
            continue
        frames = [got[1]] if got[0] == "frame" else got[1]
        tells = [frame for frame in frames if is_tell(frame)]
        if index >= in_doubt:
            dropped += [frame for frame in frames if not is_tell(frame)]
        if not tells:
            continue
        if message[0] == framing.KIND_PART:  # a large frame, split again when it goes
            item = Carried(lane, tells[0], FRAME)
        elif len(tells) == len(frames):
            item = Carried(lane, bytes(message), MESSAGE)
        else:  # a batch with calls or answers too: only its tells
            item = Carried(lane, framing.batch_message(tells), MESSAGE)
        if index < in_doubt:
            doubtful.append((index, item))
        else:
            certain.append(item)
    carried: list[Carried] = []
    for start in range(0, len(doubtful), AGAIN_ITEMS_MAX):
        group = doubtful[start : start + AGAIN_ITEMS_MAX]
        indices = [index for index, _item in group]
        carried.append(Carried(lane, again(session_id, items=indices), CONTROL))
        carried += [item for _index, item in group]
    return carried + certain, dropped


def again_named(message: bytes) -> dict[str, Any] | None:
    """The fields of ``message`` if it is an ``again`` control message (None if not)."""
    if message[:1] != bytes([framing.KIND_CONTROL]):
        return None
    try:
        fields = framing.parse_control(message)
    except framing.MalformedMessage:
        return None
    return fields if fields["op"] == "again" else None


def named_count(fields: dict[str, Any]) -> int:
    """How many items the ``again`` with these fields names (the items that follow it)."""
    return len(fields["items"]) if "items" in fields else int(fields["count"])


def duplicates_ahead(message: dict[str, Any], received: int) -> int | None:
    """How many of the items following an ``again`` message the receiver had already,
    given how many the named connection brought it (``received``: stream frames, or
    messages on the call channel). None when the message is malformed."""
    if "items" in message:
        indices = message["items"]
        if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices):
            return None
        return sum(1 for index in indices if index < received)
    first, count = message.get("first"), message.get("count")
    if not isinstance(first, int) or not isinstance(count, int):
        return None
    return max(0, min(count, received - first))


def is_tell(frame: bytes) -> bool:
    """Whether ``frame`` is a tell (a call or an answer, if not)."""
    try:
        item = wire.decode(frame)
    except BadRequest:
        return False
    return isinstance(item, Envelope) and item.direction == TELL
