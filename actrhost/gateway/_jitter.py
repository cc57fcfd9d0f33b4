"""Lost video packets: retransmissions that reach their track, a jitter buffer that gives
up on a lost packet after half a second, and releases every frame it can at once.

aiortc's receiver asks for a lost packet again (a NACK) and the sender resends it on its
RTX stream, but aiortc 1.16 routes an RTX packet by its SSRC only if the receiver
registered it, which it does not, and then by payload type, which is ambiguous with
several video transceivers on a connection (ours have four): every retransmission was
dropped, so every lost packet held its track up (QA, 2026-12-03).
:func:`_route_retransmissions` registers each receiver's RTX SSRCs too.

aiortc's RTP receiver completes video frames in a ``JitterBuffer(capacity=512)`` that
waits for every packet in order. A packet lost on the wire whose one NACK retransmission
is lost too holds all later video of its track until 512 packets have arrived behind it
(17 s at 30 fps of one-packet frames, minutes at a low frame rate). Then it releases one
frame per packet received, so the track stays that far behind for good: further than the
gateway can match frames to their ``media`` control messages (``MAX_PENDING_META``), so
every later frame of the track was dropped as unmatched (QA, 2026-12-03: one lost packet
under load, and a camera's video stopped for good).

Even a gap that its retransmission fills leaves a lag: the frames that completed behind
it come out one per packet received, so with one packet per frame (small or still
pictures) the track stays as many frames behind as the gap lasted, and every loss adds
to it.

:class:`VideoJitterBuffer` drops a gap, and the packets waiting behind it, once the gap
has stood for :data:`GAP_WAIT_S` (time enough for the NACK's retransmission) or the buffer
is full, and asks the sender for a keyframe (a PLI), so the picture resumes about
:data:`GAP_WAIT_S` plus a round trip after the loss. Frames between the drop and the
keyframe may decode with artefacts or not at all (a decoding error asks for a keyframe
too), as in any real-time video receiver. A timer does the same when no packet comes:
aiortc's receiver moves its buffer only when a packet arrives, so a gap at the end of a
burst held its frames (and the keyframe request) until the track's next frame, which then
came as a frame the receiver could not decode without the ones dropped with the gap.
When a packet completes several frames at once, it releases all of them: aiortc's
receiver takes one frame per packet, so the others ride along on the first
(:class:`_Frames`) and the decoder (:class:`_DecodeAll`) decodes them right after it.

Audio: aiortc's buffer (``prefetch=4``) let a frame out only once four more had come
behind it, so the last four samples of a burst (80 ms) waited for the next burst, for
ever if none came (QA: 6 of 10, 26 of 30 samples arrived). Each audio RTP packet is a
whole frame (one Opus packet per 20 ms), so :class:`AudioJitterBuffer` lets a packet out
as soon as the ones before it are out, and waits for a missing one (reordered) at most
:data:`AUDIO_GAP_WAIT_S`, the reordering aiortc's prefetch absorbed, before it goes on
without it (the decoder conceals a lost packet). A timer ends that wait too: aiortc's
receiver moves its buffer only when a packet arrives, so the frames behind a packet lost
at the end of a burst waited for the track's next packet, for ever if none came, and then
went to whatever route the track carried by then (:func:`_decode_late`).

Only the gateway process calls :func:`install`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import aiortc.rtcrtpreceiver
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

#: How long a gap in a video track's packets may hold up the frames behind it. Above a
#: NACK round trip (a retransmission fills most gaps), well below what a viewer accepts.
GAP_WAIT_S = 0.5
#: How long a missing audio packet may hold up those behind it: four 20 ms packets, as
#: aiortc's prefetch allowed for reordering.
AUDIO_GAP_WAIT_S = 0.08
#: A sequence number at least this far ahead of the oldest awaited one is in fact behind it.
_HALF_RANGE = 0x8000


class VideoJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, but a gap that stood for :data:`GAP_WAIT_S` is
    dropped with what waits behind it, and a frame is whole at its last packet (the RTP
    marker), not only once the next frame starts."""

    def __init__(
        self,
        capacity: int,
        prefetch: int = 0,
        is_video: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(capacity, prefetch, is_video)
        self._clock = clock
        self._gap_since: float | None = None
        self._newest: RtpPacket | None = None  # the packet furthest ahead, held or let out
        self._held_since: float | None = None  # since when packets wait at this origin
        self._held_origin: int | None = None  # the origin then: it moves as frames go
        self._timer: asyncio.TimerHandle | None = None
        #: How many times a gap (and what waited behind it) was dropped.
        self.gaps_dropped = 0
        #: Where the timer asks for a keyframe (with the SSRC of the packets it dropped):
        #: as no packet's ``add`` returns the request. None: only packets move the buffer.
        self.ask_keyframe: Callable[[int], None] | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Add a packet; (ask for a keyframe?, the next complete frame or None)."""
        dropped = self._drop_stale_gap(packet)
        keyframe_wanted, frame = super().add(packet)
        if frame is not None:
            later = []
            while (another := self._remove_frame(packet.sequence_number)) is not None:
                later.append(another)
            if later:
                frame = _Frames(frame, later)
        newest = self._newest
        if newest is None or not self._holds(newest) or _is_ahead(packet, newest):
            self._newest = packet
        self._watch_held()
        return keyframe_wanted or dropped, frame

    def _holds(self, packet: RtpPacket) -> bool:
        return self._packets[packet.sequence_number % self._capacity] is packet

    def _watch_held(self) -> None:
        """Have the timer drop what waits once the oldest packet awaited stayed the same
        for :data:`GAP_WAIT_S` (no frame went, nothing was dropped). Packets are held
        while the newest is: frames leave from the oldest on."""
        if self._newest is None or not self._holds(self._newest):
            self._held_since = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._held_since is None or self._origin != self._held_origin:
            self._held_since, self._held_origin = self._clock(), self._origin
        if self._timer is None and self.ask_keyframe is not None:
            wait_s = self._held_since + GAP_WAIT_S - self._clock()
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._held_too_long)

    def _held_too_long(self) -> None:
        self._timer = None
        newest, origin = self._newest, self._origin
        if newest is None or origin is None or not self._holds(newest):
            return
        assert self._held_since is not None
        if self._clock() - self._held_since < GAP_WAIT_S:
            self._watch_held()  # a frame went meanwhile: wait from then
            return
        # What a packet coming now would do (_drop_stale_gap), and the keyframe request
        # its ``add`` would return.
        self.remove(uint16_add(newest.sequence_number, -origin) + 1)
        self._gap_since = self._held_since = None
        self.gaps_dropped += 1
        if self.ask_keyframe is not None:
            self.ask_keyframe(newest.ssrc)

    def _drop_stale_gap(self, packet: RtpPacket) -> bool:
        origin = self._origin
        if origin is None:
            return False
        ahead = uint16_add(packet.sequence_number, -origin)
        if ahead >= _HALF_RANGE:
            return False  # older than what we wait for: aiortc's rules apply
        if ahead < self._capacity:
            if not self._has_gap(origin, ahead):
                self._gap_since = None
                return False
            now = self._clock()
            if self._gap_since is None:
                self._gap_since = now
            if now - self._gap_since < GAP_WAIT_S:
                return False
        # Full, or a packet we wait for is lost for good: start again at this one.
        self.remove(min(ahead, self._capacity))
        self._origin = packet.sequence_number
        self._gap_since = None
        self.gaps_dropped += 1
        return True

    def _has_gap(self, origin: int, ahead: int) -> bool:
        """Whether a packet before ``origin + ahead`` is missing."""
        packets, capacity = self._packets, self._capacity
        return any(packets[(origin + i) % capacity] is None for i in range(ahead))

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        """The first frame, taken out, once whole: at its marked packet (aiortc's sender
        marks a frame's last), or when the next frame starts (a sender that marks none).
        aiortc's waits for the next frame: the last picture of a burst came only with
        the next burst, and every picture a frame late."""
        if self._origin is None:
            return None
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if packets and packet.timestamp != packets[0].timestamp:
                return self._take(packets)  # the next frame started
            packets.append(packet)
            if packet.marker:
                return self._take(packets)
        return None

    def _take(self, packets: list[RtpPacket]) -> JitterFrame:
        self.remove(len(packets))
        data = b"".join(packet._data for packet in packets)  # type: ignore[attr-defined]
        return JitterFrame(data=data, timestamp=packets[0].timestamp)


class AudioJitterBuffer(JitterBuffer):
    """Audio packets in order, each let out as soon as the ones before it are (module
    docstring); a missing one is waited for :data:`AUDIO_GAP_WAIT_S` at most, by the next
    packet or, once :attr:`release_late` is set, by a timer of the running loop."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(capacity)
        self._clock = clock
        self._due: int | None = None  # the sequence number of the next packet to let out
        self._waiting: dict[int, RtpPacket] = {}  # packets behind a missing one
        self._gap_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: How many times a missing packet was given up on.
        self.gaps_dropped = 0
        #: Where the frames go that the timer lets out (with their packets' payload
        #: type), as no packet's ``add`` returns them. None: only packets move the buffer.
        self.release_late: Callable[[JitterFrame, int], None] | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Add a packet; (False: audio asks for no keyframe, the frames it lets out)."""
        sequence = packet.sequence_number
        if self._due is None:
            self._due = sequence
        ahead = uint16_add(sequence, -self._due)
        if ahead >= _HALF_RANGE:  # behind what is due
            if uint16_add(self._due, -sequence) < MAX_MISORDER:
                return False, None  # late (gone on without it) or a duplicate
            ahead = self._start_at(sequence)  # the sender started again
        elif ahead >= self._capacity:
            ahead = self._start_at(sequence)  # far ahead: many lost
        self._waiting[sequence] = packet
        if ahead:  # one before it is missing
            now = self._clock()
            if self._gap_since is None:
                self._gap_since = now
            if now - self._gap_since < AUDIO_GAP_WAIT_S:
                self._wait_for_gap()
                return False, None
            self._skip_gap()
        return False, self._let_out()

    def _skip_gap(self) -> None:
        """Give up on the missing packet(s): go on at the first packet waiting."""
        due = self._due
        assert due is not None
        self._due = min(self._waiting, key=lambda waiting: uint16_add(waiting, -due))
        self.gaps_dropped += 1

    def _let_out(self) -> JitterFrame | None:
        """The frames due, in order, up to the next gap (whose wait starts now)."""
        assert self._due is not None
        frames = []
        while (waiting := self._waiting.pop(self._due, None)) is not None:
            frames.append(JitterFrame(waiting._data, waiting.timestamp))  # type: ignore[attr-defined]
            self._due = uint16_add(self._due, 1)
        self._gap_since = self._clock() if self._waiting else None
        self._wait_for_gap()
        if not frames:
            return None
        return _Frames(frames[0], frames[1:]) if len(frames) > 1 else frames[0]

    def _wait_for_gap(self) -> None:
        """Have the timer end the current gap's wait (or stop it: no gap)."""
        if self._gap_since is None or self.release_late is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is None:
            wait_s = self._gap_since + AUDIO_GAP_WAIT_S - self._clock()
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._gap_timed_out)

    def _gap_timed_out(self) -> None:
        self._timer = None
        if self._gap_since is None or not self._waiting:
            return
        if self._clock() - self._gap_since < AUDIO_GAP_WAIT_S:
            self._wait_for_gap()  # a later gap started meanwhile: wait for it in turn
            return
        payload_type = next(iter(self._waiting.values())).payload_type
        self._skip_gap()
        frame = self._let_out()
        if frame is not None and self.release_late is not None:
            self.release_late(frame, payload_type)

    def _start_at(self, sequence: int) -> int:
        self._waiting.clear()
        self._due = sequence
        self._gap_since = None
        self.gaps_dropped += 1
        return 0


def _is_ahead(packet: RtpPacket, other: RtpPacket) -> bool:
    """Whether ``packet`` comes after ``other`` (sequence numbers wrap around)."""
    return 0 < uint16_add(packet.sequence_number, -other.sequence_number) < _HALF_RANGE


def _jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
    """The jitter buffer aiortc's RTP receiver makes (``JitterBuffer`` in its module)."""
    if is_video:
        return VideoJitterBuffer(capacity, prefetch, is_video)
    return AudioJitterBuffer(capacity)


class _Frames(JitterFrame):
    """A complete frame, and the ones that completed with it (``later``)."""

    def __init__(self, first: JitterFrame, later: list[JitterFrame]) -> None:
        super().__init__(first.data, first.timestamp)
        #: The first frame's RTP timestamp: the receiver replaces ``timestamp`` by its
        #: position on the track's clock, and the later frames follow on that clock.
        self.rtp_timestamp = first.timestamp
        self.later = later


class _DecodeAll(Decoder):
    """One of aiortc's decoders, which also decodes the frames a :class:`_Frames` carries."""

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        """The pictures of ``encoded_frame`` and of the frames that came with it."""
        pictures = list(self._decoder.decode(encoded_frame))
        if isinstance(encoded_frame, _Frames):
            for frame in encoded_frame.later:
                since_first = (frame.timestamp - encoded_frame.rtp_timestamp) & 0xFFFFFFFF
                frame.timestamp = encoded_frame.timestamp + since_first
                pictures += self._decoder.decode(frame)
        return pictures


def _route_retransmissions() -> None:
    original = getattr(RTCDtlsTransport, "_register_rtp_receiver", None)
    if original is None:
        raise RuntimeError("aiortc's DTLS transport changed: no _register_rtp_receiver")

    def register(self: Any, receiver: Any, parameters: Any) -> None:
        original(self, receiver, parameters)
        rtx = [e.rtx.ssrc for e in parameters.encodings if e.rtx is not None]
        if rtx:
            self._rtp_router.register_receiver(receiver, ssrcs=rtx, payload_types=[])

    RTCDtlsTransport._register_rtp_receiver = register  # type: ignore[method-assign]


def _decode_late(receiver: RTCRtpReceiver, frame: JitterFrame, payload_type: int) -> None:
    """Hand ``frame``, let out by its buffer's timer, to ``receiver``'s decoder, as
    aiortc's receiver hands a frame that a packet completed (``_handle_rtp_packet``)."""
    state = vars(receiver)
    codec = state["_RTCRtpReceiver__codecs"].get(payload_type)
    if codec is None or state["_RTCRtpReceiver__decoder_thread"] is None:
        return  # stopped, or never started: as a packet would be, dropped
    frame.timestamp = state["_RTCRtpReceiver__timestamp_mapper"].map(frame.timestamp)
    state["_RTCRtpReceiver__decoder_queue"].put((codec, frame))


def _ask_keyframe(receiver: RTCRtpReceiver, ssrc: int) -> None:
    """Have ``receiver`` ask the sender of ``ssrc`` for a keyframe (a PLI), as aiortc's
    receiver does when a packet's ``add`` asks for one."""
    if vars(receiver)["_RTCRtpReceiver__decoder_thread"] is None:
        return  # stopped, or never started
    task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
    _ASKING.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_ASKING.discard)


