"""Media samples between nodes on aiortc media tracks (the MEDIA_RTP lane, DESIGN §3).

Each peer connection carries :data:`TRACKS_PER_KIND` video and as many audio transceivers
in both directions (negotiated with the connection, so no renegotiation is ever needed).
A media route (sender actor, receiver actor, ``track_id``) gets a track of its kind to
itself while it streams, with its own encoder: two cameras of one node never share a VP8
encoder (which restarts at every change of resolution), and two microphones are never
mixed into one Opus stream. A route that sent nothing for :data:`ROUTE_IDLE_S` gives its
track to the next route; a route that finds every track of its kind busy is dropped and
counted (``no_track``). Every media sample a local actor sends to a remote actor becomes
an ``av`` frame on its route's outbound track: aiortc encodes it (VP8 / Opus), paces
nothing, and drops nothing itself; our track keeps at most :data:`TRACK_QUEUE_FRAMES`
frames (audio: :data:`AUDIO_QUEUE_FRAMES`) and replaces the oldest (newest wins,
counted), which is the lane's "real-time, drops under pressure". Audio goes to the encoder
in frames of :data:`AUDIO_FRAME_SAMPLES`: aiortc's Opus encoder made a longer frame
several packets with one RTP timestamp, and the receiver dropped them all.

RTP carries no routing: who sent the sample to whom, on which ``track_id``, with which
timestamp and on which transceiver (its ``mid``) travels beside it as a small ``media``
control message on the signal data channel, sent when the encoder takes the frame (a
frame replaced in the track's queue never had one). Video frames are matched to their
control message by position on their track: we number the frames the encoder takes,
stamp frame *i* with ``pts = i * VIDEO_PTS_STEP``, and aiortc's receiver reports ``pts``
relative to the first frame it decoded (its ``TimestampMapper``), so frame *i* arrives as
``(i - i0) * VIDEO_PTS_STEP`` where *i0* is the first index seen, 0 unless the track's
first frame was lost on the wire: then later frames are attributed that many positions
off (same route, neighbouring timestamps). Numbered when queued instead (until
2026-12-03), a first frame replaced in the queue did the same, often (QA: every picture
of a track one or two frames off).

Audio is resampled and re-framed by aiortc (20 ms Opus frames), so samples are not one to
one: decoded audio goes to the route of its track's latest control message, timestamped
from that route's first sample on a 48 kHz clock.

Payloads: a video sample is a ``uint8`` array of shape (height, width, 3) (codec
``rgb24``, the default, ``raw`` (the same) or ``bgr24``); it arrives as the same kind
of array after a lossy VP8 round trip. An audio sample is ``int16`` PCM at 48 kHz,
shape (n,) mono or (n, 2) stereo; it arrives as ``int16`` of that shape. Any other media
payload (already encoded bytes) does not use a track: the gateway sends it on the
latency-first data channel.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .._envelope import MEDIA, StreamFrame
from .._payload_type import PayloadType
from ..shm import decode_array_meta, encode_array_meta

log = logging.getLogger(__name__)

VIDEO_CLOCK_HZ = 90000
AUDIO_CLOCK_HZ = 48000
#: pts step between our video frames (30 fps on the 90 kHz clock); large enough that
#: aiortc's rounding (it reports 2999 for 3000) never makes two frames ambiguous.
VIDEO_PTS_STEP = 3000
#: Frames an outbound track holds before the oldest is replaced (newest wins).
TRACK_QUEUE_FRAMES = 2
#: Audio frames (of AUDIO_FRAME_SAMPLES) an outbound audio track holds: 1 s, so that a
#: sample of up to that length is never cut by its own frames.
AUDIO_QUEUE_FRAMES = 50
#: Samples per audio frame handed to the encoder: 20 ms at 48 kHz, one Opus packet.
AUDIO_FRAME_SAMPLES = 960
#: A route's last samples short of a whole frame go padded with silence once no sample
#: followed for this long: the encoder held them until more came, for ever at the end
#: of a burst (QA: 100 samples of 441 lost their last 900).
AUDIO_TAIL_S = 0.04
#: Video and audio tracks per connection: how many routes of each kind stream at once
#: between two nodes. Each idle track costs a sender task and an RTCP report a second.
TRACKS_PER_KIND = 4
#: A route that sent nothing for this long leaves its track to another route.
ROUTE_IDLE_S = 2.0
#: Inbound tracks a receiver keeps state for (the other side's offer may have more).
MAX_INBOUND_TRACKS = 64
#: Decoded frames kept while their control message is still on its way.
MAX_UNMATCHED_FRAMES = 8
#: Control messages kept while their frame is still on its way.
MAX_PENDING_META = 64
#: Video codecs that name a raw frame, and the pixel format of its array. ``raw`` (what
#: the README's examples use) and no codec at all mean RGB.
RAW_VIDEO_FORMATS = {"": "rgb24", "raw": "rgb24", "rgb24": "rgb24", "bgr24": "bgr24"}
#: The pixel formats a ``media`` control message may name (what our senders put there).
PIXEL_FORMATS = frozenset(RAW_VIDEO_FORMATS.values())


def is_track_sample(frame: StreamFrame, array_meta: bytes) -> str | None:
    """``"video"`` / ``"audio"`` if this media sample goes on a track, else None.

    Only raw arrays go on tracks: video ``uint8`` (h, w, 3) and audio ``int16``.
    """
    if frame.kind != MEDIA or not array_meta:
        return None
    try:
        dtype, shape = decode_array_meta(array_meta)
    except Exception:
        return None
    if frame.media_type == "video":
        raw = frame.codec in RAW_VIDEO_FORMATS
        ok = dtype == np.uint8 and len(shape) == 3 and shape[2] == 3 and raw
        return "video" if ok and shape[0] >= 2 and shape[1] >= 2 else None
    if frame.media_type == "audio":
        ok = dtype == np.int16 and (len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, 2)))
        return "audio" if ok else None
    return None


class OutboundTrack(MediaStreamTrack):
    """A track fed by the gateway: holds at most :data:`TRACK_QUEUE_FRAMES` frames, each
    with the ``media`` control message that describes it, which ``on_taken`` gets when the
    encoder takes the frame (video frames are numbered then: ``meta["i"]`` and ``pts``)."""

    def __init__(self, kind: str, on_taken: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.kind = kind
        self._limit = AUDIO_QUEUE_FRAMES if kind == "audio" else TRACK_QUEUE_FRAMES
        self._frames: deque[tuple[Any, dict[str, Any]]] = deque()
        self._ready = asyncio.Event()
        self._on_taken = on_taken
        self.dropped = 0
        #: Set once a frame went to the encoder (RTCP begins then: gateway/_rtcp.py).
        self.sending = asyncio.Event()
        self.next_index = 0  # video: the number of the next frame the encoder takes

    def push(self, frame: Any, meta: dict[str, Any]) -> None:
        """Queue a frame for the encoder; replaces the oldest when full (never blocks)."""
        if len(self._frames) >= self._limit:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append((frame, meta))
        self._ready.set()

    async def recv(self) -> Any:
        """Called by aiortc's sender: the next frame, waiting for one."""
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.sending.set()
        frame, meta = self._frames.popleft()
        if self.kind == "video":
            frame.pts = self.next_index * VIDEO_PTS_STEP
            meta["i"] = self.next_index
            self.next_index += 1
        self._on_taken(meta)
        return frame

    def stop(self) -> None:
        """End the track; a waiting ``recv`` raises MediaStreamError."""
        super().stop()
        self._ready.set()


