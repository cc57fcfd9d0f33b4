"""Camera sends a viewer 60 video frames (numpy arrays) and one 4 MiB array; Viewer counts
what arrives and reports it. The code is the same whether the two share a node or not."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from actrhost import Actor, ActrError, ActrType, Context, DataStream, Dest, MediaSample, rpc

from ..echo.actors import discover_when_running

VIEWER = ActrType("demo", "Viewer")
FRAMES = 60
FPS = 30
HEIGHT, WIDTH = 240, 320
#: RTP's video clock: 90,000 ticks per second.
TICKS_PER_FRAME = 90_000 // FPS


def frame(n: int) -> np.ndarray:
    """A test picture: a gradient with a bar that moves one step per frame."""
    picture = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    picture[:] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :, None]
    x = (n * 4) % WIDTH
    picture[:, x : x + 8] = (255, 64, 0)
    return picture


class Viewer(Actor):
    """Counts the frames of track ``cam`` and keeps a summary of the ``scan`` stream."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.frames = 0
        self.size = ""
        self.scan = "no scan"
        self.scan_seen = asyncio.Event()

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_media_track("cam", self._on_frame)
        await ctx.register_stream("scan", self._on_scan)

    async def _on_frame(self, sample: MediaSample, sender: object) -> None:
        self.frames += 1
        height, width = sample.data.shape[:2]
        self.size = f"{width}x{height}"

    async def _on_scan(self, chunk: DataStream, sender: object) -> None:
        # The payload is a read-only view, valid only during this callback: keep what is
        # needed, not the view.
        values = chunk.payload
        self.scan = f"a scan of {values.size:,} {values.dtype} values (sum {values.sum():,.0f})"
        self.scan_seen.set()

    @rpc("demo.Viewer.Report")
    async def report(self, ctx: Context, request: bytes) -> bytes:
        """What arrived; with request ``b"after scan"``, once the scan is in (or after
        5 s): calls, streams and media travel on separate lanes, a call may overtake.
        That report ends a camera's run: the counts start again from zero."""
        if request == b"after scan":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.scan_seen.wait(), 5)
        report = f"viewer got {self.frames} of {FRAMES} frames ({self.size}) and {self.scan}"
        if request == b"after scan":
            self._reset()  # a restarted camera's run is counted on its own
        return report.encode()


class Camera(Actor):
    """On start, finds a Viewer, sends it the frames at 30 per second and a scan, and
    prints the viewer's report."""

    async def on_start(self, ctx: Context) -> None:
        self._task = asyncio.ensure_future(self._film(ctx))

    async def _film(self, ctx: Context) -> None:
        try:
            viewer = Dest.actor(await discover_when_running(ctx, VIEWER))
            # A first call also connects the two nodes when there are two: media samples
            # are newest-wins, and those sent before the connection is up are dropped.
            await ctx.call(viewer, "demo.Viewer.Report", b"", timeout=10)
            for n in range(FRAMES):
                sample = MediaSample(frame(n), n * TICKS_PER_FRAME, "raw", "video")
                await ctx.send_media_sample(viewer, "cam", sample)
                await asyncio.sleep(1 / FPS)
            scan = np.arange(1 << 20, dtype=np.float32)  # 4 MiB: through a ring
            await ctx.send_data_stream(viewer, DataStream("scan", 0, scan))
            report = await ctx.call(viewer, "demo.Viewer.Report", b"after scan", timeout=10)
            print(f"camera: {report.decode()}", flush=True)
        except ActrError as exc:
            print(f"camera: {exc!r}", flush=True)  # a background task: say why it ended

    async def on_stop(self, ctx: Context) -> None:
        self._task.cancel()
