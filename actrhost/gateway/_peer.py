"""One WebRTC peer connection to another node's gateway: data channels per lane, media
tracks, a priority sender with bounded buffers, reassembly, keepalive.

aiortc objects (RTCPeerConnection, channels, tracks) live only inside this class; the
rest of the gateway sees :class:`LinkState`, frames as bytes and our own counters.

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
keeps aiortc's FIFO short (at most :attr:`Tuning.buffer_high_bytes` across channels,
waiting on ``bufferedamountlow``) and picks the next message from our per-lane queues by
priority: an RPC_SIGNAL message waits behind at most that many bytes, never behind a
queued stream. Large frames go out in parts, one part per turn, so a 64 MiB stream chunk
never blocks a call.

STREAM_RELIABLE also has an end-to-end window: the receiving gateway acknowledges the
bytes it has handed to the local worker; the sender keeps at most
:attr:`Tuning.stream_window_bytes` unacknowledged. aiortc has no receive-side flow
control an application can use (messages are pushed as events), so without it a slow
receiver would grow the remote gateway's memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from .._config import WebrtcConfig
from .._envelope import StreamFrame
from .._payload_type import PayloadType
from . import _framing as framing
from ._ice import candidate_type_in_use, local_candidate_count, rtc_configuration
from ._media import MediaReceiver, MediaSender
from ._types import TERMINAL, TRANSITIONS, LinkCounters, LinkState, Tuning

log = logging.getLogger(__name__)


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
_SLOT_LANE = {
    _SIGNAL: PayloadType.RPC_SIGNAL,
    _RPC: PayloadType.RPC_RELIABLE,
    _LATENCY: PayloadType.STREAM_LATENCY_FIRST,
    _STREAM: PayloadType.STREAM_RELIABLE,
}
_ACK_EVERY_BYTES = 1024 * 1024
_ACK_DELAY_S = 0.01
#: Kinds of the items of a lane queue.
_FRAME, _CONTROL, _BATCH = 0, 1, 2
#: Frames up to this size may share a batch message (calls and answers; a larger frame
#: costs enough on its own that batching saves nothing).
BATCH_FRAME_MAX_BYTES = 16 * 1024


class _Lane:
    """Our queue for one channel. ``items`` are (lane, frame bytes) or control messages."""

    __slots__ = ("channel", "current", "items", "lossy", "queued_bytes", "slot")

    def __init__(self, slot: int, lossy: bool) -> None:
        self.slot = slot
        self.lossy = lossy
        self.channel: Any = None
        self.items: deque[tuple[int, bytes, int]] = deque()  # (lane, data, item kind)
        self.queued_bytes = 0
        self.current: Iterator[bytes] | None = None


FrameCallback = Callable[["PeerConnection", int, bytes], None]
ControlCallback = Callable[["PeerConnection", dict[str, Any]], None]
StateCallback = Callable[["PeerConnection", LinkState, str], None]
PressureCallback = Callable[["PeerConnection", bool], None]
MediaCallback = Callable[[StreamFrame], None]


@dataclass
class Callbacks:
    """How a peer connection reports to its owner (all called synchronously)."""

    on_frame: FrameCallback
    on_control: ControlCallback
    on_state: StateCallback
    on_pressure: PressureCallback
    on_media: MediaCallback
    parse_id: Callable[[str], Any]


class PeerConnection:
    """One RTCPeerConnection with another node's gateway; terminal once closed or failed.

    ``session_id`` names it on the signaling relay. Create, then either
    :meth:`create_offer` (+ :meth:`accept_answer`) or :meth:`accept_offer`. Frames can be
    queued from creation on; they go out once every channel is open.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        remote_node: str,
        session_id: str,
        *,
        webrtc: WebrtcConfig,
        tuning: Tuning,
        counters: LinkCounters,
        callbacks: Callbacks,
    ) -> None:
        self.remote_node = remote_node
        self.session_id = session_id
        self.is_offerer = False
        self._webrtc = webrtc
        self.tuning = tuning
        self.counters = counters
        self._cb = callbacks
        self._loop = asyncio.get_running_loop()
        self._state = LinkState.NEW
        self.error = ""
        self._pc: RTCPeerConnection | None = None
        self._lanes = [_Lane(slot, lossy=slot == _LATENCY) for slot in range(len(_CHANNELS))]
        self._held: list[tuple[int, bytes]] = []  # see hold()
        self._reassemblers = [framing.Reassembler(8 if s == _LATENCY else 2) for s in range(4)]
        self._message_ids = itertools.count(next(self._ids) << 20)
        self._open_channels = 0
        self._wake = asyncio.Event()
        self._low = asyncio.Event()
        self._pressured = False
        self._stream_sent_bytes = 0
        self._stream_acked_bytes = 0
        self._stream_delivered_bytes = 0
        self._stream_ack_sent = 0
        self._ack_handle: asyncio.TimerHandle | None = None
        self._last_rx = self._loop.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        self.media_sender = MediaSender(counters.media)
        self.media_receiver = MediaReceiver(callbacks.on_media, callbacks.parse_id, counters.media)
        self.candidate_type = ""

    def __repr__(self) -> str:
        return f"PeerConnection({self.remote_node} {self.session_id} {self._state})"

    @property
    def state(self) -> LinkState:
        """The connection state."""
        return self._state

    def _set_state(self, new: LinkState, reason: str = "") -> None:
        old = self._state
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            log.debug("%r: ignored transition %s -> %s", self, old, new)
            return
        self._state = new
        log.info("%r: %s -> %s%s", self, old, new, f" ({reason})" if reason else "")
        self._cb.on_state(self, new, reason)

    # -- negotiation -------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(configuration=rtc_configuration(self._webrtc))
        pc.on("connectionstatechange", self._on_pc_state)
        pc.on("track", self.media_receiver.add_track)
        self._pc = pc
        return pc

    def _create_channels(self, pc: RTCPeerConnection) -> None:
        low = max(1, self.tuning.buffer_high_bytes // len(_CHANNELS))
        for slot, spec in enumerate(_CHANNELS):
            channel = pc.createDataChannel(
                spec.label,
                ordered=spec.ordered,
                maxRetransmits=spec.max_retransmits,
                negotiated=True,
                id=spec.channel_id,
            )
            # Every channel over the shared high-water mark is above this threshold, so
            # some channel always crosses it while the sender waits (no lost wake-up).
            channel.bufferedAmountLowThreshold = low
            channel.on("bufferedamountlow", self._low.set)
            channel.on("open", self._on_channel_open)
            channel.on("close", lambda: self.fail("a data channel closed"))
            channel.on("message", self._receiver(slot))
            self._lanes[slot].channel = channel

    def _begin(self) -> None:
        self._set_state(LinkState.CONNECTING)
        self._tasks.append(self._loop.create_task(self._connect_watchdog()))
        self._tasks.append(self._loop.create_task(self._run_sender()))

    async def create_offer(self) -> str:
        """Create the connection as the offering side; return the SDP offer.

        Candidates are gathered before this returns (aiortc does not trickle): the SDP
        holds them all.
        """
        self.is_offerer = True
        pc = self._new_pc()
        self._create_channels(pc)
        pc.addTransceiver(self.media_sender.video, direction="sendrecv")
        pc.addTransceiver(self.media_sender.audio, direction="sendrecv")
        self._begin()
        await pc.setLocalDescription(await pc.createOffer())
        self._check_candidates(pc)
        return pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Create the connection as the answering side for ``sdp``; return the answer."""
        pc = self._new_pc()
        self._begin()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        # Channels after the remote description: created earlier, aiortc would make a
        # second transport for them that the bundled one then closes (measured: a hang).
        self._create_channels(pc)
        for transceiver in pc.getTransceivers():
            track = (
                self.media_sender.video if transceiver.kind == "video" else self.media_sender.audio
            )
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
        self._check_candidates(pc)
        return pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer."""
        if self._pc is None or self._state in TERMINAL:
            return
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def _check_candidates(self, pc: RTCPeerConnection) -> None:
        if local_candidate_count(pc) == 0:
            relay = (
                " (force_relay: is the TURN server reachable?)" if self._webrtc.force_relay else ""
            )
            self.fail(
                "no local ICE candidates: set [webrtc] ice_host_addresses to addresses of "
                f"this host{relay}"
            )

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.tuning.connect_timeout_s)
        if self._state is LinkState.CONNECTING:
            self.fail(f"no connection within {self.tuning.connect_timeout_s:g} s")

    def _on_pc_state(self) -> None:
        pc = self._pc
        if pc is not None and pc.connectionState in ("failed", "closed"):
            self.fail(f"peer connection {pc.connectionState}")

    def _on_channel_open(self) -> None:
        self._open_channels += 1
        if self._open_channels == len(_CHANNELS) and self._state is LinkState.CONNECTING:
            self._last_rx = self._loop.time()
            if self._pc is not None:
                self.candidate_type = candidate_type_in_use(self._pc)
            self._set_state(LinkState.CONNECTED)
            self._tasks.append(self._loop.create_task(self._keepalive()))
            self._wake.set()

    # -- sending -----------------------------------------------------------------------

    def enqueue(self, lane: int, frame: bytes) -> bool:
        """Queue a frame on its lane's channel; never blocks.

        Returns False when it was dropped (a lossy lane's oldest frame is dropped instead
        when full; a terminal connection drops everything).
        """
        if self._state in TERMINAL:
            self.counters.by_lane[lane].dropped += 1
            return False
        slot = _LANE_SLOT[lane]
        q = self._lanes[slot]
        if self._send_now(q, lane, frame):
            return True
        if q.lossy and len(q.items) >= self.tuning.latency_queue_frames:
            old_lane, old, _ = q.items.popleft()
            q.queued_bytes -= len(old)
            self.counters.by_lane[old_lane].dropped += 1
        q.items.append((lane, frame, _FRAME))
        self._queued(q, len(frame))
        return True

    def _queued(self, q: _Lane, size_bytes: int) -> None:
        q.queued_bytes += size_bytes
        if not q.lossy and q.queued_bytes > self.tuning.queue_high_bytes and not self._pressured:
            self._pressured = True
            self._cb.on_pressure(self, True)
        self._wake.set()

    def _send_now(self, q: _Lane, lane: int, frame: bytes) -> bool:
        """Send at once when nothing waits and aiortc's buffer has room: saves the wake-up
        of the sender task, one loop iteration per hop (measured in scripts/bench_remote.py)."""
        if not self._room_now(q, len(frame) + 1) or not self._send_message(
            q, framing.frame_message(frame)
        ):
            return False
        counters = self.counters.by_lane[lane]
        counters.frames_out += 1
        counters.bytes_out += len(frame)
        if q.slot == _STREAM:
            self._stream_sent_bytes += len(frame)
        return True

    def _room_now(self, q: _Lane, message_bytes: int) -> bool:
        """Whether a message of this size may go to aiortc now, ahead of nothing."""
        if (
            self._state is not LinkState.CONNECTED
            or message_bytes > self.tuning.max_message_bytes
            or (q.slot == _STREAM and not self._window_open())
        ):
            return False
        buffered = 0
        for x in self._lanes:
            if x.items or x.current is not None:
                return False
            buffered += x.channel.bufferedAmount
        return buffered <= self.tuning.buffer_high_bytes

    def _send_message(self, q: _Lane, message: bytes) -> bool:
        try:
            q.channel.send(message)
        except Exception as exc:  # InvalidStateError: the channel closed under us
            self.fail(f"send failed: {exc!r}")
            return False
        return True

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
        if len(batch) == 1 or self._state is not LinkState.CONNECTED:
            for lane, frame in batch:
                self.enqueue(lane, frame)
            return
        message = framing.batch_message([frame for _lane, frame in batch])
        q = self._lanes[slot]
        if self._room_now(q, len(message)):
            if not self._send_message(q, message):
                return
        else:
            q.items.append((-1, message, _BATCH))
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
        self._lanes[_SIGNAL].items.append((-1, framing.control_message(message), _CONTROL))
        self._wake.set()

    def send_media(self, frame: StreamFrame, payload: Any, array_meta: bytes, kind: str) -> bool:
        """Put a raw media sample on the video or audio track; False if not connected."""
        if self._state is not LinkState.CONNECTED:
            self.counters.media.dropped_sender += 1
            return False
        meta = self.media_sender.send(frame, payload, array_meta, kind)
        self.send_control(meta)
        return True

    def take_queued(self) -> list[tuple[int, bytes]]:
        """Remove and return the frames not yet started (to move them to a successor)."""
        frames: list[tuple[int, bytes]] = []
        for q in self._lanes:
            frames += [(lane, data) for lane, data, kind in q.items if kind == _FRAME]
            q.items.clear()
            q.queued_bytes = 0
        return frames

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in our lane queues."""
        return sum(q.queued_bytes for q in self._lanes)

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

    def _next_message(self, q: _Lane) -> bytes | None:
        while True:
            if q.current is not None:
                part = next(q.current, None)
                if part is not None:
                    return part
                q.current = None
            if not q.items or (q.slot == _STREAM and not self._window_open()):
                return None
            lane, data, kind = q.items.popleft()
            if kind == _CONTROL:
                return data
            q.queued_bytes -= len(data)
            if self._pressured and not any(
                not x.lossy and x.queued_bytes > self.tuning.queue_high_bytes // 2
                for x in self._lanes
            ):
                self._pressured = False
                self._cb.on_pressure(self, False)
            if kind == _BATCH:
                return data  # counted when it was made
            counters = self.counters.by_lane[lane]
            counters.frames_out += 1
            counters.bytes_out += len(data)
            if q.slot == _STREAM:
                self._stream_sent_bytes += len(data)
            try:
                q.current = framing.split_frame(
                    data, next(self._message_ids), self.tuning.max_message_bytes
                )
            except ValueError as exc:
                counters.dropped += 1
                log.warning("%r: dropped a frame: %s", self, exc)

    async def _run_sender(self) -> None:
        high = self.tuning.buffer_high_bytes
        lanes = self._lanes
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
                message = self._next_message(lanes[slot])
                if message is None:
                    continue
                while sum(q.channel.bufferedAmount for q in lanes) > high:
                    self._low.clear()
                    # bufferedamountlow always fires eventually (see _create_channels);
                    # the timeout only guards against a channel closing meanwhile.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._low.wait(), 0.1)
                    if self._state is not LinkState.CONNECTED:
                        return
                lanes[slot].channel.send(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # InvalidStateError: a channel closed under us
            self.fail(f"send failed: {exc!r}")

    # -- receiving ---------------------------------------------------------------------

    def _receiver(self, slot: int) -> Callable[[Any], None]:
        reassembler = self._reassemblers[slot]

        def on_message(data: Any) -> None:
            self._last_rx = self._loop.time()
            evicted = reassembler.evicted
            try:
                item = reassembler.feed(data)
            except framing.MalformedMessage as exc:
                self.counters.malformed += 1
                log.warning(
                    "%r: dropped a malformed message on %s: %s", self, _CHANNELS[slot].label, exc
                )
                return
            if reassembler.evicted != evicted:
                self.counters.evicted_parts += reassembler.evicted - evicted
                self.counters.lanes["stream_latency_first"].dropped += reassembler.evicted - evicted
            if item is None:
                return
            what, value = item
            if what == "frame":
                self._cb.on_frame(self, _SLOT_LANE[slot], value)
            elif what == "frames":
                for frame in value:
                    self._cb.on_frame(self, _SLOT_LANE[slot], frame)
            else:
                self._on_control(value)

        return on_message

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ping":
            return
        if op == "ack":
            acked = message.get("n")
            if isinstance(acked, int) and acked > self._stream_acked_bytes:
                self._stream_acked_bytes = acked
                self._wake.set()
            return
        if op == "media":
            self.media_receiver.on_meta(message)
            return
        self._cb.on_control(self, message)

    def stream_delivered(self, size_bytes: int) -> None:
        """The owner handed ``size_bytes`` of STREAM_RELIABLE frames to a local worker:
        acknowledge them to the sender (batched)."""
        self._stream_delivered_bytes += size_bytes
        if self._stream_delivered_bytes - self._stream_ack_sent >= _ACK_EVERY_BYTES:
            self._send_ack()
        elif self._ack_handle is None:
            self._ack_handle = self._loop.call_later(_ACK_DELAY_S, self._send_ack)

    def _send_ack(self) -> None:
        if self._ack_handle is not None:
            self._ack_handle.cancel()
            self._ack_handle = None
        if self._stream_delivered_bytes != self._stream_ack_sent:
            self._stream_ack_sent = self._stream_delivered_bytes
            self.send_control({"op": "ack", "n": self._stream_delivered_bytes})

    async def _keepalive(self) -> None:
        interval = self.tuning.keepalive_interval_s
        timeout = self.tuning.keepalive_timeout_s
        while self._state is LinkState.CONNECTED:
            self.send_control({"op": "ping"})
            await asyncio.sleep(interval)
            silent = self._loop.time() - self._last_rx
            if silent > timeout:
                self.fail(f"nothing received for {silent:.1f} s")

    # -- ending ------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Mark the connection failed (idempotent) and close it in the background."""
        if self._state in TERMINAL:
            return
        self.error = reason
        self._set_state(LinkState.FAILED, reason)
        self._wake.set()
        self._low.set()
        self._closing = self._loop.create_task(self._shutdown())

    async def close(self) -> None:
        """Close for good (idempotent)."""
        if self._state is not LinkState.CLOSED:
            if self._state is not LinkState.FAILED:
                self._set_state(LinkState.CLOSED, "closed")
            else:
                self._state = LinkState.CLOSED
        await self._shutdown()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._ack_handle is not None:
            self._ack_handle.cancel()
        for q in self._lanes:
            q.items.clear()
            q.current = None
            q.queued_bytes = 0
        if self._pressured:
            self._pressured = False
            self._cb.on_pressure(self, False)
        self.media_sender.stop()
        self.media_receiver.stop()
        pc, self._pc = self._pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    def stats(self) -> dict[str, Any]:
        """State, candidate type in use, what is queued."""
        return {
            "state": self._state.value,
            "session": self.session_id,
            "offerer": self.is_offerer,
            "candidate_type": self.candidate_type,
            "queued_bytes": self.queued_bytes,
            "stream_inflight_bytes": self._stream_sent_bytes - self._stream_acked_bytes,
            "error": self.error,
        }