@dataclass
class MediaCounters:
    """Per-peer media counters (``stats``)."""

    samples_sent: int = 0
    samples_received: int = 0
    dropped_sender: int = 0  # outbound track full (newest wins) or no connection
    unmatched: int = 0  # decoded frames or control messages that never met their pair
    no_track: int = 0  # samples of a route that found every track of its kind busy
    errors: int = 0


class _TrackSlot:
    """One outbound track, the route it carries, and its clock."""

    __slots__ = (
        "carry",
        "carry_meta",
        "carry_timer",
        "last_sent",
        "mid",
        "next_pts",
        "route",
        "track",
    )

    def __init__(self, track: OutboundTrack) -> None:
        self.track = track
        self.mid: str | None = None  # its transceiver's, once negotiated
        self.route: tuple[str, str, str] | None = None  # (source, target, track id)
        self.last_sent = 0.0
        #: Audio: samples sent, monotonic across routes, as the encoder and RTP need.
        #: (Video frames are numbered by the track, when the encoder takes them.)
        self.next_pts = 0
        #: Audio: stereo samples short of a whole frame, the control message of the
        #: sample they came with, and the timer that sends them padded (AUDIO_TAIL_S).
        self.carry: Any = None
        self.carry_meta: dict[str, Any] = {}
        self.carry_timer: asyncio.TimerHandle | None = None