_ASKING: set[asyncio.Future[None]] = set()


def _give_buffers_a_timer() -> None:
    """Wire each new receiver's buffer to it: the frames an audio buffer's timer lets
    out go to its decoder, the keyframe a video buffer's timer asks for to its sender."""
    original = RTCRtpReceiver.__init__

    def init(self: RTCRtpReceiver, kind: str, transport: RTCDtlsTransport) -> None:
        original(self, kind, transport)
        buffer = vars(self).get("_RTCRtpReceiver__jitter_buffer")
        if not isinstance(buffer, AudioJitterBuffer | VideoJitterBuffer):
            return
        if not _RECEIVER_STATE <= vars(self).keys() or not hasattr(self, "_send_rtcp_pli"):
            raise RuntimeError("aiortc's RTP receiver changed: no decoder queue, codecs, PLI")
        if isinstance(buffer, AudioJitterBuffer):
            buffer.release_late = functools.partial(_decode_late, self)
        else:
            buffer.ask_keyframe = functools.partial(_ask_keyframe, self)

    RTCRtpReceiver.__init__ = init  # type: ignore[method-assign]


#: What the timers read of aiortc's receiver (private: checked per receiver).
_RECEIVER_STATE = {
    f"_RTCRtpReceiver__{name}"
    for name in ("codecs", "decoder_thread", "timestamp_mapper", "decoder_queue")
}


def install() -> None:
    """Route retransmissions to their receiver, and make aiortc's RTP receivers use
    :class:`VideoJitterBuffer` and :class:`AudioJitterBuffer` (and decode what they
    release together), with timers that end a wait no packet ends. Gateway process
    only; idempotent; fails loudly if aiortc no longer has the names it replaces."""
    module = aiortc.rtcrtpreceiver
    current = getattr(module, "JitterBuffer", None)
    if current is _jitter_buffer:
        return
    get_decoder = getattr(module, "get_decoder", None)
    if current is not JitterBuffer or get_decoder is None:
        raise RuntimeError("aiortc's RTP receiver changed: no JitterBuffer or get_decoder")
    _route_retransmissions()
    _give_buffers_a_timer()
    module.JitterBuffer = _jitter_buffer  # type: ignore[misc, assignment]
    module.get_decoder = lambda codec: _DecodeAll(get_decoder(codec))
