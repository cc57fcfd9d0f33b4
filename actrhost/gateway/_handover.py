"""What a failed :class:`~._peer.PeerConnection` hands to its successor, and how the
successor queues it (module ``_carry`` for the items and the ``again`` messages).

A failed connection empties its queues (:meth:`Handover.take_undelivered`): tells and
reliable stream chunks still queued, those aiortc never transmitted, and those sent
without confirmation, each with its origin. The owner (``_remote.RemoteNode``) keeps them
through the reconnect window and hands them to the next connection
(:meth:`Handover.enqueue_carried`), which sends them first, in order.
"""

from __future__ import annotations

from collections import deque

from .._payload_type import PayloadType
from . import _framing as framing
from ._carry import FRAME, MESSAGE, Carried, Origin, in_runs, is_tell, tells_to_carry
from ._sending import (
    _BATCH,
    _FRAME,
    _LANE_SLOT,
    _RPC,
    _SLOT_LANE,
    _STREAM,
    _VERBATIM,
    BATCH_FRAME_MAX_BYTES,
    Sending,
    _Lane,
)
from ._unsent import forget_unsent


class Handover(Sending):
    """Mixin of :class:`~._peer.PeerConnection`: what a failed connection hands over."""

    def take_queued(self) -> list[Carried]:
        """Remove and return what waits to be sent, control messages aside (``again``
        messages are made anew from the items' origins), to move it to a connection that
        replaces this one before it connected."""
        taken: list[Carried] = []
        for q in self._lanes:
            for lane, data, kind, origin in q.items:
                if kind == _FRAME:
                    taken.append(Carried(lane, data, FRAME, origin))
                elif (kind == _BATCH or kind == _VERBATIM) and data[0] != framing.KIND_CONTROL:
                    taken.append(Carried(_SLOT_LANE[q.slot], data, MESSAGE, origin))
            q.items.clear()
            q.queued_bytes = 0
        return taken

    def withdraw(self, lane: int, frame: bytes) -> bool:
        """Take a frame queued with :meth:`enqueue` back out, unsent (a call that stopped
        waiting for this connection); False when that very frame is not queued here."""
        q = self._lanes[_LANE_SLOT[lane]]
        for index, item in enumerate(q.items):
            if item[1] is frame:
                del q.items[index]
                q.queued_bytes -= len(frame)
                return True
        return False

    def take_undelivered(self) -> list[Carried]:
        """After a failure: empty the queues, and return what a successor connection
        should send, in order (module ``_carry``): tells and reliable stream chunks, whose
        senders were told they went, from our lanes and from what left without
        confirmation (behind ``again`` messages). Calls and answers are dropped (counted):
        their callers fail with 503 when the link does, and a call sent again after that
        could run twice."""
        never_left: dict[int, int] = {}
        if self._pc is not None and self._pc.sctp is not None:
            # It is ours again: the failed association must not send it after all.
            never_left = forget_unsent(self._pc.sctp)
        kept: list[Carried] = []
        for q in self._lanes:
            if q.lossy:
                continue
            lane = _SLOT_LANE[q.slot]
            counters = self.counters.by_lane[lane]
            if q.slot == _STREAM:
                kept += self._unconfirmed_stream_frames()
            else:
                first = q.sent_messages - len(q.unconfirmed)
                # The parts of a frame not handed over yet.
                rest = [(part, q.current_origin) for part in q.current or ()]
                unsent = never_left.get(getattr(q.channel, "id", -1), 0) + len(rest)
                messages = [*q.unconfirmed, *rest]
                carried, dropped = tells_to_carry(lane, self.session_id, messages, first, unsent)
                q.unconfirmed.clear()
                for item in carried:
                    if item.kind == FRAME:  # counted when it left: again when it goes
                        counters.frames_out -= 1
                        counters.bytes_out -= len(item.data)
                for frame in dropped:  # calls and answers that never left
                    counters.frames_out -= 1
                    counters.bytes_out -= len(frame)
                    counters.dropped += 1
                kept += carried
            q.current = None
            rest_items: deque[tuple[int, bytes, int, Origin | None]] = deque()
            for item_lane, data, kind, origin in q.items:
                if kind == _FRAME and (q.slot == _STREAM or is_tell(data)):
                    kept.append(Carried(item_lane, data, FRAME, origin))
                elif kind == _VERBATIM:  # from an earlier failure, not sent yet
                    if data[0] != framing.KIND_CONTROL:  # an "again" is made anew
                        kept.append(Carried(lane, data, MESSAGE, origin))
                elif kind == _BATCH:
                    tells: list[bytes] = []
                    others: list[bytes] = []
                    for frame in framing.unbatch(data):
                        (tells if is_tell(frame) else others).append(frame)
                    if tells:  # still one message (counted when it was made)
                        batch = data if not others else framing.batch_message(tells)
                        kept.append(Carried(lane, batch, MESSAGE))
                    if others:
                        rest_items.append((item_lane, framing.batch_message(others), kind, None))
                else:
                    rest_items.append((item_lane, data, kind, origin))
            q.items = rest_items
        self.drop_queued()
        return kept

    def _unconfirmed_stream_frames(self) -> list[Carried]:
        """The stream frames that left without confirmation, with their origins (this
        connection's frame index for those that first went here)."""
        lane = PayloadType.STREAM_RELIABLE
        first = self._stream_frames_sent - len(self._stream_unconfirmed)
        counters = self.counters.by_lane[lane]
        carried: list[Carried] = []
        for index, (frame, origin) in enumerate(self._stream_unconfirmed, start=first):
            counters.frames_out -= 1  # counted when it left: again later
            counters.bytes_out -= len(frame)
            carried.append(Carried(lane, frame, FRAME, origin or (self.session_id, index)))
        self._stream_unconfirmed.clear()
        return carried

    def enqueue_carried(self, carried: list[Carried]) -> None:
        """Queue what a failed predecessor handed over (:meth:`take_undelivered`), first
        and in order: items that may have arrived behind the ``again`` naming them."""
        for again_message, run in in_runs(carried):
            if again_message is None:
                self._enqueue_certain(run)
                continue
            # Each named item goes as one message: the other side counts the items that
            # follow "again" (a tell that had gone in parts, now small enough to share a
            # batch, made the count wrong).
            q = self._lanes[_LANE_SLOT[run[0].lane]]
            self._queue_verbatim(q, again_message)
            for lane, data, kind, origin in run:
                if kind == FRAME:
                    self.enqueue(lane, data, origin)
                else:
                    self._queue_verbatim(q, data, origin)

    def _enqueue_certain(self, run: list[Carried]) -> None:
        """Queue handed-over items that cannot have arrived: small tells in batches, as
        they first went (one message per tell cost the other side so much more that a new
        link failed on its keepalive: QA)."""
        small: list[tuple[int, bytes]] = []
        for lane, data, kind, _origin in run:
            slot = _LANE_SLOT[lane]
            if kind == FRAME and slot <= _RPC and len(data) <= BATCH_FRAME_MAX_BYTES:
                small.append((lane, data))
                continue
            if small:
                self._in_batches(small)
                small = []
            if kind == FRAME:
                self.enqueue(lane, data)
            else:
                self._queue_verbatim(self._lanes[slot], data)
        if small:
            self._in_batches(small)

    def _queue_verbatim(self, q: _Lane, message: bytes, origin: Origin | None = None) -> None:
        """Queue a message as it is, counted with the lane's bytes: what failed
        connections carried on fills the lane as new frames do, and stops the socket that
        feeds it past the bound (tells queued through a partition's failed attempts took
        175 MiB of a gateway in 50 s, each attempt taking 4 MiB more)."""
        q.items.append((-1, message, _VERBATIM, origin))
        self._queued(q, len(message))
