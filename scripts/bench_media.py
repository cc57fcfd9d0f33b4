#!/usr/bin/env python
"""Media latency between two nodes' gateways, against raw aiortc tracks in the same run.

Setup (all on loopback, one machine), per round:

* **raw aiortc** (the baseline): this process and a child process, one RTCPeerConnection
  each, no actrhost. This process sends a video track (64 x 48 pictures, VP8) and an
  audio track (20 ms of a tone, Opus) from queues it fills at a camera's and a
  microphone's pace; the child reads each decoded frame off aiortc's remote tracks
  (``track.recv()``) and notes when it came.
* **gateways**: a signaling server and two gateway processes; this process plays both
  nodes' workers (``actrhost.gateway._testing.HarnessNode``): a worker of node A sends
  the same pictures and tone as media samples to a worker of node B (worker -> ZeroMQ ->
  gateway -> RTP -> gateway -> ZeroMQ -> worker), which notes when each came.

Latency of a sample: from the moment it was handed over (queued on the track, or sent
by the worker) to the moment the receiver had it decoded. Both clocks are the machine's
``CLOCK_MONOTONIC``. Pictures go ``--fps`` a second, audio 50 a second (one 20 ms frame
each), for ``--seconds``; then the sender stops and waits 2 s: samples that have not come
by then are counted as ``held`` (a jitter buffer that waits for the next frame holds the
last ones of a burst until more come). Medians over rounds, ratios to raw aiortc in the
same round.

    python scripts/bench_media.py                       # 5 rounds of 3 s
    python scripts/bench_media.py --rounds 3 --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actrhost.gateway._ice import use_host_addresses  # noqa: E402
from actrhost.gateway._testing import HarnessNode, start_nodes  # noqa: E402
from actrhost.signaling._testing import ServerProcess  # noqa: E402

VIDEO_CLOCK, AUDIO_CLOCK = 90_000, 48_000
AUDIO_SAMPLES = 960  # 20 ms at 48 kHz: one Opus frame
#: How long the receiver may still take after the last send before a sample counts as held.
SETTLE_S = 2.0


def picture(n: int) -> np.ndarray:
    """Picture ``n``: 64 x 48, a bar that moves."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, (4 * n) % 64 : (4 * n) % 64 + 4] = 255
    return image


def tone(n: int) -> np.ndarray:
    """Audio frame ``n``: 20 ms of 440 Hz, mono int16."""
    t = (n * AUDIO_SAMPLES + np.arange(AUDIO_SAMPLES)) / AUDIO_CLOCK
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def schedule(fps: float, seconds: float) -> list[tuple[float, str, int]]:
    """(time from start, kind, number) of every sample to send, in time order."""
    video = [(n / fps, "video", n) for n in range(int(seconds * fps))]
    audio = [(n * 0.02, "audio", n) for n in range(int(seconds * 50))]
    return sorted(video + audio)


