"""Video after a lost packet: the gateway's jitter buffer (gateway/_jitter.py) against
aiortc's, fed real VP8 packets from aiortc's own encoder and packetizer."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver, TimestampMapper
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

from actrhost._envelope import MEDIA, StreamFrame
from actrhost._payload_type import PayloadType
from actrhost.gateway._jitter import (
    AUDIO_GAP_WAIT_S,
    GAP_WAIT_S,
    AudioJitterBuffer,
    VideoJitterBuffer,
    _DecodeAll,
)
from actrhost.shm import decode_array_meta, encode_array_meta

from .test_gateway_peer import Side, connected_pair
from .utils import run

pytest.importorskip("aiortc")

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
FRAME_S = 1 / 30


class Link:
    """A camera (aiortc's VP8 encoder and packetizer) sending to a receiver (a jitter
    buffer and aiortc's decoder, as the gateway installs them for its buffer), frame by
    frame on a clock the test moves."""

    def __init__(self, buffer: JitterBuffer, clock: list[float], noise: bool = False) -> None:
        self.encoder = get_encoder(VP8)
        decoder = get_decoder(VP8)
        self.decoder = _DecodeAll(decoder) if isinstance(buffer, VideoJitterBuffer) else decoder
        self.mapper = TimestampMapper()
        self.buffer = buffer
        self.clock = clock
        self.noise = noise
        self.rng = np.random.default_rng(1)
        self.sequence = 65000  # wraps around during the test
        self.sent = 0
        self.keyframe_asked = 0
        self.decoded: list[int] = []  # the frame number of each picture decoded
        self.keyframes: list[int] = []  # the frame number of each keyframe asked for
        self.errors = 0
        self._keyframe_next = False

    def ask_keyframe(self, ssrc: int = 1) -> None:
        """The sender's answer to a PLI: its next frame is a keyframe."""
        self.keyframe_asked += 1
        self._keyframe_next = True

    def frame_packets(self) -> list[RtpPacket]:
        """The packets of the camera's next frame (a keyframe if one was asked for)."""
        if self.noise:
            image = self.rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        else:
            image = np.full((48, 64, 3), 0, np.uint8)
            image[:, self.sent % 64] = 255  # a bar that moves
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self.sent * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, timestamp = self.encoder.encode(frame, force_keyframe=self._keyframe_next)
        if self._keyframe_next:
            self.keyframes.append(self.sent)
        self._keyframe_next = False
        self.sent += 1
        packets = []
        for n, payload in enumerate(payloads):
            packet = RtpPacket(96, n == len(payloads) - 1, self.sequence, timestamp, 1, payload)
            self.sequence = (self.sequence + 1) % 65536
            packets.append(packet)
        return packets

    def receive(self, packet: RtpPacket) -> None:
        """What aiortc's RTP receiver does with a packet (depayload, buffer, decode)."""
        packet._data = depayload(VP8, packet.payload)  # type: ignore[attr-defined]
        keyframe_wanted, frame = self.buffer.add(packet)
        if keyframe_wanted:
            self.ask_keyframe()
        if frame is not None:
            frame.timestamp = self.mapper.map(frame.timestamp)
            try:
                pictures = self.decoder.decode(frame)
            except av.error.FFmpegError:
                self.errors += 1  # aiortc's decoder thread asks for a keyframe then
                self.ask_keyframe()
                return
            self.decoded += [round(picture.pts / 3000) for picture in pictures]

    def run(self, frames: int, lose: int | None = None, resend_after: int | None = None) -> None:
        """Send ``frames`` frames at 30 fps; the first packet of frame ``lose`` is lost
        (with its retransmission, unless ``resend_after`` frames later it gets through)."""
        lost: RtpPacket | None = None
        start = self.sent
        for _ in range(frames):
            number = self.sent
            packets = self.frame_packets()
            if number == lose:
                lost, packets = packets[0], packets[1:]
            for packet in packets:
                self.receive(packet)
            if lost is not None and resend_after is not None and number == lose + resend_after:
                self.receive(lost)
            self.clock[0] += FRAME_S
        assert self.sent == start + frames


def test_aiortcs_buffer_holds_video_back_for_512_packets_after_a_lost_one():
    # What the gateway replaces: one-packet frames, one loss, and the picture stops.
    clock = [0.0]
    link = Link(JitterBuffer(capacity=512, is_video=True), clock)
    link.run(60)
    assert link.decoded[-1] == 58  # a frame completes when the next one starts
    link.run(300, lose=60)
    assert link.decoded[-1] == 58  # ten seconds later: nothing more
    link.run(300)
    # After 512 packets it skips the gap, then lets one frame out per packet: the track
    # stays about 510 frames (17 s) behind for good.
    assert 660 - 520 < link.decoded[-1] < 660 - 500


@pytest.mark.parametrize("noise", [False, True], ids=["one packet per frame", "many packets"])
def test_a_lost_packet_holds_the_video_back_for_half_a_second_then_it_resumes(noise):
    clock = [0.0]
    buffer = VideoJitterBuffer(capacity=512, is_video=True, clock=lambda: clock[0])
    link = Link(buffer, clock, noise)
    link.run(60)
    assert link.decoded[-1] == 59 and link.errors == 0  # whole at its last packet
    link.run(90, lose=60)
    assert buffer.gaps_dropped == 1 and link.keyframe_asked >= 1
    # Resumed after the wait, at the keyframe the sender made for it, without a backlog.
    resumed = [n for n in link.decoded if n > 60]
    assert resumed, link.decoded[-5:]
    assert resumed[0] <= 60 + GAP_WAIT_S / FRAME_S + 3
    assert link.decoded[-1] == 149
    assert link.decoded == sorted(link.decoded)


def test_a_gap_filled_by_its_retransmission_in_time_loses_nothing():
    clock = [0.0]
    buffer = VideoJitterBuffer(capacity=512, is_video=True, clock=lambda: clock[0])
    link = Link(buffer, clock)
    link.run(120, lose=60, resend_after=5)  # 5 frames later: ~170 ms, below the wait
    assert link.decoded == list(range(120))
    assert buffer.gaps_dropped == 0 and link.keyframe_asked == 0 and link.errors == 0


def test_a_video_frame_is_whole_at_its_last_packet():
    # aiortc's buffer lets a frame out when the next one starts: the last picture of a
    # burst came only with the next burst (for ever, if none came), every picture a frame
    # late. A sender that marks no frame's end is still served that way.
    for noise in (False, True):
        clock = [0.0]
        theirs = Link(JitterBuffer(capacity=512, is_video=True), clock, noise)
        ours = Link(VideoJitterBuffer(capacity=512, is_video=True), clock, noise)
        for link in (theirs, ours):
            link.run(5)
        assert theirs.decoded == [0, 1, 2, 3] and ours.decoded == [0, 1, 2, 3, 4]
    buffer = VideoJitterBuffer(capacity=512, is_video=True)
    for n in range(3):
        packet = RtpPacket(96, 0, n, 3000 * n, 1, b"x")  # no marker
        packet._data = b"x"  # type: ignore[attr-defined]
        _keyframe, frame = buffer.add(packet)
        assert (frame and frame.timestamp) == (3000 * (n - 1) if n else None)


def test_at_one_frame_a_second_a_loss_costs_two_frames_not_minutes():
    clock = [0.0]
    buffer = VideoJitterBuffer(capacity=512, is_video=True, clock=lambda: clock[0])
    link = Link(buffer, clock)
    for number in range(20):
        link.run(1, lose=10 if number == 10 else None)
        clock[0] += 1 - FRAME_S
    # Frame 10 is lost; 11 waits a second behind the gap, is dropped with it, and the
    # keyframe asked for then (12) and all after it come through.
    assert [n for n in link.decoded if n >= 10] == list(range(12, 20))
    assert buffer.gaps_dropped == 1


def test_video_behind_a_gap_at_the_end_of_a_burst_is_dropped_on_a_timer():
    # aiortc's receiver moves its buffer only when a packet comes: a gap at the end of a
    # burst held the frames behind it, and the keyframe request, until the next frame,
    # which then came as a frame that needs the ones dropped. With a place to ask, the
    # buffer drops them after the wait and asks in time for that frame to be a keyframe.
    async def scenario() -> None:
        buffer = VideoJitterBuffer(capacity=512, is_video=True)
        link = Link(buffer, [0.0])
        asked: list[int] = []
        buffer.ask_keyframe = lambda ssrc: (asked.append(ssrc), link.ask_keyframe(ssrc))
        link.run(12, lose=10)  # 10 is lost, retransmission too; 11 waits behind it
        assert link.decoded == list(range(10))
        started = time.monotonic()
        async with asyncio.timeout(5):
            while not asked:
                await asyncio.sleep(0.005)
        assert time.monotonic() - started >= GAP_WAIT_S * 0.9
        assert asked == [1] and buffer.gaps_dropped == 1
        link.run(1)
        assert link.decoded[10:] == [12] and link.keyframes == [12] and link.errors == 0
        # Frames that keep coming, with a gap that its retransmission fills in time, and a
        # frame that waits for its last packet a while: nothing set off.
        link.run(20, lose=20, resend_after=3)
        link.noise = True  # a picture of several packets
        packets = link.frame_packets()
        assert len(packets) > 1
        for packet in packets[:-1]:
            link.receive(packet)
        await asyncio.sleep(GAP_WAIT_S / 2)
        link.receive(packets[-1])
        await asyncio.sleep(GAP_WAIT_S)
        assert link.decoded[10:] == list(range(12, 34)) and asked == [1]
        assert buffer.gaps_dropped == 1

    run(scenario(), 10)


def test_the_timer_waits_from_the_last_drop_too():
    # The timer counted from the last frame let out: when a packet ended a gap's wait
    # (dropping it), the frame that packet began was dropped by the timer at once, and
    # a second keyframe asked for.
    async def scenario() -> None:
        clock = [0.0]
        buffer = VideoJitterBuffer(capacity=512, is_video=True, clock=lambda: clock[0])
        link = Link(buffer, clock, noise=True)  # pictures of several packets
        asked: list[int] = []
        buffer.ask_keyframe = asked.append
        link.run(12, lose=10)  # 10 loses its first packet; 11 waits behind it
        assert max(link.decoded) == 9
        clock[0] += GAP_WAIT_S  # no retransmission came
        packets = link.frame_packets()
        link.receive(packets[0])  # drops the gap, asks for a keyframe, starts picture 12
        assert buffer.gaps_dropped == 1 and link.keyframe_asked == 1
        await asyncio.sleep(GAP_WAIT_S * 1.5)  # the timer set for 11 comes and goes
        for packet in packets[1:]:
            link.receive(packet)
        assert asked == [] and buffer.gaps_dropped == 1
        assert link.decoded[-1] == 12  # (encoded before the keyframe was asked for)

    run(scenario(), 10)


OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


class Microphone:
    """aiortc's Opus encoder: 20 ms frames of a tone, as RTP packets numbered on."""

    def __init__(self) -> None:
        self.encoder = get_encoder(OPUS)
        self.sequence = 65530  # wraps around during the tests
        self.sent = 0

    def packets(self, count: int) -> list[RtpPacket]:
        out = []
        for _ in range(count):
            samples = (np.sin(np.arange(960) / 10 + self.sent) * 8000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, 960 * self.sent
            frame.time_base = fractions.Fraction(1, 48000)
            (payload,), timestamp = self.encoder.encode(frame)
            packet = RtpPacket(OPUS.payloadType, 0, self.sequence, timestamp, 1, payload)
            packet._data = depayload(OPUS, payload)  # type: ignore[attr-defined]
            out.append(packet)
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.sent += 1
        return out


def let_out(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[int]:
    """The RTP timestamps of the frames ``buffer`` lets out for ``packets``, each decoded
    to 20 ms of samples by aiortc's Opus decoder as the gateway installs it."""
    decoder = _DecodeAll(get_decoder(OPUS))
    out = []
    for packet in packets:
        _keyframe, frame = buffer.add(packet)
        if frame is not None:
            stamps = [frame.timestamp, *(f.timestamp for f in getattr(frame, "later", []))]
            samples = [decoded.samples for decoded in decoder.decode(frame)]
            assert samples == [960] * len(stamps)
            out += stamps
    return out


def test_an_audio_frame_is_let_out_as_soon_as_it_comes():
    # aiortc's buffer (prefetch 4) holds the last four frames of a burst (80 ms) until
    # more come, for ever if none do; ours lets each out with its packet.
    mic = Microphone()
    burst = mic.packets(10)
    assert let_out(JitterBuffer(capacity=16, prefetch=4), burst) == [p.timestamp for p in burst[:6]]
    assert let_out(AudioJitterBuffer(16), burst) == [p.timestamp for p in burst]


def test_a_reordered_audio_packet_waits_and_a_lost_one_is_skipped():
    clock = [0.0]
    buffer = AudioJitterBuffer(16, clock=lambda: clock[0])
    p = Microphone().packets(12)
    stamps = [packet.timestamp for packet in p]
    # 2 overtakes 1: both go when 1 comes, in order.
    assert let_out(buffer, [p[0], p[2]]) == stamps[:1]
    assert let_out(buffer, [p[1]]) == stamps[1:3]
    # 4 is lost: 5 and 6 wait for it AUDIO_GAP_WAIT_S, then go without it.
    assert let_out(buffer, [p[3], p[5], p[6]]) == stamps[3:4]
    clock[0] += AUDIO_GAP_WAIT_S
    assert let_out(buffer, [p[7]]) == stamps[5:8]
    # 4 comes after all: too late, dropped; so is a duplicate.
    assert let_out(buffer, [p[4], p[7], p[8]]) == stamps[8:9]
    assert buffer.gaps_dropped == 1


def test_audio_behind_a_packet_lost_at_the_end_of_a_burst_goes_on_a_timer():
    # aiortc's receiver moves its buffer only when a packet comes: the frames behind a
    # packet lost at the end of a burst waited for the track's next packet, for ever if
    # none came. With a place to release them, the buffer lets them out after the wait.
    async def scenario() -> None:
        buffer = AudioJitterBuffer(16)
        released: list[tuple[list[int], int]] = []
        buffer.release_late = lambda frame, payload_type: released.append(
            ([frame.timestamp, *(f.timestamp for f in getattr(frame, "later", []))], payload_type)
        )
        p = Microphone().packets(10)
        stamps = [packet.timestamp for packet in p]
        assert let_out(buffer, p[:7]) == stamps[:7]
        # 7 is lost; 8 overtaken by 9 waits too. Nothing more comes.
        assert let_out(buffer, [p[9], p[8]]) == []
        started = time.monotonic()
        async with asyncio.timeout(5):
            while not released:
                await asyncio.sleep(0.005)
        assert time.monotonic() - started >= AUDIO_GAP_WAIT_S * 0.9
        assert released == [(stamps[8:10], OPUS.payloadType)]
        assert buffer.gaps_dropped == 1
        # A gap that its packet fills in time sets nothing off.
        q = Microphone().packets(3)
        buffer = AudioJitterBuffer(16)
        buffer.release_late = lambda frame, payload_type: released.append(([], payload_type))
        assert let_out(buffer, [q[0], q[2], q[1]]) == [packet.timestamp for packet in q]
        await asyncio.sleep(AUDIO_GAP_WAIT_S * 2)
        assert len(released) == 1 and buffer.gaps_dropped == 0

    run(scenario(), 10)


# -- two real connections in one process (tests/test_gateway_peer.py) ----------------------


def media_frame(track: str, kind: str, timestamp: int, array: np.ndarray) -> StreamFrame:
    """A raw media sample of ``kind`` on ``track``, as a worker hands it to the gateway."""
    return StreamFrame(
        MEDIA,
        track,
        source="src",
        target="dst",
        payload_type=PayloadType.MEDIA_RTP,
        timestamp=timestamp,
        payload=array.tobytes(),
        array_meta=encode_array_meta(array.dtype, array.shape),
        codec="raw",
        media_type=kind,
    )


def bar_frame(n: int) -> StreamFrame:
    """Video sample ``n`` (timestamp 3000 n): a 64 by 48 picture, a bar at x = 4n mod 64."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, (4 * n) % 64 : (4 * n) % 64 + 4] = 255
    return media_frame("cam", "video", n * 3000, image)


def send_bar(side: Side, n: int) -> None:
    frame = bar_frame(n)
    assert side.pc.send_media(frame, frame.payload, frame.array_meta, "video")


async def film(side: Side, count: int) -> None:
    """Send video samples 0 to ``count`` - 1 from ``side`` at 30 per second."""
    for n in range(count):
        send_bar(side, n)
        await asyncio.sleep(FRAME_S)


def bar_position(sample: StreamFrame) -> int:
    """Which sample ``n`` a delivered picture shows (the bar survives VP8)."""
    dtype, shape = decode_array_meta(sample.array_meta)
    image = np.frombuffer(sample.payload, dtype=dtype).reshape(shape)
    return int(np.argmax(image.mean(axis=(0, 2)))) // 4


def lose_packets(monkeypatch: pytest.MonkeyPatch, lost: Callable[[Any, RtpPacket], bool]) -> None:
    """aiortc's RTP receivers drop each packet for which ``lost(receiver, packet)``, as if
    it never came."""
    original = RTCRtpReceiver._handle_rtp_packet

    async def lossy(self: Any, packet: RtpPacket, arrival_time_ms: int) -> None:
        if not lost(self, packet):
            await original(self, packet, arrival_time_ms)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", lossy)


async def wait_media(side: Side, count: int, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while len(side.media) < count:
            await asyncio.sleep(0.02)


@pytest.mark.usefixtures("gateway_process_setup")
def test_each_picture_keeps_its_timestamp_when_the_first_frames_were_replaced() -> None:
    # Three samples in one loop turn: the track's queue (2) replaces the first before the
    # encoder takes any. Frames used to be numbered when queued, and the receiver counts
    # from the first it decodes: every picture then came one frame off (QA).
    async def scenario() -> None:
        async with connected_pair() as (a, b):
            for n in range(3):
                send_bar(a, n)
            for n in range(3, 45):
                await asyncio.sleep(FRAME_S)
                send_bar(a, n)
            await wait_media(b, 30)
            assert a.pc.counters.media.dropped_sender >= 1
            got = [(s.timestamp // 3000, bar_position(s)) for s in b.media]
            assert all(n % 16 == position for n, position in got), got

    run(scenario(), 30)


@pytest.mark.usefixtures("gateway_process_setup")
def test_a_lost_video_packet_is_repaired_by_its_retransmission(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The 20th packet of the camera's stream is lost on its first way; the NACK's
    # retransmission (RTX) must reach the track: aiortc dropped it (two and more video
    # transceivers share its payload type), and a 0.5 s hole followed every loss (QA).
    seen: dict[int, int] = {}
    lost: list[int] = []

    def twentieth(receiver: Any, packet: RtpPacket) -> bool:
        first_ssrc = next(iter(seen), packet.ssrc)
        seen[packet.ssrc] = seen.get(packet.ssrc, 0) + 1
        if packet.ssrc == first_ssrc and seen[packet.ssrc] == 20 and not lost:
            lost.append(packet.sequence_number)
            return True
        return False

    lose_packets(monkeypatch, twentieth)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            await film(a, 60)
            # A starved encoder thread (a loaded machine) makes the sender's track replace
            # frames it had no time to take (newest wins): those never left. Every frame
            # that left arrives, the last too (whole at its marked packet).
            encoded = 60 - a.pc.counters.media.dropped_sender
            await wait_media(b, encoded)
            assert lost, "no packet was dropped"
            assert len(seen) >= 2, "no retransmission came"  # the RTX stream's own SSRC
            numbers = [s.timestamp // 3000 for s in b.media]
            assert len(numbers) == encoded
            assert numbers == sorted(set(numbers)) and set(numbers) <= set(range(60))

    run(scenario(), 30)


@pytest.mark.usefixtures("gateway_process_setup")
def test_audio_behind_a_lost_packet_arrives_though_no_more_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of ten 20 ms samples whose eighth packet is lost: the last two came only
    # with the track's next packet (here: never); now AUDIO_GAP_WAIT_S after the loss.
    audio_packets: list[int] = []

    def eighth_audio(receiver: Any, packet: RtpPacket) -> bool:
        if vars(receiver)["_RTCRtpReceiver__kind"] != "audio":
            return False
        audio_packets.append(packet.sequence_number)
        return len(audio_packets) == 8

    lose_packets(monkeypatch, eighth_audio)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            for n in range(10):
                tone = (np.sin(np.arange(960 * n, 960 * (n + 1)) / 8) * 8000).astype(np.int16)
                frame = media_frame("mic", "audio", n * 960, tone)
                assert a.pc.send_media(frame, frame.payload, frame.array_meta, "audio")
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # every packet is in; the lost one's wait is not over
            # A starved encoder thread (a loaded machine) may replace a sample it had no
            # time to take (newest wins): every packet that left but the lost one arrives.
            assert 9 <= len(audio_packets) <= 10
            await wait_media(b, len(audio_packets) - 1)
            numbers = [s.timestamp // 960 for s in b.media]
            assert numbers == sorted(set(numbers)) and numbers[-1] == 9, numbers

    run(scenario(), 30)


@pytest.mark.usefixtures("gateway_process_setup")
def test_a_keyframe_is_asked_for_after_a_lost_video_packet_though_no_more_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of 12 pictures whose 6th frame loses its first packet and every
    # retransmission: the keyframe request came only with the track's next frame, so that
    # frame came as one the receiver could not decode right. Now GAP_WAIT_S after the loss.
    camera: list[int] = []  # its SSRC; retransmissions come with another
    timestamps: list[int] = []  # of the camera's frames, in the order they came
    lost: list[int] = []

    def first_of_sixth_and_retransmissions(receiver: Any, packet: RtpPacket) -> bool:
        if vars(receiver)["_RTCRtpReceiver__kind"] != "video":
            return False
        if not camera:
            camera.append(packet.ssrc)
        if packet.ssrc != camera[0]:
            return True  # a retransmission (RTX)
        if packet.timestamp not in timestamps:
            timestamps.append(packet.timestamp)
            if len(timestamps) == 6:
                lost.append(packet.sequence_number)
                return True
        return False

    lose_packets(monkeypatch, first_of_sixth_and_retransmissions)
    asked: list[float] = []
    ask = RTCRtpSender._send_keyframe
    monkeypatch.setattr(
        RTCRtpSender, "_send_keyframe", lambda self: (asked.append(time.monotonic()), ask(self))
    )

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            await film(a, 12)
            async with asyncio.timeout(5):
                while len(timestamps) < 12 - a.pc.counters.media.dropped_sender:
                    await asyncio.sleep(0.01)
            assert lost, "no packet was dropped"
            burst_ended = time.monotonic()
            await asyncio.sleep(GAP_WAIT_S + 0.5)
            assert any(t > burst_ended for t in asked), asked
            before = len(b.media)
            send_bar(a, 12)
            await wait_media(b, before + 1)
            assert bar_position(b.media[-1]) == 12 and b.media[-1].timestamp == 12 * 3000

    run(scenario(), 30)
