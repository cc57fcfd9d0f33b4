"""The sending half of a :class:`~._peer.PeerConnection`: lanes, our queues, the end-to-
end window of reliable streams, and batches.

Lanes on the wire (DESIGN §3). All channels are pre-negotiated (``negotiated=True``,
fixed ids), so they open with the SCTP association and need no DCEP round trip:

====================  ==  =======================================  ========
lane                  id  channel                                  priority
====================  ==  =======================================  ========
RPC_SIGNAL + control   0  ordered, reliable                        1
RPC_RELIABLE           1  ordered, reliable                        2
STREAM_LATENCY_FIRST   3  unordered, ``maxRetransmits=0``           3
STREAM_RELIABLE        2  ordered, reliable, end-to-end window      4
====================  ==  =======================================  ========

Why our own queues: aiortc's ``RTCDataChannel.send`` appends to one unbounded FIFO shared
by every channel of the connection (``RTCSctpTransport._data_channel_queue``); a channel's
``bufferedAmount`` only drops when its message moves on into SCTP. So the sender task
keeps aiortc's FIFO short (at most :attr:`Tuning.buffer_high_bytes` across channels, less
on a slow link: module ``_pacing``; waiting on ``bufferedamountlow``) and picks the next
message from our per-lane queues by priority: an RPC_SIGNAL message waits behind at most
that many bytes, never behind a queued stream. Large frames go out in parts, one part per
turn, so a 64 MiB stream chunk never blocks a call. When nothing waits, a frame goes to
aiortc at once (no task hop).

STREAM_RELIABLE also has an end-to-end window: the receiving gateway acknowledges the
bytes it has handed to the local worker; the sender keeps at most
:attr:`Tuning.stream_window_bytes` unacknowledged. aiortc has no receive-side flow
control an application can use (messages are pushed as events), so without it a slow
receiver would grow the remote gateway's memory without bound.

Batches: small calls and answers the owner hands over within one turn of its loop
(:meth:`Sending.hold`, then :meth:`Sending.flush_held`) share data-channel messages,
and so do small reliable stream frames waiting one behind another in the stream lane
(:meth:`Sending._stream_batch`; each still counted and confirmed on its own) when the
other side takes them (docs/gateway.md, "Batches").

After a failure (module ``_handover``), tells and reliable stream chunks go on
the next connection, those that left without confirmation too (they may have been lost
with the link), behind an ``again`` message on their channel that names where they first
went; the other side drops those it had received (module ``_carry``). Queued items and
copies of sent messages keep that origin, so a second failure hands it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._envelope import StreamFrame
from .._payload_type import PayloadType
from . import _framing as framing
from ._carry import Origin, frames_in_message
from ._pacing import PART_FLOOR_BYTES, FifoPace
from ._types import CALLS, STREAMS, TERMINAL, LinkCounters, LinkState, Tuning

if TYPE_CHECKING:
    from ._media import MediaSender

log = logging.getLogger(__name__)

#: How long a stopping gateway waits for its "bye" to leave on each connection.
BYE_WAIT_S = 0.2


@dataclass(frozen=True)
class _ChannelSpec:
    channel_id: int
    label: str
    ordered: bool = True
    max_retransmits: int | None = None


# Index in this tuple = sending priority (0 first).
_SIGNAL, _RPC, _LATENCY, _STREAM = 0, 1, 2, 3
_CHANNELS = (
    _ChannelSpec(0, "signal"),
    _ChannelSpec(1, "rpc"),
    _ChannelSpec(3, "latency", ordered=False, max_retransmits=0),
    _ChannelSpec(2, "stream"),
)
_LANE_SLOT: dict[int, int] = {
    PayloadType.RPC_SIGNAL: _SIGNAL,
    PayloadType.RPC_RELIABLE: _RPC,
    PayloadType.STREAM_LATENCY_FIRST: _LATENCY,
    PayloadType.MEDIA_RTP: _LATENCY,  # media that is not a raw array: encoded bytes
    PayloadType.STREAM_RELIABLE: _STREAM,
}
#: The gateway socket that feeds each reliable lane (a full lane stops reading it).
_SOCKET_OF = {_SIGNAL: CALLS, _RPC: CALLS, _STREAM: STREAMS}
_SLOT_LANE = {
    _SIGNAL: PayloadType.RPC_SIGNAL,
    _RPC: PayloadType.RPC_RELIABLE,
    _LATENCY: PayloadType.STREAM_LATENCY_FIRST,
    _STREAM: PayloadType.STREAM_RELIABLE,
}
#: Kinds of the items of a lane queue: a frame; a control message; a batch of frames; a
#: message a failed connection handed over, sent as it is (tells, or an ``again``).
_FRAME, _CONTROL, _BATCH, _VERBATIM = 0, 1, 2, 3
#: Copies kept per channel of what left without confirmation (module ``_carry``). The
#: other side's acks keep it to ~50 ms of traffic and SCTP's window bounds it anyway; this
#: only caps it against a peer that never confirms (the oldest is given up).
UNCONFIRMED_MAX = 65536
#: Frames up to this size may share a batch message (calls and answers; a larger frame
#: costs enough on its own that batching saves nothing).
BATCH_FRAME_MAX_BYTES = 16 * 1024


class _Lane:
    """Our queue for one channel: frames, control messages and batch messages."""

    __slots__ = (
        "channel",
        "current",
        "current_origin",
        "items",
        "lossy",
        "queued_bytes",
        "sent_messages",
        "slot",
        "unconfirmed",
    )

    def __init__(self, slot: int, lossy: bool) -> None:
        self.slot = slot
        self.lossy = lossy
        self.channel: Any = None
        #: (lane, data, item kind, origin: where a carried item first went, module
        #: ``_carry``).
        self.items: deque[tuple[int, bytes, int, Origin | None]] = deque()
        self.queued_bytes = 0
        #: The parts of a frame still to send, and that frame's origin.
        self.current: Iterator[bytes] | None = None
        self.current_origin: Origin | None = None
        #: Call channels: messages handed to aiortc on this connection, and those of
        #: them the other side has not confirmed receiving yet, with their origins.
        self.sent_messages = 0
        self.unconfirmed: deque[tuple[bytes, Origin | None]] = deque()


class Sending:
    """Mixin of :class:`~._peer.PeerConnection`: everything about sending frames."""

    # Set up by PeerConnection.__init__.
    _state: LinkState
    tuning: Tuning
    counters: LinkCounters
    _lanes: list[_Lane]
    _pc: Any  # aiortc's RTCPeerConnection, None once closed
    _held: list[tuple[int, bytes]]
    _wake: asyncio.Event
    _low: asyncio.Event
    _pace: FifoPace  # how much may wait in aiortc's FIFO, how large a message may be
    _pressured: set[str]  # gateway sockets this connection asked to stop reading
    session_id: str
    _stream_sent_bytes: int
    _stream_acked_bytes: int
    #: Reliable stream frames handed to aiortc on this connection, and those of them
    #: the other side has not confirmed receiving yet (oldest first): sent again after
    #: a failure (with their origins).
    _stream_frames_sent: int
    _stream_unconfirmed: deque[tuple[bytes, Origin | None]]
    stream_batches: bool  # the other side unpacks batches on the stream channel
    _message_ids: Iterator[int]
    media_sender: MediaSender
    fail: Callable[[str], None]
    _report_pressure: Callable[[str, bool], None]  # to the owner: stop or resume reading

    # -- sending -----------------------------------------------------------------------

    def enqueue(self, lane: int, frame: bytes, origin: Origin | None = None) -> bool:
        """Queue a frame on its lane's channel; never blocks. ``origin``: where a frame
        handed over by a failed connection first went (module ``_carry``).

        Returns False when it was dropped (a lossy lane's oldest frame is dropped instead
        when full; a terminal connection drops everything).
        """
        if self._state in TERMINAL:
            self.counters.by_lane[lane].dropped += 1
            return False
        slot = _LANE_SLOT[lane]
        q = self._lanes[slot]
        if self._send_now(q, lane, frame, origin):
            return True
        if q.lossy and len(q.items) >= self.tuning.latency_queue_frames:
            old_lane, old, _, _ = q.items.popleft()
            q.queued_bytes -= len(old)
            self.counters.by_lane[old_lane].dropped += 1
        q.items.append((lane, frame, _FRAME, origin))
        self._queued(q, len(frame))
        return True

    def _queued(self, q: _Lane, size_bytes: int) -> None:
        q.queued_bytes += size_bytes
        socket = _SOCKET_OF.get(q.slot)
        if (
            socket is not None
            and q.queued_bytes > self.tuning.queue_high_bytes
            and socket not in self._pressured
        ):
            self._pressured.add(socket)
            self._report_pressure(socket, True)
        self._wake.set()

    def _send_now(self, q: _Lane, lane: int, frame: bytes, origin: Origin | None) -> bool:
        """Send at once when nothing waits and aiortc's buffer has room: saves the wake-up
        of the sender task, one loop iteration per hop (measured in scripts/bench_remote.py)."""
        if not self._room_now(q, len(frame) + 1) or not self._send_message(
            q, framing.frame_message(frame), origin
        ):
            return False
        counters = self.counters.by_lane[lane]
        counters.frames_out += 1
        counters.bytes_out += len(frame)
        if q.slot == _STREAM:
            self._stream_left(frame, origin)
        return True

    def _stream_left(self, frame: bytes, origin: Origin | None) -> None:
        self._stream_sent_bytes += len(frame)
        self._stream_frames_sent += 1
        self._stream_unconfirmed.append((frame, origin))
        if len(self._stream_unconfirmed) > UNCONFIRMED_MAX:
            self._stream_unconfirmed.popleft()

    def stream_frames_confirmed(self, received: int) -> None:
        """The other side says it has received the first ``received`` stream frames of
        this connection: they need not be sent again after a failure."""
        _let_go(self._stream_unconfirmed, self._stream_frames_sent, received)

    def _room_now(self, q: _Lane, message_bytes: int) -> bool:
        """Whether a message of this size may go to aiortc now, ahead of nothing."""
        if self._state is not LinkState.CONNECTED or (
            q.slot == _STREAM and not self._window_open()
        ):
            return False
        buffered = 0
        for x in self._lanes:
            if x.items or x.current is not None:
                return False
            buffered += x.channel.bufferedAmount
        if buffered or message_bytes > PART_FLOOR_BYTES:  # not for a lone call: no cost
            self._follow_link()
        return message_bytes <= self._pace.part_bytes and buffered <= self._pace.limit_bytes

    def _send_message(self, q: _Lane, message: bytes, origin: Origin | None = None) -> bool:
        try:
            self._to_channel(q, message, origin)
        except Exception as exc:  # InvalidStateError: the channel closed under us
            self.fail(f"send failed: {exc!r}")
            return False
        return True

    def _to_channel(self, q: _Lane, message: bytes, origin: Origin | None) -> None:
        q.channel.send(message)
        if q.slot <= _RPC and message[0] != framing.KIND_CONTROL:
            # Kept until confirmed: a tell in it may have to go again.
            q.sent_messages += 1
            q.unconfirmed.append((message, origin))
            if len(q.unconfirmed) > UNCONFIRMED_MAX:
                q.unconfirmed.popleft()

    def messages_confirmed(self, received: list[int]) -> None:
        """The other side says how many messages it has received on each call channel
        (signal, rpc): those need not be sent again after a failure."""
        for q, count in zip(self._lanes[: _RPC + 1], received, strict=False):
            _let_go(q.unconfirmed, q.sent_messages, count)

    # -- batches -------------------------------------------------------------------------

    def hold(self, lane: int, frame: bytes) -> bool:
        """Keep a small call or answer for :meth:`flush_held`, which the owner calls at the
        end of its loop turn; False: not kept (use :meth:`enqueue`)."""
        if (
            self._state is not LinkState.CONNECTED
            or _LANE_SLOT[lane] > _RPC
            or len(frame) > BATCH_FRAME_MAX_BYTES
        ):
            return False
        self._held.append((lane, frame))
        return True

    def flush_held(self) -> None:
        """Send the frames kept by :meth:`hold`: one alone, several per lane in batch
        messages (each within the message size), in order."""
        held, self._held = self._held, []
        self._in_batches(held)

    def _in_batches(self, held: list[tuple[int, bytes]]) -> None:
        """Queue small calls, answers and tells (of the two call lanes) in batches."""
        if len(held) == 1:
            self.enqueue(*held[0])
            return
        limit = self.tuning.max_message_bytes - 1
        for slot in (_SIGNAL, _RPC):
            batch: list[tuple[int, bytes]] = []
            size = 0
            for lane, frame in held:
                if _LANE_SLOT[lane] != slot:
                    continue
                if batch and size + framing.batch_size(frame) > limit:
                    self._enqueue_batch(slot, batch)
                    batch, size = [], 0
                batch.append((lane, frame))
                size += framing.batch_size(frame)
            if batch:
                self._enqueue_batch(slot, batch)

    def _enqueue_batch(self, slot: int, batch: list[tuple[int, bytes]]) -> None:
        if len(batch) == 1 or self._state in TERMINAL:
            for lane, frame in batch:
                self.enqueue(lane, frame)
            return
        message = framing.batch_message([frame for _lane, frame in batch])
        q = self._lanes[slot]
        if self._room_now(q, len(message)):
            if not self._send_message(q, message):
                return
        else:
            q.items.append((-1, message, _BATCH, None))
            self._queued(q, len(message))
        for lane, frame in batch:
            counters = self.counters.by_lane[lane]
            counters.frames_out += 1
            counters.bytes_out += len(frame)
        self.counters.batches_out += 1

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue a control message on the signal channel (highest priority)."""
        if self._state in TERMINAL:
            return
        self._lanes[_SIGNAL].items.append((-1, framing.control_message(message), _CONTROL, None))
        self._wake.set()

    async def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until every reliable frame queued here has left and
        the other side has acknowledged it. A stopping gateway drains before it closes:
        its workers' last answers, an 8 MiB one included, are then not cut off by the
        close (a lossy frame still queued is dropped with it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._state is LinkState.CONNECTED and self._unsent() and loop.time() < deadline:
            await asyncio.sleep(0.005)

    def _unsent(self) -> bool:
        """Reliable data still on its way: in our lanes, aiortc's channels, or SCTP
        (not yet sent, or not yet acknowledged)."""
        if any(not q.lossy and (q.items or q.current is not None) for q in self._lanes):
            return True
        if any(q.channel is not None and q.channel.bufferedAmount for q in self._lanes):
            return True
        sctp = self._pc.sctp if self._pc is not None else None
        return bool(sctp is not None and (sctp._outbound_queue or sctp._sent_queue))

    async def say_bye(self, timeout_s: float = BYE_WAIT_S) -> None:
        """Tell the other side that this node stops for good, so that it forgets us instead
        of reconnecting, and give the message up to ``timeout_s`` to leave before the
        connection is closed."""
        if self._state is not LinkState.CONNECTED:
            return
        self.send_control({"op": "bye"})
        signal = self._lanes[_SIGNAL]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (
            (signal.items or signal.channel.bufferedAmount)
            and self._state is LinkState.CONNECTED
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.005)

    def send_media(self, frame: StreamFrame, payload: Any, array_meta: bytes, kind: str) -> bool:
        """Put a raw media sample on its route's video or audio track; False if not
        connected. A route without a free track is dropped here (counted, True)."""
        if self._state is not LinkState.CONNECTED:
            self.counters.media.dropped_sender += 1
            return False
        self.media_sender.send(frame, payload, array_meta, kind)
        return True

    def drop_queued(self) -> None:
        """Forget every frame not yet sent, counting each as dropped on its lane: a
        connection that closed sends nothing more (one that failed gives its tells and
        stream chunks to its successor first: :meth:`take_undelivered`)."""
        for q in self._lanes:
            for lane, data, kind, _origin in q.items:
                if kind == _FRAME:
                    self.counters.by_lane[lane].dropped += 1
                elif kind == _BATCH or kind == _VERBATIM:  # counted out when made
                    lane = _SLOT_LANE[q.slot]
                    self.counters.by_lane[lane].dropped += frames_in_message(data)
            q.items.clear()
            q.current = None
            q.queued_bytes = 0
            q.unconfirmed.clear()  # a closed connection sends nothing again either
        self._stream_unconfirmed.clear()

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in our lane queues."""
        return sum(q.queued_bytes for q in self._lanes)

    def queued_bytes_from(self, socket: str) -> int:
        """Bytes waiting in the lane queues that the gateway's ``socket`` feeds."""
        return sum(q.queued_bytes for q in self._lanes if _SOCKET_OF.get(q.slot) == socket)

    def _window_open(self) -> bool:
        inflight = self._stream_sent_bytes - self._stream_acked_bytes
        return inflight < self.tuning.stream_window_bytes

    def _next_slot(self) -> int | None:
        for q in self._lanes:
            if q.current is None and not q.items:
                continue
            if q.slot == _STREAM and q.current is None and not self._window_open():
                continue  # an ack wakes us
            return q.slot
        return None

    def _next_message(self, q: _Lane) -> tuple[bytes, Origin | None] | None:
        """The next message of lane ``q`` and its origin (module ``_carry``), if any."""
        while True:
            if q.current is not None:
                part = next(q.current, None)
                if part is not None:
                    return part, q.current_origin
                q.current = None
            if not q.items or (q.slot == _STREAM and not self._window_open()):
                return None
            lane, data, kind, origin = q.items.popleft()
            if kind == _CONTROL:
                return data, origin
            q.queued_bytes -= len(data)
            if kind == _VERBATIM:
                self._lane_taken(q)
                return data, origin
            if kind == _BATCH:
                self._lane_taken(q)
                return data, None  # counted when it was made
            limit = self._pace.part_bytes - 1  # (a batch's 0x04 byte)
            if q.slot == _STREAM and self.stream_batches and _batchable(q, data, limit):
                message = self._stream_batch(q, lane, data, origin)
                self._lane_taken(q)
                return message, None  # (its frames' origins are kept by _stream_left)
            self._lane_taken(q)
            counters = self.counters.by_lane[lane]
            try:
                part_bytes = self.tuning.max_message_bytes if q.lossy else self._pace.part_bytes
                q.current = framing.split_frame(data, next(self._message_ids), part_bytes)
                q.current_origin = origin
            except ValueError as exc:
                counters.dropped += 1
                log.warning("%r: dropped a frame: %s", self, exc)
                continue
            counters.frames_out += 1
            counters.bytes_out += len(data)
            if q.slot == _STREAM:
                self._stream_left(data, origin)

    def _lane_taken(self, q: _Lane) -> None:
        """Something left lane ``q``: its socket is read again once every lane it feeds
        is down to half the bound."""
        socket = _SOCKET_OF.get(q.slot)
        if socket in self._pressured and not any(
            _SOCKET_OF.get(x.slot) == socket and x.queued_bytes > self.tuning.queue_high_bytes // 2
            for x in self._lanes
        ):
            self._pressured.discard(socket)
            self._report_pressure(socket, False)

    def _stream_batch(self, q: _Lane, lane: int, data: bytes, origin: Origin | None) -> bytes:
        """Small reliable stream frames queued one behind another go as one message, up to
        the message size and the window: 64-byte chunks went one per SCTP message, ≈ 6,700
        a second on loopback (QA). Each is still counted, confirmed and sent again after
        a failure on its own (the other side unpacks it frame by frame)."""
        frames = [data]
        size = framing.batch_size(data)
        limit = self._pace.part_bytes - 1
        counters = self.counters.by_lane[lane]
        while True:
            counters.frames_out += 1
            counters.bytes_out += len(data)
            self._stream_left(data, origin)
            if not q.items or not self._window_open():
                break
            lane, data, kind, origin = q.items[0]
            if kind != _FRAME or len(data) > BATCH_FRAME_MAX_BYTES:
                break
            size += framing.batch_size(data)
            if size > limit:
                break
            q.items.popleft()
            q.queued_bytes -= len(data)
            frames.append(data)
            counters = self.counters.by_lane[lane]
        self.counters.batches_out += 1
        return framing.batch_message(frames)

    async def _run_sender(self) -> None:
        lanes = self._lanes
        pace = self._pace
        try:
            while self._state is not LinkState.CONNECTED:
                if self._state in TERMINAL:
                    return
                self._wake.clear()
                await self._wake.wait()
            while self._state is LinkState.CONNECTED:
                slot = self._next_slot()
                if slot is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._follow_link()
                if sum(q.channel.bufferedAmount for q in lanes) > pace.limit_bytes:
                    # Wait before taking the message, not holding it: meanwhile it is still
                    # in its lane, so nothing sent at once overtakes it, and a failure
                    # finds it there (it was lost, and newer batches overtook it: QA).
                    self._low.clear()
                    pace.waited()
                    # bufferedamountlow always fires eventually (see _create_channels);
                    # the timeout only guards against a channel closing meanwhile.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._low.wait(), 0.1)
                    continue  # a lane of higher priority may have something now
                message = self._next_message(lanes[slot])
                if message is not None:
                    self._to_channel(lanes[slot], *message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # InvalidStateError: a channel closed under us
            self.fail(f"send failed: {exc!r}")

    def _follow_link(self) -> None:
        """Set the FIFO limit from the link now, and every channel's ``bufferedamountlow``
        threshold to its share of it: then whichever channel holds more than its share
        while the sender waits crosses it (no lost wake-up, see ``_create_channels``)."""
        if self._pc is None or not self._pace.follow(self._pc.sctp):
            return
        share = max(1, self._pace.limit_bytes // len(self._lanes))
        for q in self._lanes:
            q.channel.bufferedAmountLowThreshold = share


def _batchable(q: _Lane, data: bytes, limit: int) -> bool:
    """Whether a stream frame just taken from ``q`` starts a batch: it is small, and so is
    the frame behind it, and both fit in ``limit`` bytes (a slow link's messages are
    smaller: module _pacing)."""
    if len(data) > BATCH_FRAME_MAX_BYTES or not q.items:
        return False
    _lane, following, kind, _origin = q.items[0]
    return (
        kind == _FRAME
        and len(following) <= BATCH_FRAME_MAX_BYTES
        and framing.batch_size(data) + framing.batch_size(following) <= limit
    )


def _let_go(unconfirmed: deque[Any], sent: int, received: int) -> None:
    """Drop the copies of the first ``received`` of ``sent`` items (``unconfirmed`` holds
    the last ones sent)."""
    for _ in range(received - (sent - len(unconfirmed))):
        if not unconfirmed:
            break
        unconfirmed.popleft()
