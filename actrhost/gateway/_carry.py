"""What a failed connection hands to the next one to the same node, and how the receiving
side recognises what it had already.

A tell's or a reliable stream chunk's sender was told it went, and never hears about the
link: when the link fails, what had not surely arrived goes again on the next connection
(docs/gateway.md, Failure). "Surely arrived" is what the other side confirmed: its
``ack`` messages carry how many stream frames (``r``) and how many messages on each call
channel (``m``) it has received on this connection. Everything after that is in doubt:
it may have arrived, or been lost with the link.

Each item in doubt keeps its **origin**: the connection it first left on, and its index
there (the message on a call channel, the frame on the stream channel). It goes behind an
``again`` control message on its own channel naming the origins of the items that follow:

* stream channel: ``{"op": "again", "session": S, "first": i, "count": n}``: the next
  ``n`` frames are frames ``i``… of connection ``S``;
* call channels: ``{"op": "again", "session": S, "items": [i, …]}``: each of the next
  frames or batches holds the tells of message ``i`` of connection ``S`` on this channel
  (calls and answers are never sent again: their callers have failed with 503).

The receiving gateway remembers, per earlier connection, how many of its items it has: the
first ones that connection brought, plus those later connections brought again (a
connection brings a prefix of what was sent on it, and items go again in order). It drops
an item it has (``duplicates_dropped``) and counts one it delivers. An origin never
changes, so a connection that fails while it sends items again hands them on with the
same origins, and the third connection's ``again`` names them as the second one's did:
however many connections fail in a row, nothing comes twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from .. import _envelope as wire
from .._envelope import TELL, Envelope
from .._errors import BadRequest
from .._payload_type import PayloadType
from . import _framing as framing

#: Items listed in one ``again`` message (each index a few bytes of JSON: well within a
#: data-channel message).
AGAIN_ITEMS_MAX = 2000

#: Where an item in doubt first went: (session id of that connection, index there).
Origin = tuple[str, int]
STREAM_RELIABLE = PayloadType.STREAM_RELIABLE


class Carried(NamedTuple):
    """One item a failed connection hands to its successor: a frame (``FRAME``) or a
    data-channel message sent as it is (``MESSAGE``: a batch of tells or a whole frame),
    with its origin when it may have arrived already (None: it never left)."""

    lane: int
    data: bytes
    kind: int
    origin: Origin | None = None

    def frame_count(self) -> int:
        """How many frames this item carries."""
        return 1 if self.kind == FRAME else frames_in_message(self.data)


FRAME, MESSAGE = 0, 1


def frames_of(item: Carried) -> list[bytes]:
    """The frames ``item`` carries, encoded as they went to the other node."""
    if item.kind == FRAME:
        return [item.data]
    kind = item.data[0]
    if kind == framing.KIND_BATCH:
        return framing.unbatch(item.data)
    return [item.data[1:]] if kind == framing.KIND_FRAME else []


def frames_in_message(message: bytes) -> int:
    """How many frames one of our data-channel messages carries (whole ones only)."""
    kind = message[0]
    if kind == framing.KIND_BATCH:
        return framing.frames_in_batch(message)
    return 1 if kind == framing.KIND_FRAME else 0


def tells_to_carry(
    lane: int,
    session_id: str,
    messages: Sequence[tuple[bytes, Origin | None]],
    first: int,
    never_left: int,
) -> tuple[list[Carried], list[bytes]]:
    """What goes again of the messages a call channel sent without confirmation
    (``messages`` with the origins they went with, the first of them message ``first``
    of connection ``session_id``; the last ``never_left`` of them, and the rest of a frame
    in parts, never transmitted), and the calls and answers among those that never left
    (dropped: their callers fail with 503).

    Each message's tells go in one item, in order. One that may have arrived keeps its
    origin, or takes this connection as its origin; one that never left and had none is
    certain not to have arrived (it follows without ``again``, and reaches even a
    restarted gateway).
    """
    in_doubt = first + len(messages) - never_left  # index of the first that never left
    reassembler = framing.Reassembler(max_partial=1)
    carried: list[Carried] = []
    dropped: list[bytes] = []
    for index, (message, origin) in enumerate(messages, start=first):
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
        if origin is None and index < in_doubt:
            origin = (session_id, index)
        if message[0] == framing.KIND_PART:  # a large frame, split again when it goes
            carried.append(Carried(lane, tells[0], FRAME, origin))
        elif len(tells) == len(frames):
            carried.append(Carried(lane, bytes(message), MESSAGE, origin))
        else:  # a batch with calls or answers too: only its tells
            carried.append(Carried(lane, framing.batch_message(tells), MESSAGE, origin))
    return carried, dropped


def in_runs(carried: list[Carried]) -> Iterator[tuple[bytes | None, list[Carried]]]:
    """``carried`` in runs, in order: those with an origin behind the ``again`` message
    that names them (one connection, one lane: each reliable lane has a channel of its
    own; on the stream channel consecutive frames), and those without one (``again``
    None)."""
    run: list[Carried] = []
    for item in carried:
        if run and not _continues(run, item):
            yield _again_for(run), run
            run = []
        run.append(item)
    if run:
        yield _again_for(run), run


def _continues(run: list[Carried], item: Carried) -> bool:
    last = run[-1]
    if last.origin is None or item.origin is None:
        return last.origin is None and item.origin is None
    return (
        item.lane == last.lane
        and item.origin[0] == last.origin[0]
        and len(run) < AGAIN_ITEMS_MAX
        and (item.lane != STREAM_RELIABLE or item.origin[1] == last.origin[1] + 1)
    )


def _again_for(run: list[Carried]) -> bytes | None:
    origins = [item.origin for item in run if item.origin is not None]
    if not origins:
        return None
    session, first = origins[0]
    if run[0].lane == STREAM_RELIABLE:
        return again(session, first=first, count=len(origins))
    return again(session, items=[index for _session, index in origins])


def again(session_id: str, **fields: Any) -> bytes:
    """An ``again`` control message for connection ``session_id``."""
    return framing.control_message({"op": "again", "session": session_id, **fields})


def named_indices(message: dict[str, Any]) -> Sequence[int] | None:
    """The indices, on the named connection, of the items that follow an ``again``
    message (None when the message is malformed)."""
    if "items" in message:
        indices = message["items"]
        if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices):
            return None
        return indices
    first, count = message.get("first"), message.get("count")
    if not isinstance(first, int) or not isinstance(count, int) or count < 0:
        return None
    return range(first, first + count)


class Counted(Protocol):
    """An earlier connection, as far as ``again`` is concerned: how many of its stream
    frames and of its messages on each call channel we have."""

    stream_frames_in: int
    messages_in: list[int]


class Named:
    """The items an ``again`` message named on one channel (their indices on connection
    ``earlier``; None: one we do not know), as they come."""

    __slots__ = ("call_channel", "earlier", "index", "indices", "session", "taken")

    def __init__(
        self,
        earlier: Counted | None,
        indices: Sequence[int],
        call_channel: int | None,
        session: int = 0,
    ) -> None:
        self.earlier = earlier
        self.indices = indices
        #: Index of the call channel in ``messages_in``; None: the stream channel.
        self.call_channel = call_channel
        #: The named connection's session key (``_tell_origin.session_key``).
        self.session = session
        self.taken = 0
        #: The index of the item that came last (see had_next).
        self.index = -1

    @property
    def done(self) -> bool:
        """Whether every named item came."""
        return self.taken >= len(self.indices)

    def had_next(self) -> bool:
        """Whether the named item that came now (its index: :attr:`index`) is one we have
        (if not, we have it now). From a connection we do not know (our gateway
        restarted since), we cannot know: the tell or reliable chunk is delivered,
        marked in doubt, for its worker to drop if it had it (module
        ``actrhost._tell_origin``)."""
        self.index = index = self.indices[self.taken]
        self.taken += 1
        earlier = self.earlier
        if earlier is None:
            return False
        if self.call_channel is None:
            if index < earlier.stream_frames_in:
                return True
            earlier.stream_frames_in = index + 1
        else:
            if index < earlier.messages_in[self.call_channel]:
                return True
            earlier.messages_in[self.call_channel] = index + 1
        return False


class HeldTells:
    """What the receiving side confirms on each call channel: the messages received,
    up to the first with a tell the gateway still holds (waiting for its actor to start,
    for an introduction, or for room in a worker's socket, or not yet read by the
    worker: a :class:`Receipt` alive).

    Confirming a tell on arrival let its sender forget it: when the gateway holding it
    died, it was lost unseen. Unconfirmed, it is in doubt: sent again after the failure,
    and handed on by the gateway in its place marked so; the worker drops it if it had
    read it (module ``actrhost._tell_origin``).
    """

    def __init__(self, on_release: Callable[[], None]) -> None:
        #: By channel: for a call channel, message index -> receipts alive for its
        #: tells; for the stream channel, frame index -> 1 while a reliable chunk is.
        self._held: dict[int, dict[int, int]] = {}
        #: Called when a message's last receipt goes: time to confirm more.
        self._on_release = on_release

    def receipt(self, channel: int, index: int, origin: bytes) -> Receipt:
        """A receipt for a tell of message ``index`` on call channel ``channel`` (or for
        stream frame ``index`` on the stream channel), which first arrived at ``origin``
        (a serialized ``tell_origin`` field)."""
        held = self._held.setdefault(channel, {})
        held[index] = held.get(index, 0) + 1
        return Receipt(self, channel, index, origin)

    def confirmed(self, channel: int, received: int) -> int:
        """How many messages (stream frames) of ``received`` on ``channel`` may be
        confirmed."""
        held = self._held.get(channel)
        return min(held) if held else received

    def release(self, channel: int, index: int) -> None:
        """A receipt of message ``index`` is gone (:meth:`Receipt.__del__`)."""
        held = self._held[channel]
        left = held.get(index, 0) - 1
        if left > 0:
            held[index] = left
            return
        held.pop(index, None)
        self._on_release()


class Receipt:
    """Kept beside a tell the gateway holds; when the tell is handed on or dropped, the
    last reference goes, and so does the hold on its message (:class:`HeldTells`).
    It also says where the tell first arrived (:attr:`origin`)."""

    __slots__ = ("_channel", "_held", "_index", "origin")

    def __init__(self, held: HeldTells, channel: int, index: int, origin: bytes) -> None:
        self._held = held
        self._channel = channel
        self._index = index
        #: The tell's ``Frame.tell_origin`` field, serialized: appended to the frame the
        #: worker gets (module ``actrhost._tell_origin``).
        self.origin = origin

    def __del__(self) -> None:
        self._held.release(self._channel, self._index)


def is_tell(frame: bytes) -> bool:
    """Whether ``frame`` is a tell (a call or an answer, if not)."""
    try:
        item = wire.decode(frame)
    except BadRequest:
        return False
    return isinstance(item, Envelope) and item.direction == TELL