class MediaSender:
    """Turns local media samples into frames on one peer connection's tracks;
    ``send_meta`` sends a frame's control message (when the encoder takes the frame)."""

    def __init__(
        self,
        counters: MediaCounters,
        send_meta: Callable[[dict[str, Any]], None],
        tracks_per_kind: int = TRACKS_PER_KIND,
    ) -> None:
        self._slots = {
            kind: [_TrackSlot(OutboundTrack(kind, send_meta)) for _ in range(tracks_per_kind)]
            for kind in ("video", "audio")
        }
        self._counters = counters
        self._clock = asyncio.get_running_loop().time

    def tracks(self, kind: str) -> list[OutboundTrack]:
        """The outbound tracks of ``kind``, in the order their transceivers are made."""
        return [slot.track for slot in self._slots[kind]]

    def learn_mids(self, transceivers: list[Any]) -> None:
        """After negotiation: which transceiver (``mid``) carries each of our tracks."""
        mids = {id(t.sender.track): t.mid for t in transceivers if t.sender.track is not None}
        for slots in self._slots.values():
            for slot in slots:
                slot.mid = mids.get(id(slot.track))

    def send(self, frame: StreamFrame, payload: Any, array_meta: bytes, kind: str) -> None:
        """Queue one sample on its route's track (its control message goes out when the
        encoder takes it); a route that finds every track of its kind busy is dropped
        (counted).

        ``payload`` is a buffer with the sample's bytes. Raises ValueError for a sample
        the encoder cannot take.
        """
        route = (str(frame.source) if frame.source else "", str(frame.target or ""), frame.key)
        slot = self._slot_for(kind, route)
        if slot is None:
            self._counters.no_track += 1
            return
        dtype, shape = decode_array_meta(array_meta)
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        meta: dict[str, Any] = {
            "op": "media",
            "k": kind,
            "mid": slot.mid,
            "src": route[0],
            "dst": route[1],
            "track": frame.key,
            "ts": int(frame.timestamp),
        }
        if kind == "video":
            pixels = RAW_VIDEO_FORMATS[frame.codec]
            av_frame: Any = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=pixels)
            av_frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)  # pts: OutboundTrack
            meta["codec"] = frame.codec or "rgb24"  # the receiver sees the codec it was sent
            meta["pixels"] = pixels
            frames = [av_frame]
        else:
            meta["channels"] = 1 if array.ndim == 1 else int(array.shape[1])
            meta["ndim"] = array.ndim  # (n,) arrives as (n,), not (n, 1)
            meta["codec"] = frame.codec or "pcm_s16"
            frames = self._audio_frames(slot, _stereo(array), meta)
        self._push(slot, frames, meta)
        self._counters.samples_sent += 1

    def _push(self, slot: _TrackSlot, frames: list[Any], meta: dict[str, Any]) -> None:
        track = slot.track
        before = track.dropped
        for av_frame in frames:
            track.push(av_frame, dict(meta))
        self._counters.dropped_sender += track.dropped - before

    def _audio_frames(self, slot: _TrackSlot, stereo: Any, meta: dict[str, Any]) -> list[Any]:
        """Whole frames of what the slot carried and ``stereo``; the rest is carried
        until the next sample, or sent padded after AUDIO_TAIL_S. (Frames of another
        length the encoder regrouped itself, and held the last part of a burst.)"""
        if slot.carry_timer is not None:
            slot.carry_timer.cancel()
            slot.carry_timer = None
        if slot.carry is not None and slot.carry_meta.get("channels") != meta["channels"]:
            # A frame is of one layout: the receiver shapes it by one control message
            # (mono then stereo in one frame arrived in the wrong shape, QA).
            self._send_tail(slot)
        if slot.carry is not None:
            stereo = np.concatenate([slot.carry, stereo])
            slot.carry = None
        whole = len(stereo) - len(stereo) % AUDIO_FRAME_SAMPLES
        frames = [
            _audio_frame(stereo[start : start + AUDIO_FRAME_SAMPLES], slot)
            for start in range(0, whole, AUDIO_FRAME_SAMPLES)
        ]
        if whole < len(stereo):
            # A copy: the sample may be a view of a ring record, released once sent.
            slot.carry, slot.carry_meta = stereo[whole:].copy(), meta
            loop = asyncio.get_running_loop()
            slot.carry_timer = loop.call_later(AUDIO_TAIL_S, self._send_tail, slot)
        return frames

    def _send_tail(self, slot: _TrackSlot) -> None:
        slot.carry_timer = None
        if slot.carry is None:
            return
        silence = np.zeros((AUDIO_FRAME_SAMPLES - len(slot.carry), 2), dtype=np.int16)
        padded = np.concatenate([slot.carry, silence])
        slot.carry = None
        self._push(slot, [_audio_frame(padded, slot)], slot.carry_meta)

    def _slot_for(self, kind: str, route: tuple[str, str, str]) -> _TrackSlot | None:
        """The track that carries ``route``: its own, else one that is free or idle."""
        now = self._clock()
        free = None
        for slot in self._slots[kind]:
            if slot.route == route:
                slot.last_sent = now
                return slot
            idle = slot.route is None or now - slot.last_sent > ROUTE_IDLE_S
            if free is None and slot.mid is not None and idle:
                free = slot
        if free is not None:
            free.route = route
            free.last_sent = now
        return free

    def stop(self) -> None:
        """End every track."""
        for slots in self._slots.values():
            for slot in slots:
                if slot.carry_timer is not None:
                    slot.carry_timer.cancel()
                slot.track.stop()