async def send_paced(plan: list[tuple[float, str, int]], send: Any) -> dict[tuple[str, int], float]:
    """Call ``send(kind, n)`` for each sample at its time; returns when each went."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: dict[tuple[str, int], float] = {}
    for at, kind, n in plan:
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[kind, n] = time.monotonic()
        await send(kind, n)
    return sent


def latencies(
    sent: dict[tuple[str, int], float], came: dict[tuple[str, int], float], kind: str
) -> dict[str, float]:
    """p50 / p90 latency (ms) of ``kind``, and how many were held or lost."""
    times = [came[key] - at for key, at in sent.items() if key[0] == kind and key in came]
    total = sum(1 for key in sent if key[0] == kind)
    times.sort()
    return {
        "p50_ms": 1000 * statistics.median(times) if times else float("nan"),
        "p90_ms": 1000 * times[int(len(times) * 0.9)] if times else float("nan"),
        "arrived": len(times),
        "sent": total,
    }


# -- raw aiortc -------------------------------------------------------------------------


async def raw_peer_main() -> None:
    """The child of the raw baseline: answers the offer, prints each decoded frame's
    kind, number and arrival time as a JSON line."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from actrhost._config import WebrtcConfig
    from actrhost.gateway._ice import rtc_configuration

    use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    pc = RTCPeerConnection(rtc_configuration(WebrtcConfig()))
    readers = []

    async def read(track: Any) -> None:
        clock = VIDEO_CLOCK / 3000 if track.kind == "video" else AUDIO_CLOCK / AUDIO_SAMPLES
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            at = time.monotonic()
            n = round(float(frame.pts * frame.time_base) * clock)
            print(json.dumps([track.kind, n, at]), flush=True)

    pc.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
    await pc.setRemoteDescription(RTCSessionDescription(**json.loads(line)))
    await pc.setLocalDescription(await pc.createAnswer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": "answer"}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # parent closes stdin: done
    await pc.close()


class QueuedTrack(MediaStreamTrack):
    """An aiortc track whose frames this process queues when it wants them sent."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def recv(self) -> Any:
        """The next frame queued (aiortc's sender asks for each)."""
        return await self.queue.get()


async def raw_round(plan: list[tuple[float, str, int]]) -> tuple[dict, dict]:
    """One round of the raw baseline: (sent, came) by (kind, number)."""
    import av
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from actrhost._config import WebrtcConfig
    from actrhost.gateway._ice import rtc_configuration

    child = subprocess.Popen(
        [sys.executable, __file__, "--raw-peer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(rtc_configuration(WebrtcConfig()))
    tracks = {kind: QueuedTrack(kind) for kind in ("video", "audio")}
    for track in tracks.values():
        pc.addTrack(track)
    came: dict[tuple[str, int], float] = {}

    async def read_child() -> None:
        while line := await loop.run_in_executor(None, child.stdout.readline):
            kind, n, at = json.loads(line)
            came.setdefault((kind, n), at)

    try:
        await pc.setLocalDescription(await pc.createOffer())
        child.stdin.write(json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}) + "\n")
        child.stdin.flush()
        answer = await loop.run_in_executor(None, child.stdout.readline)
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(answer)))
        reader = asyncio.ensure_future(read_child())
        while pc.connectionState != "connected":
            await asyncio.sleep(0.01)

        async def send(kind: str, n: int) -> None:
            if kind == "video":
                frame = av.VideoFrame.from_ndarray(picture(n), format="rgb24")
                frame.pts, frame.time_base = n * 3000, fractions.Fraction(1, VIDEO_CLOCK)
            else:
                frame = av.AudioFrame.from_ndarray(tone(n).reshape(1, -1), "s16", "mono")
                frame.sample_rate = AUDIO_CLOCK
                frame.pts, frame.time_base = n * AUDIO_SAMPLES, fractions.Fraction(1, AUDIO_CLOCK)
            tracks[kind].queue.put_nowait(frame)

        sent = await send_paced(plan, send)
        await asyncio.sleep(SETTLE_S)
    finally:
        await pc.close()
        child.stdin.close()
        child.wait(10)
    reader.cancel()
    return sent, came


# -- the gateways ------------------------------------------------------------------------


class ArrivalTimes(list):
    """The harness worker's media list, noting when each sample of the round's tracks
    (``track``-cam, ``track``-mic) came; the end of an earlier round's may come now."""

    def __init__(self, track: str) -> None:
        super().__init__()
        self.tracks = {f"{track}-cam", f"{track}-mic"}
        self.came: dict[tuple[str, int], float] = {}

    def append(self, item: Any) -> None:
        at = time.monotonic()
        track_id, _value, timestamp, _codec, kind = item
        if track_id in self.tracks:
            n = timestamp // 3000 if kind == "video" else timestamp // AUDIO_SAMPLES
            self.came.setdefault((kind, n), at)
        super().append(item)


