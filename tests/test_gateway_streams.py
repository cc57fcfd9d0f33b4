"""Data streams and media samples between two nodes' gateways: a large reliable stream
with checksums and backpressure, latency-first drops under pressure, video and audio
samples over aiortc media tracks."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("aiortc")

from actrhost._envelope import MEDIA, StreamFrame
from actrhost._ids import ActrId
from actrhost._payload_type import PayloadType
from actrhost.gateway._media import AUDIO_FRAME_SAMPLES, ROUTE_IDLE_S, MediaCounters, MediaSender
from actrhost.gateway._testing import HarnessNode, LoopRunner
from actrhost.shm import encode_array_meta
from actrhost.signaling._testing import ServerProcess

#: 100 MiB end to end, as the issue asks (≈ 1 s here with 16 KiB packets, 10 to 20 s with
#: aiortc's 1,189 bytes); GATEWAY_STREAM_MIB=20 for less.
STREAM_MIB = int(os.environ.get("GATEWAY_STREAM_MIB", "100"))
CHUNK_BYTES = 1024 * 1024


class Pair:
    def __init__(self, runner: LoopRunner, a: HarnessNode, b: HarnessNode) -> None:
        self.runner = runner
        self.a = a
        self.b = b


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # Small high-water marks: a fast sender meets backpressure at every hop.
    yield from _pair(tmp_path_factory.mktemp("gw-streams"), sink_hwm=16)


@pytest.fixture
def roomy_pair(tmp_path: Path) -> Iterator[Pair]:
    """A pair whose sink's queue is not the bottleneck: only the sender's is."""
    yield from _pair(tmp_path, sink_hwm=10000)


def _pair(folder: Path, sink_hwm: int) -> Iterator[Pair]:
    runner = LoopRunner()
    with ServerProcess() as server:
        a = HarnessNode(
            folder / "a", server.url, [("src", "t+Source"), ("src2", "t+Source")], hwm=16
        )
        b = HarnessNode(folder / "b", server.url, [("sink", "t+Sink")], hwm=sink_hwm)
        runner.run(a.start())
        runner.run(b.start())
        try:
            runner.run(a.call("src", b.ids["sink"], "echo", b"warm up"))
            yield Pair(runner, a, b)
        finally:
            runner.run(a.stop())
            runner.run(b.stop())
            runner.close()


def _chunk(sequence: int) -> bytes:
    seed = hashlib.sha256(b"%d" % sequence).digest()
    return seed * (CHUNK_BYTES // len(seed))


def test_large_reliable_stream_arrives_whole_and_in_order(pair: Pair) -> None:
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    count = STREAM_MIB

    async def scenario() -> float:
        started = time.perf_counter()
        expected = hashlib.sha256()
        for seq in range(count):
            chunk = _chunk(seq)
            expected.update(chunk)
            await a.send_chunk("src", b.ids["sink"], "bulk", seq, chunk)
        await b.wait_for(lambda: len(sink.chunks["bulk"]) >= count, 60, f"{count} chunks")
        elapsed = time.perf_counter() - started
        got = sink.chunks["bulk"]
        assert [seq for seq, _ in got] == list(range(count))
        digest = hashlib.sha256()
        for _seq, payload in got:
            digest.update(payload)
        assert digest.hexdigest() == expected.hexdigest()
        return elapsed

    elapsed = pair.runner.run(scenario(), timeout_s=90)
    print(f"{count} MiB through two gateways in {elapsed:.1f} s ({count / elapsed:.1f} MiB/s)")
    stats = pair.runner.run(a.stats())
    (node,) = stats["remote_nodes"].values()
    assert node["lanes"]["stream_reliable"]["frames_out"] == count
    assert node["lanes"]["stream_reliable"]["dropped"] == 0
    # Two gateways on one host: packets as large as a DTLS record (_sctp_packets).
    assert node["connection"]["sctp_packet_bytes"] == 16384, node["connection"]
    sink.chunks.clear()


def test_a_stream_from_an_actor_its_node_has_not_introduced_waits_for_it(pair: Pair) -> None:
    # The link is open (src called sink), but src2 never reached node b: its node must
    # introduce it through signaling first. Its chunks wait meanwhile, in order.
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received

    async def scenario() -> None:
        # More than hwm_messages (16 here) wait: a reliable stream's are bounded by its
        # sender's window, not refused past that count (the 17th on were lost).
        for seq in range(50):
            await a.send_chunk("src2", b.ids["sink"], "fresh", seq, b"chunk %d" % seq)
        await b.wait_for(lambda: len(sink.chunks["fresh"]) >= 50, 10, "50 chunks")

    pair.runner.run(scenario())
    assert sink.chunks["fresh"] == [(seq, b"chunk %d" % seq) for seq in range(50)]
    assert pair.runner.run(b.stats())["unintroduced_sources"] == 0
    sink.chunks.clear()


def test_latency_first_drops_old_chunks_under_pressure(roomy_pair: Pair) -> None:
    # Of its own pair: with the sink's queue of 16 too, a loaded machine's slow sink made
    # node b's gateway drop the newest chunks (behind a full queue, CI), not node a's.
    pair = roomy_pair
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    sent = 0

    async def scenario() -> None:
        nonlocal sent
        payload = bytes(32 * 1024)
        for seq in range(300):
            # As fast as ZeroMQ takes them: far faster than the data channel drains.
            while not a.send_chunk_nowait(
                "src", b.ids["sink"], "live", seq, payload, PayloadType.STREAM_LATENCY_FIRST
            ):
                await asyncio.sleep(0.001)
            sent += 1
        # Until node a's gateway has sent or dropped every chunk, then until those it sent
        # arrived, or nothing came for 2 s (no retransmits: a loaded machine may lose a
        # few on the wire). Waiting until nothing came for 0.5 s ended before the newest
        # chunks left a loaded CI machine's gateway.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lane.update(await _latency_lane(a))
            if lane["frames_out"] + lane["dropped"] >= sent:
                break
            await asyncio.sleep(0.05)
        seen, quiet_since = -1, time.monotonic()
        while len(sink.chunks["live"]) < lane["frames_out"] and time.monotonic() < deadline:
            if len(sink.chunks["live"]) != seen:
                seen, quiet_since = len(sink.chunks["live"]), time.monotonic()
            elif time.monotonic() - quiet_since > 2:
                break
            await asyncio.sleep(0.05)

    lane: dict[str, int] = {}
    pair.runner.run(scenario())
    got = [seq for seq, _ in sink.chunks["live"]]
    assert lane["frames_out"] + lane["dropped"] == sent, lane
    assert lane["dropped"] > 0, "no drop: the lane was never under pressure"
    assert len(got) <= lane["frames_out"] < sent, (len(got), lane)
    # Newest wins: the queue dropped old chunks, so the last ones sent got through (a
    # loaded machine may still lose a few on the wire: no retransmits on this lane).
    assert max(got) >= 280, (got[-10:], lane)


async def _latency_lane(node: HarnessNode) -> dict[str, int]:
    """The latency-first lane's counters of ``node``'s one link."""
    (link,) = (await node.stats())["remote_nodes"].values()
    counters: dict[str, int] = link["lanes"]["stream_latency_first"]
    return counters


def test_video_and_audio_samples_arrive_decoded_with_timestamps(pair: Pair) -> None:
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    frames = 30

    async def scenario() -> None:
        for i in range(frames):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:, :] = (8 * i, 255 - 8 * i, 128)
            await a.send_media("src", b.ids["sink"], "cam", image, 1000 + 3000 * i)
            tone = (np.sin(np.arange(960) / 10) * 8000).astype(np.int16)
            await a.send_media("src", b.ids["sink"], "mic", tone, 960 * i, media_type="audio")
            await asyncio.sleep(1 / 30)
        # Video is lossy (newest wins): a loaded suite lost more than 3 of 30 at times (the
        # encoder or a full socket drops them). Wait for nearly all, or else for at least
        # half and nothing more arriving for 1 s: what this tests is decoding and order.
        deadline = time.monotonic() + 10
        seen, still_since = -1, time.monotonic()
        while (got := sum(1 for m in sink.media if m[0] == "cam")) < frames - 3:
            if got != seen:
                seen, still_since = got, time.monotonic()
            elif got >= frames // 2 and time.monotonic() - still_since >= 1.0:
                break
            assert time.monotonic() < deadline, f"{got} of {frames} video frames arrived"
            await asyncio.sleep(0.05)

    pair.runner.run(scenario())

    async def counted_as_arrived() -> int:
        # The gateway counts a sample when it hands it on: the last may still be on the
        # way to the sink (a loaded run checked 58 against 60 once). Every one counted
        # arrives, and nothing else.
        deadline = time.monotonic() + 5
        while True:
            (node,) = (await b.stats())["remote_nodes"].values()
            received = int(node["media"]["samples_received"])
            if received == len(sink.media) or time.monotonic() > deadline:
                return received
            await asyncio.sleep(0.1)

    received = pair.runner.run(counted_as_arrived())
    video = [m for m in sink.media if m[0] == "cam"]
    audio = [m for m in sink.media if m[0] == "mic"]
    timestamps = [ts for _track, _value, ts, _codec, _kind in video]
    assert timestamps == sorted(timestamps)
    for _track, value, ts, codec, kind in video:
        i = (ts - 1000) // 3000
        assert ts == 1000 + 3000 * i and 0 <= i < frames
        assert (kind, codec, value.shape, value.dtype) == ("video", "rgb24", (48, 64, 3), np.uint8)
        # VP8 is lossy: the colour survives, not the exact bytes.
        assert abs(int(value[..., 0].mean()) - 8 * i) < 24
        assert abs(int(value[..., 1].mean()) - (255 - 8 * i)) < 24
    assert audio, "no audio sample arrived"
    # Sent as (n,): arrives as (n,), as locally (it came as (n, 1), QA).
    assert all(v.dtype == np.int16 and v.shape == (960,) for _t, v, _ts, _c, _k in audio)
    # On the sender's clock, 960 apart: each offset was counted twice (1,920 apart, ending
    # later than anything sent, QA).
    audio_ts = [ts for _track, _value, ts, _codec, _kind in audio]
    assert all(ts % 960 == 0 and 0 <= ts < 960 * frames for ts in audio_ts), audio_ts
    steps = [later - earlier for earlier, later in itertools.pairwise(audio_ts)]
    assert steps and all(step > 0 for step in steps)
    assert steps.count(960) > len(steps) // 2, audio_ts
    assert received == len(video) + len(audio)


def _tone(frequency: float, start: int, samples: int = 960) -> np.ndarray:
    """``samples`` of a sine at 48 kHz, continuing from sample ``start``."""
    t = (start + np.arange(samples)) / 48000
    return (np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16)


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 48000)[int(np.argmax(spectrum))])


def test_media_routes_between_two_nodes_keep_their_own_tracks(pair: Pair) -> None:
    # Two microphones and two cameras of one node stream to the other at once: each
    # route has a track (and an encoder) of its own, so the tones are not mixed into one
    # Opus stream and the two picture sizes do not share a VP8 encoder.
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    tones = {"mic-low": 440.0, "mic-high": 2000.0}
    sizes = {"cam-big": (48, 64), "cam-small": (32, 32)}
    chunks = 50

    async def scenario() -> None:
        for i in range(chunks):
            for track, frequency in tones.items():
                tone = _tone(frequency, 960 * i)
                await a.send_media("src", b.ids["sink"], track, tone, 960 * i, media_type="audio")
            for track, (h, w) in sizes.items():
                image = np.full((h, w, 3), (200, 40, 90) if h == 48 else (30, 220, 60), np.uint8)
                await a.send_media("src", b.ids["sink"], track, image, 3000 * i)
            await asyncio.sleep(0.02)

        def arrived() -> bool:
            tracks = [m[0] for m in sink.media]
            return all(tracks.count(t) >= chunks // 2 for t in [*tones, *sizes])

        await b.wait_for(arrived, 10, "samples of every route")

    pair.runner.run(scenario())
    for track, frequency in tones.items():
        pcm = np.concatenate([m[1] for m in sink.media if m[0] == track])
        assert abs(_peak_hz(pcm) - frequency) < 30, (track, _peak_hz(pcm))
        other = next(f for t, f in tones.items() if t != track)
        spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
        freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
        own = spectrum[np.abs(freqs - frequency) < 30].max()
        foreign = spectrum[np.abs(freqs - other) < 30].max()
        assert foreign < own / 20, (track, own, foreign)  # not mixed with the other route
    for track, (h, w) in sizes.items():
        frames = [m[1] for m in sink.media if m[0] == track]
        assert {f.shape for f in frames} == {(h, w, 3)}, track
        red = 200 if h == 48 else 30
        assert all(abs(int(f[..., 0].mean()) - red) < 24 for f in frames), track
    (node,) = pair.runner.run(b.stats())["remote_nodes"].values()
    assert node["media"]["errors"] == 0


def test_audio_samples_longer_than_an_opus_packet_arrive_in_20_ms_samples(pair: Pair) -> None:
    # An 80 ms sample became four Opus packets with one RTP timestamp, which the receiver
    # dropped, all of them, uncounted (QA: 0 of 32 samples of 3,840 arrived).
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    sends, length = 12, 3840

    async def scenario() -> None:
        for i in range(sends):
            tone = _tone(1000.0, length * i, samples=length)
            ts = length * i
            await a.send_media("src", b.ids["sink"], "mic-long", tone, ts, media_type="audio")
            await asyncio.sleep(length / 48000)

        def arrived() -> bool:
            return sum(1 for m in sink.media if m[0] == "mic-long") >= sends * 4 // 2

        await b.wait_for(arrived, 10, "the long samples, in 20 ms samples")

    pair.runner.run(scenario())
    samples = [m for m in sink.media if m[0] == "mic-long"]
    assert all(value.shape == (960,) for _t, value, _ts, _c, _k in samples)
    timestamps = [ts for _t, _v, ts, _c, _k in samples]
    assert timestamps == sorted(timestamps) and timestamps[0] < length
    pcm = np.concatenate([value for _t, value, _ts, _c, _k in samples])
    assert abs(_peak_hz(pcm) - 1000.0) < 30


def test_audio_samples_shorter_than_a_packet_arrive_whole_the_last_one_padded(pair: Pair) -> None:
    # aiortc's encoder regrouped them into 20 ms, and held what was short of a packet at
    # the end of a burst until more came: for ever (QA: 100 samples of 441 lost their
    # last 900). The gateway frames them itself, and pads the last after AUDIO_TAIL_S.
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    sends, length = 9, 441  # 3,969 samples: 4 packets and 129 more

    async def scenario() -> None:
        for i in range(sends):
            tone = _tone(1000.0, length * i, samples=length)
            await a.send_media(
                "src", b.ids["sink"], "mic-short", tone, length * i, media_type="audio"
            )
            await asyncio.sleep(length / 48000)

        def arrived() -> int:
            return sum(len(m[1]) for m in sink.media if m[0] == "mic-short")

        await b.wait_for(lambda: arrived() >= 5 * 960, 10, "the samples and the padded tail")
        # The pair has 4 audio tracks: leave this one to the next test's route.
        await asyncio.sleep(ROUTE_IDLE_S + 0.2)

    pair.runner.run(scenario())
    samples = [m[1] for m in sink.media if m[0] == "mic-short"]
    assert [value.shape for value in samples] == [(960,)] * 5
    pcm = np.concatenate(samples)
    assert abs(_peak_hz(pcm[: sends * length]) - 1000.0) < 30


def test_encoded_media_is_counted_on_one_lane_by_both_nodes(pair: Pair) -> None:
    # Media that is no raw array goes on the latency-first channel: its sender counted it
    # as media_rtp, its receiver as stream_latency_first (QA).
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received

    def lane(node: HarnessNode, key: str) -> int:
        (remote,) = pair.runner.run(node.stats())["remote_nodes"].values()
        return remote["lanes"]["media_rtp"][key]

    sent_before, received_before = lane(a, "frames_out"), lane(b, "frames_in")

    async def scenario() -> None:
        for i in range(5):
            packet = np.arange(100, dtype=np.uint8)  # as if already encoded
            await a.send_media("src", b.ids["sink"], "encoded", packet, i, codec="h264")
            await asyncio.sleep(0.01)
        await b.wait_for(
            lambda: sum(1 for m in sink.media if m[0] == "encoded") >= 5, 10, "the packets"
        )

    pair.runner.run(scenario())
    assert lane(a, "frames_out") - sent_before == 5
    assert lane(b, "frames_in") - received_before == 5


def test_a_track_carries_mono_then_stereo_then_mono_again(pair: Pair) -> None:
    # aiortc's Opus encoder fails on a frame whose layout differs from its first one,
    # and that ends the track's sender: after mono, stereo samples and everything after
    # them on the track were lost, uncounted (QA: 5, 0, 0 of 5 with media_tracks = 1).
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    count = 8

    async def phase(stereo: bool, first: int) -> None:
        arrived = len([m for m in sink.media if m[0] == "switch"])
        for i in range(first, first + count):
            tone = _tone(440.0, 960 * i)
            if stereo:  # left 440 Hz, right 2 kHz
                tone = np.stack([tone, _tone(2000.0, 960 * i)], axis=1)
            await a.send_media("src", b.ids["sink"], "switch", tone, 960 * i, media_type="audio")
            await asyncio.sleep(0.02)
        await b.wait_for(
            lambda: len([m for m in sink.media if m[0] == "switch"]) >= arrived + count,
            10,
            f"the {'stereo' if stereo else 'mono'} samples from {first}",
        )

    async def scenario() -> None:
        await phase(stereo=False, first=0)
        await phase(stereo=True, first=count)
        await phase(stereo=False, first=2 * count)
        # The pair has 4 audio tracks: this route, the tests' before it still in use,
        # would leave none to the next test's route (dropped, `no_track`).
        await asyncio.sleep(ROUTE_IDLE_S + 0.2)

    pair.runner.run(scenario())
    by_ts = {ts: value for track, value, ts, _c, _k in sink.media if track == "switch"}
    assert {by_ts[960 * i].shape for i in range(count)} == {(960,)}
    stereo = [by_ts[960 * i] for i in range(count, 2 * count)]
    assert {value.shape for value in stereo} == {(960, 2)}
    pcm = np.concatenate(stereo)
    assert abs(_peak_hz(pcm[:, 0]) - 440.0) < 30 and abs(_peak_hz(pcm[:, 1]) - 2000.0) < 30
    assert {by_ts[960 * i].shape for i in range(2 * count, 3 * count)} == {(960,)}
    (node,) = pair.runner.run(b.stats())["remote_nodes"].values()
    assert node["media"]["errors"] == 0


def test_a_burst_of_audio_samples_arrives_whole_without_more_behind_it(pair: Pair) -> None:
    # aiortc's audio jitter buffer held the last four frames of a burst until more came:
    # a short utterance lost its end for as long as the microphone stayed quiet (QA: 6 of
    # 10 samples). Each frame now goes as soon as it is whole (gateway/_jitter.py).
    a, b = pair.a, pair.b
    sink = b.workers["sink"].received
    count = 10

    async def scenario() -> None:
        for i in range(count):
            tone = _tone(440.0, 960 * i)
            await a.send_media("src", b.ids["sink"], "words", tone, 960 * i, media_type="audio")
            await asyncio.sleep(0.02)
        await b.wait_for(
            lambda: sum(1 for m in sink.media if m[0] == "words") >= count, 10, "the burst"
        )

    pair.runner.run(scenario())
    timestamps = [ts for track, _value, ts, _codec, _kind in sink.media if track == "words"]
    assert timestamps == [960 * i for i in range(count)]


def test_a_media_route_beyond_the_free_tracks_is_dropped_and_counted(tmp_path: Path) -> None:
    runner = LoopRunner()
    webrtc = 'ice_host_addresses = ["127.0.0.1"]\nconnect_timeout_s = 4.0\nmedia_tracks = 1'
    with ServerProcess() as server:
        a = HarnessNode(tmp_path / "a", server.url, [("src", "t+Source")], webrtc_toml=webrtc)
        b = HarnessNode(tmp_path / "b", server.url, [("sink", "t+Sink")], webrtc_toml=webrtc)
        runner.run(a.start())
        runner.run(b.start())
        try:
            assert runner.run(a.call("src", b.ids["sink"], "echo", b"connect")) == b"connect"

            async def two_routes() -> None:
                for i in range(20):
                    for track in ("first", "second"):
                        tone = _tone(440, 960 * i)
                        await a.send_media(
                            "src", b.ids["sink"], track, tone, 960 * i, media_type="audio"
                        )
                    await asyncio.sleep(0.02)
                await b.wait_for(
                    lambda: len(b.workers["sink"].received.media) >= 10, 10, "audio samples"
                )

            runner.run(two_routes())
            # One track: the first route has it, the second is refused, not mixed in.
            assert {m[0] for m in b.workers["sink"].received.media} == {"first"}
            (node,) = runner.run(a.stats())["remote_nodes"].values()
            assert node["media"]["no_track"] == 20
            assert node["media"]["samples_sent"] == 20
        finally:
            runner.run(a.stop())
            runner.run(b.stop())
            runner.close()


def test_an_audio_frame_never_mixes_mono_and_stereo() -> None:
    # The gateway carries what is short of 20 ms to the next sample; a frame of mono and
    # stereo went with one control message, and arrived in the other's shape (QA). A
    # change of layout sends the carry first, padded.
    async def go() -> list[tuple[int, int]]:
        sender = MediaSender(MediaCounters(), send_meta=lambda meta: None)
        track = sender.tracks("audio")[0]
        sender.learn_mids([SimpleNamespace(mid="0", sender=SimpleNamespace(track=track))])
        for stereo in (False, True, False):
            tone = _tone(440.0, 0, samples=500)
            if stereo:
                tone = np.stack([tone, tone], axis=1)
            frame = StreamFrame(MEDIA, "mic", target=ActrId.parse("1@1:t+Sink"))
            meta = encode_array_meta(tone.dtype, tone.shape)
            sender.send(frame, tone.tobytes(), meta, "audio")
        await asyncio.sleep(0.1)  # the last carry goes padded
        queued = []
        while track._frames:
            av_frame, meta = track._frames.popleft()
            queued.append((av_frame.samples, meta["channels"]))
        sender.stop()
        return queued

    frame = AUDIO_FRAME_SAMPLES
    assert asyncio.run(go()) == [(frame, 1), (frame, 2), (frame, 1)]