def _stereo(array: Any) -> Any:
    """int16 ``array`` ((n,), (n, 1) or (n, 2)) as (n, 2).

    Mono goes as stereo, each sample twice (the receiver keeps one channel: the route's
    ``channels``): aiortc's Opus encoder sets its resampler up from the first frame and
    fails on a frame of another layout, which ends the track's sender for good. A track
    that carried mono, then stereo (the same route, or the next route given the track),
    carried nothing more, uncounted (QA). Opus encodes stereo anyway.
    """
    if array.ndim == 1 or array.shape[1] == 1:
        return np.repeat(array.reshape(-1, 1), 2, axis=1)
    return array


def _audio_frame(array: Any, slot: _TrackSlot) -> Any:
    """An ``av`` stereo audio frame of int16 ``array`` (n, 2), next on its track."""
    samples = int(array.shape[0])
    interleaved = np.ascontiguousarray(array).reshape(1, samples * 2)
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    frame.sample_rate = AUDIO_CLOCK_HZ
    frame.pts = slot.next_pts
    frame.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
    slot.next_pts += samples
    return frame


Deliver = Callable[[StreamFrame], None]
ParseId = Callable[[str], Any]


class _TrackState:
    """What the receiver knows of one inbound track (one transceiver's)."""

    def __init__(self) -> None:
        self.video_meta: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.video_frames: deque[tuple[int, Any]] = deque()
        self.first_index: int | None = None
        self.audio_route: dict[str, Any] | None = None  # its latest sample's control message
        self.audio_first_ts = 0  # the timestamp of the route's first sample
        self.audio_base_pts: int | None = None


