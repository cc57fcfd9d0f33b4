"""Media samples between nodes on aiortc media tracks (the MEDIA_RTP lane, DESIGN §3).

Each peer connection carries one video and one audio transceiver in both directions
(negotiated with the connection, so no renegotiation is ever needed). Every media
sample a local actor sends to a remote actor becomes an ``av`` frame on the matching
outbound track: aiortc encodes it (VP8 / Opus), paces nothing, and drops nothing itself;
our track keeps at most :data:`TRACK_QUEUE_FRAMES` frames and replaces the oldest
(newest wins, counted), which is the lane's "real-time, drops under pressure".

RTP carries no routing: who sent the sample to whom, on which ``track_id``, with which
timestamp travels beside it as a small ``media`` control message on the signal data
channel. Video frames are matched to their control message by position: we stamp frame
*i* with ``pts = i * VIDEO_PTS_STEP``, and aiortc's receiver reports ``pts`` relative to
the first frame it decoded (its ``TimestampMapper``), so frame *i* arrives as
``(i - i0) * VIDEO_PTS_STEP`` where *i0* is the first index seen. If that very first
frame is lost on the wire, later frames are attributed one position off (same route,
neighbouring timestamp) — acceptable for a real-time lane, and rare on a working link.

Audio is resampled and re-framed by aiortc (20 ms Opus frames), so samples are not one to
one: decoded audio goes to the route of the latest audio control message, timestamped
from its first sample on a 48 kHz clock.

Payloads: a video sample is a ``uint8`` array of shape (height, width, 3) (codec
``rgb24``, the default, ``raw`` (the same) or ``bgr24``); it arrives as the same kind
of array after a lossy VP8 round trip. An audio sample is ``int16`` PCM at 48 kHz,
shape (n,) mono or (n, 2) stereo; it arrives as (n, channels) ``int16``. Any other media
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
#: Decoded frames kept while their control message is still on its way.
MAX_UNMATCHED_FRAMES = 8
#: Control messages kept while their frame is still on its way.
MAX_PENDING_META = 64
#: Video codecs that name a raw frame, and the pixel format of its array. ``raw`` (what
#: the README's examples use) and no codec at all mean RGB.
RAW_VIDEO_FORMATS = {"": "rgb24", "raw": "rgb24", "rgb24": "rgb24", "bgr24": "bgr24"}


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
    """A track fed by the gateway: holds at most :data:`TRACK_QUEUE_FRAMES` frames."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frames: deque[Any] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def push(self, frame: Any) -> None:
        """Queue a frame for the encoder; replaces the oldest when full (never blocks)."""
        if len(self._frames) >= TRACK_QUEUE_FRAMES:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self._ready.set()

    async def recv(self) -> Any:
        """Called by aiortc's sender: the next frame, waiting for one."""
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

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
    errors: int = 0


class MediaSender:
    """Turns local media samples into frames on one peer connection's tracks."""

    def __init__(self, counters: MediaCounters) -> None:
        self.video = OutboundTrack("video")
        self.audio = OutboundTrack("audio")
        self._counters = counters
        self._video_index = 0
        self._audio_samples = 0

    def send(
        self, frame: StreamFrame, payload: Any, array_meta: bytes, kind: str
    ) -> dict[str, Any]:
        """Queue one sample; return the control message that describes it.

        ``payload`` is a buffer with the sample's bytes. Raises ValueError for a sample
        the encoder cannot take.
        """
        dtype, shape = decode_array_meta(array_meta)
        array = np.frombuffer(payload, dtype=dtype).reshape(shape)
        meta: dict[str, Any] = {
            "op": "media",
            "k": kind,
            "src": str(frame.source) if frame.source else "",
            "dst": str(frame.target) if frame.target else "",
            "track": frame.key,
            "ts": int(frame.timestamp),
        }
        if kind == "video":
            pixels = RAW_VIDEO_FORMATS[frame.codec]
            av_frame: Any = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=pixels)
            av_frame.pts = self._video_index * VIDEO_PTS_STEP
            av_frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
            meta["i"] = self._video_index
            meta["codec"] = frame.codec or "rgb24"  # the receiver sees the codec it was sent
            meta["pixels"] = pixels
            self._video_index += 1
            track = self.video
        else:
            channels = 1 if array.ndim == 1 else int(array.shape[1])
            samples = int(array.shape[0])
            interleaved = np.ascontiguousarray(array).reshape(1, samples * channels)
            av_frame = av.AudioFrame.from_ndarray(
                interleaved, format="s16", layout="mono" if channels == 1 else "stereo"
            )
            av_frame.sample_rate = AUDIO_CLOCK_HZ
            av_frame.pts = self._audio_samples
            av_frame.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
            self._audio_samples += samples
            meta["channels"] = channels
            meta["codec"] = frame.codec or "pcm_s16"
            track = self.audio
        before = track.dropped
        track.push(av_frame)
        self._counters.dropped_sender += track.dropped - before
        self._counters.samples_sent += 1
        return meta

    def stop(self) -> None:
        """End both tracks."""
        self.video.stop()
        self.audio.stop()


