"""Actors of ``bench_stream.py`` (imported by worker processes from this folder).

``StreamSink`` receives the benchmark stream, touches the first and the last byte of every
chunk and counts chunks and bytes; ``StreamSource`` sends a burst of chunks to it when the
benchmark script asks. Times are ``time.monotonic()`` (``CLOCK_MONOTONIC``, one clock
for every process on Linux), so the source can compare its start with the sink's end.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from actrhost import Actor, ActrType, Context, DataStream, Dest, PayloadType, rpc

SINK = ActrType("bench", "StreamSink")
STREAM_ID = "bench"
#: How long a source waits for the sink to handle every chunk of one burst.
HANDLED_TIMEOUT_S = 120.0


class StreamSink(Actor):
    """Counts the chunks of stream ``bench``; ``Wait`` answers once a count is reached."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.first_handled = 0.0
        self.last_handled = 0.0
        self.checksum = 0  # the touched bytes, so the reads cannot be optimized away
        self._target = 0
        self._reached = asyncio.Event()

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream(STREAM_ID, self._on_chunk)

    async def _on_chunk(self, chunk: DataStream, sender: Any) -> None:
        payload = chunk.payload  # a zero-copy memoryview or read-only ndarray
        size = payload.nbytes
        if size:
            view = payload if isinstance(payload, memoryview) else memoryview(payload)
            view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            self.checksum ^= view[0] ^ view[-1]
        self.chunks += 1
        self.bytes += size
        self.last_handled = time.monotonic()
        if self.chunks == 1:
            self.first_handled = self.last_handled
        if self.chunks >= self._target:
            self._reached.set()

    @rpc("bench.StreamSink.Reset")
    async def reset(self, ctx: Context, request: bytes) -> bytes:
        """Zero the counters before a burst."""
        self.chunks = self.bytes = 0
        self.first_handled = self.last_handled = 0.0
        self._target = 0
        self._reached.clear()
        return b""

    @rpc("bench.StreamSink.Wait")
    async def wait(self, ctx: Context, request: bytes) -> bytes:
        """Wait until ``{"chunks": n}`` chunks were handled; return counts and times."""
        self._target = json.loads(request)["chunks"]
        if self.chunks < self._target:
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), HANDLED_TIMEOUT_S)
        counts = {"chunks": self.chunks, "bytes": self.bytes}
        times = {"first_handled": self.first_handled, "last_handled": self.last_handled}
        return json.dumps({**counts, **times}).encode()


class StreamSource(Actor):
    """Sends bursts of equal chunks to the sink, as fast as STREAM_RELIABLE allows."""

    def __init__(self) -> None:
        self._payloads: dict[tuple[str, int], Any] = {}

    def _payload(self, kind: str, size: int) -> Any:
        """A payload of ``size`` bytes, made (and every page touched) once per kind and size."""
        key = (kind, size)
        if key not in self._payloads:
            import numpy as np

            array = np.full(size, 7, dtype=np.uint8)
            self._payloads[key] = array if kind == "ndarray" else array.tobytes()
        return self._payloads[key]

    @rpc("bench.StreamSource.Run")
    async def run(self, ctx: Context, request: bytes) -> bytes:
        """Send ``warmup`` chunks, wait until handled, then time ``count`` chunks.

        Params (JSON): ``size``, ``count``, ``warmup``, ``kind`` (``bytes`` or ``ndarray``).
        Returns the start of the timed burst, when the last send returned and the sink's
        counts and times; the elapsed time runs from the first send to the last chunk the
        sink handled.
        """
        params = json.loads(request)
        size, count, warmup = params["size"], params["count"], params["warmup"]
        payload = self._payload(params.get("kind", "bytes"), size)
        sink = Dest.actor(await ctx.discover(SINK))
        await self._burst(ctx, sink, payload, warmup)  # connects, maps the ring's pages
        await self._wait_handled(ctx, sink, warmup)
        await ctx.call(sink, "bench.StreamSink.Reset", b"")
        started = time.monotonic()
        await self._burst(ctx, sink, payload, count)
        sent = time.monotonic()
        result = await self._wait_handled(ctx, sink, count)
        if result["chunks"] != count or result["bytes"] != count * size:
            raise RuntimeError(f"sink counted {result} for {count} chunks of {size} bytes")
        return json.dumps({"started": started, "sent": sent, **result}).encode()

    @staticmethod
    async def _burst(ctx: Context, sink: Dest, payload: Any, count: int) -> None:
        """``count`` chunks of one payload, each sent as soon as the last send returned."""
        reliable = PayloadType.STREAM_RELIABLE
        for sequence in range(count):
            chunk = DataStream(STREAM_ID, sequence, payload)
            await ctx.send_data_stream(sink, chunk, payload_type=reliable, timeout=30)

    @staticmethod
    async def _wait_handled(ctx: Context, sink: Dest, count: int) -> dict[str, Any]:
        """The sink's counts and times once it handled ``count`` chunks since its reset."""
        request = json.dumps({"chunks": count}).encode()
        reply = await ctx.call(sink, "bench.StreamSink.Wait", request, timeout=HANDLED_TIMEOUT_S)
        result: dict[str, Any] = json.loads(reply)
        return result