async def gateway_round(
    a: HarnessNode, b: HarnessNode, plan: list[tuple[float, str, int]], track: str
) -> tuple[dict, dict]:
    """One round through the gateways, on tracks named after ``track`` (a route that
    sent nothing for 2 s leaves its track to the next: a fresh one per round)."""
    arrivals = ArrivalTimes(track)
    b.workers["sink"].received.media = arrivals

    async def send(kind: str, n: int) -> None:
        if kind == "video":
            await a.send_media("src", b.ids["sink"], f"{track}-cam", picture(n), n * 3000)
        else:
            array, ts = tone(n), n * AUDIO_SAMPLES
            await a.send_media("src", b.ids["sink"], f"{track}-mic", array, ts, media_type="audio")

    sent = await send_paced(plan, send)
    await asyncio.sleep(SETTLE_S)
    return sent, arrivals.came


def ratio(ours: float, raw: float) -> float:
    return ours / raw if raw else float("nan")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    use_host_addresses(["127.0.0.1"])
    plan = schedule(args.fps, args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-media-") as folder, ServerProcess() as server:
        a = HarnessNode(Path(folder) / "a", server.url, [("src", "t+Source")], name="a")
        b = HarnessNode(Path(folder) / "b", server.url, [("sink", "t+Sink")], name="b")
        await start_nodes(a, b)
        try:
            await a.call("src", b.ids["sink"], "echo", b"connect")
            for round_ in range(args.rounds):
                row: dict[str, float] = {}
                for name, measure in (
                    ("raw", raw_round(plan)),
                    ("gateways", gateway_round(a, b, plan, f"r{round_}")),
                ):
                    sent, came = await measure
                    for kind in ("video", "audio"):
                        got = latencies(sent, came, kind)
                        row[f"{name}_{kind}_p50_ms"] = got["p50_ms"]
                        row[f"{name}_{kind}_p90_ms"] = got["p90_ms"]
                        row[f"{name}_{kind}_held"] = got["sent"] - got["arrived"]
                for kind in ("video", "audio"):
                    row[f"{kind}_p50_vs_raw"] = ratio(
                        row[f"gateways_{kind}_p50_ms"], row[f"raw_{kind}_p50_ms"]
                    )
                rows.append(row)
                print(
                    f"  round {round_ + 1}/{args.rounds}: "
                    + ", ".join(
                        f"{kind} p50 raw {row[f'raw_{kind}_p50_ms']:.1f} ms, "
                        f"gateways {row[f'gateways_{kind}_p50_ms']:.1f} ms "
                        f"(held {row[f'raw_{kind}_held']:.0f} / {row[f'gateways_{kind}_held']:.0f})"
                        for kind in ("video", "audio")
                    ),
                    flush=True,
                )
        finally:
            await a.stop()
            await b.stop()
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {
        "params": vars(args),
        "env": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "median": median,
    }


def report(result: dict[str, Any]) -> None:
    m = result["median"]
    print(f"{'median of rounds':30} {'raw aiortc':>12} {'gateways':>12} {'ratio':>8}")
    for kind in ("video", "audio"):
        for q in ("p50", "p90"):
            raw, ours = m[f"raw_{kind}_{q}_ms"], m[f"gateways_{kind}_{q}_ms"]
            print(f"{kind + ' latency ' + q:30} {raw:9.1f} ms {ours:9.1f} ms {ours / raw:7.2f}x")
        held = f"{m[f'raw_{kind}_held']:.0f}", f"{m[f'gateways_{kind}_held']:.0f}"
        print(f"{kind + ' held at the end':30} {held[0]:>12} {held[1]:>12}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="sending time per round")
    parser.add_argument("--fps", type=float, default=30.0, help="pictures per second")
    parser.add_argument("--json", type=Path, help="append the result as one line")
    parser.add_argument("--raw-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_peer:
        asyncio.run(raw_peer_main())
        sys.exit(0)
    result = asyncio.run(main(args))
    report(result)
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps(result) + "\n")