class MediaReceiver:
    """Decoded frames from one peer connection's tracks, matched with their routes."""

    def __init__(self, deliver: Deliver, parse_id: ParseId, counters: MediaCounters) -> None:
        self._deliver = deliver
        self._parse_id = parse_id
        self._counters = counters
        # By the transceiver's mid: its control messages and decoded frames meet there.
        self._tracks: dict[str | None, _TrackState] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _state(self, mid: Any) -> _TrackState:
        state = self._tracks.get(mid)
        if state is None:
            if len(self._tracks) >= MAX_INBOUND_TRACKS:
                raise ValueError(f"too many media tracks (mid {mid!r})")
            state = self._tracks[mid] = _TrackState()
        return state

    # -- control messages --------------------------------------------------------------

    def on_meta(self, meta: dict[str, Any]) -> None:
        """A ``media`` control message arrived (before or after its frame)."""
        mid, ts = meta.get("mid"), meta.get("ts", 0)
        if (mid is not None and not isinstance(mid, str)) or not _is_timestamp(ts):
            self._counters.errors += 1
            return
        try:
            state = self._state(mid)
        except ValueError:
            self._counters.errors += 1
            return
        if meta.get("k") == "audio":
            old = state.audio_route
            if old is None or _route(old) != _route(meta):
                state.audio_base_pts = None
                state.audio_first_ts = ts
            state.audio_route = meta
            return
        index = meta.get("i")
        if not isinstance(index, int) or meta.get("pixels", "rgb24") not in PIXEL_FORMATS:
            self._counters.errors += 1
            return
        state.video_meta[index] = meta
        while len(state.video_meta) > MAX_PENDING_META:
            state.video_meta.popitem(last=False)
            self._counters.unmatched += 1
        self._match_video(state)

    # -- tracks ------------------------------------------------------------------------

    def add_track(self, track: MediaStreamTrack, mid: str | None) -> None:
        """Start pumping a remote track (aiortc's ``track`` event) of transceiver ``mid``."""
        task = asyncio.ensure_future(self._pump(track, self._state(mid)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, track: MediaStreamTrack, state: _TrackState) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                if track.kind == "video":
                    self._on_video(state, frame)
                else:
                    self._on_audio(state, frame)
            except Exception:
                self._counters.errors += 1
                log.exception("media: a decoded %s frame could not be delivered", track.kind)

    def _on_video(self, state: _TrackState, frame: Any) -> None:
        position = round(frame.pts / VIDEO_PTS_STEP)
        if state.first_index is None:
            # The first decoded frame is (almost always) the first one sent on this
            # track: the oldest index we hold a control message for, else the next.
            state.first_index = min(state.video_meta) if state.video_meta else 0
        state.video_frames.append((state.first_index + position, frame))
        while len(state.video_frames) > MAX_UNMATCHED_FRAMES:
            state.video_frames.popleft()
            self._counters.unmatched += 1
        self._match_video(state)

    def _match_video(self, state: _TrackState) -> None:
        frames, metas = state.video_frames, state.video_meta
        while frames:
            index, frame = frames[0]
            meta = metas.pop(index, None)
            if meta is None:
                if metas and min(metas) > index:
                    # Its control message was evicted or never came: it never will.
                    frames.popleft()
                    self._counters.unmatched += 1
                    continue
                return
            frames.popleft()
            # Control messages older than this frame belong to frames that were lost.
            for old in [i for i in metas if i < index]:
                del metas[old]
                self._counters.unmatched += 1
            array = frame.to_ndarray(format=meta.get("pixels") or "rgb24")
            self._emit(meta, array, int(meta.get("ts", 0)), "video")

    def _on_audio(self, state: _TrackState, frame: Any) -> None:
        route = state.audio_route
        if route is None:
            self._counters.unmatched += 1
            return
        if state.audio_base_pts is None:
            state.audio_base_pts = int(frame.pts or 0)
        pcm = frame.to_ndarray()  # (1, samples * channels), s16 interleaved
        layout_channels = len(frame.layout.channels)
        array = pcm.reshape(-1, layout_channels)
        if route.get("channels") == 1 and layout_channels > 1:
            array = np.ascontiguousarray(array[:, :1])
        if route.get("ndim") == 1:
            array = array.reshape(-1)
        offset = int(frame.pts or 0) - state.audio_base_pts
        # Opus decodes at 48 kHz: offsets on the caller's clock, assumed to be 48 kHz too,
        # from the route's first sample (the latest control message's timestamp counted
        # every offset twice: 20 ms samples 1,920 apart, QA).
        self._emit(route, array, state.audio_first_ts + offset, "audio")

    def _emit(self, meta: dict[str, Any], array: Any, timestamp: int, media_type: str) -> None:
        try:
            source = self._parse_id(meta["src"]) if meta.get("src") else None
            target = self._parse_id(meta["dst"])
        except Exception:
            self._counters.errors += 1
            return
        array = np.ascontiguousarray(array)
        sample = StreamFrame(
            MEDIA,
            str(meta.get("track", "")),
            source=source,
            target=target,
            payload_type=PayloadType.MEDIA_RTP,
            timestamp=timestamp & 0xFFFFFFFF,
            payload=array.tobytes(),
            array_meta=encode_array_meta(array.dtype, array.shape),
            codec=str(meta.get("codec", "")),
            media_type=media_type,
        )
        self._counters.samples_received += 1
        self._deliver(sample)

    def stop(self) -> None:
        """Stop pumping (the connection is closing)."""
        for task in list(self._tasks):
            task.cancel()


def _route(meta: dict[str, Any]) -> tuple[Any, Any, Any]:
    return meta.get("src"), meta.get("dst"), meta.get("track")


def _is_timestamp(value: Any) -> bool:
    """A sample's timestamp as a peer may send it: an integer a frame's field can hold."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63