Deliver = Callable[[StreamFrame], None]
ParseId = Callable[[str], Any]


class MediaReceiver:
    """Decoded frames from one peer connection's tracks, matched with their routes."""

    def __init__(self, deliver: Deliver, parse_id: ParseId, counters: MediaCounters) -> None:
        self._deliver = deliver
        self._parse_id = parse_id
        self._counters = counters
        self._video_meta: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._video_frames: deque[tuple[int, Any]] = deque()
        self._first_index: int | None = None
        self._audio_route: dict[str, Any] | None = None
        self._audio_base_pts: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control messages --------------------------------------------------------------

    def on_meta(self, meta: dict[str, Any]) -> None:
        """A ``media`` control message arrived (before or after its frame)."""
        if meta.get("k") == "audio":
            if self._audio_route is None or self._audio_route.get("track") != meta.get("track"):
                self._audio_base_pts = None
            self._audio_route = meta
            return
        index = meta.get("i")
        if not isinstance(index, int):
            self._counters.errors += 1
            return
        self._video_meta[index] = meta
        while len(self._video_meta) > MAX_PENDING_META:
            self._video_meta.popitem(last=False)
            self._counters.unmatched += 1
        self._match_video()

    # -- tracks ------------------------------------------------------------------------

    def add_track(self, track: MediaStreamTrack) -> None:
        """Start pumping a remote track (aiortc's ``track`` event)."""
        task = asyncio.ensure_future(self._pump(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                if track.kind == "video":
                    self._on_video(frame)
                else:
                    self._on_audio(frame)
            except Exception:
                self._counters.errors += 1
                log.exception("media: a decoded %s frame could not be delivered", track.kind)

    def _on_video(self, frame: Any) -> None:
        position = round(frame.pts / VIDEO_PTS_STEP)
        if self._first_index is None:
            # The first decoded frame is (almost always) the first one sent on this
            # connection: the oldest index we hold a control message for, else the next.
            self._first_index = min(self._video_meta) if self._video_meta else 0
        self._video_frames.append((self._first_index + position, frame))
        while len(self._video_frames) > MAX_UNMATCHED_FRAMES:
            self._video_frames.popleft()
            self._counters.unmatched += 1
        self._match_video()

    def _match_video(self) -> None:
        while self._video_frames:
            index, frame = self._video_frames[0]
            meta = self._video_meta.pop(index, None)
            if meta is None:
                if self._video_meta and min(self._video_meta) > index:
                    # Its control message was evicted or never came: it never will.
                    self._video_frames.popleft()
                    self._counters.unmatched += 1
                    continue
                return
            self._video_frames.popleft()
            # Control messages older than this frame belong to frames that were lost.
            for old in [i for i in self._video_meta if i < index]:
                del self._video_meta[old]
                self._counters.unmatched += 1
            array = frame.to_ndarray(format=meta.get("pixels") or "rgb24")
            self._emit(meta, array, int(meta.get("ts", 0)), "video")

    def _on_audio(self, frame: Any) -> None:
        route = self._audio_route
        if route is None:
            self._counters.unmatched += 1
            return
        if self._audio_base_pts is None:
            self._audio_base_pts = int(frame.pts or 0)
        pcm = frame.to_ndarray()  # (1, samples * channels), s16 interleaved
        layout_channels = len(frame.layout.channels)
        array = pcm.reshape(-1, layout_channels)
        if route.get("channels") == 1 and layout_channels > 1:
            array = np.ascontiguousarray(array[:, :1])
        offset = int(frame.pts or 0) - self._audio_base_pts
        # Opus decodes at 48 kHz: offsets on the caller's clock, assumed to be 48 kHz too.
        self._emit(route, array, int(route.get("ts", 0)) + offset, "audio")

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
