"""Actors used by the benchmarks (imported by worker processes from this folder)."""

from __future__ import annotations

import json
import time

from actrhost import Actor, ActrType, Context, DataStream, Dest, rpc

SINK = ActrType("bench", "Sink")
#: The stream a Driver sends to the Sink (``bench.Driver.Stream``).
STREAM_ID = "bench"


class Sink(Actor):
    """Answers calls with their payload, counts tells and the chunks of stream ``bench``."""

    def __init__(self) -> None:
        self.told = 0
        self.chunks = 0

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream(STREAM_ID, self._on_chunk)

    async def _on_chunk(self, chunk: DataStream, sender: object) -> None:
        self.chunks += 1

    @rpc("bench.Sink.Chunks")
    async def chunks_seen(self, ctx: Context, request: bytes) -> bytes:
        return str(self.chunks).encode()

    @rpc("bench.Sink.Echo")
    async def echo(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("bench.Sink.Tell")
    async def tell(self, ctx: Context, request: bytes) -> None:
        self.told += 1

    @rpc("bench.Sink.Count")
    async def count(self, ctx: Context, request: bytes) -> bytes:
        return str(self.told).encode()


class Driver(Actor):
    """Runs a measurement against the Sink when the benchmark script asks."""

    @rpc("bench.Driver.Calls")
    async def calls(self, ctx: Context, request: bytes) -> bytes:
        params = json.loads(request)
        sink = Dest.actor(await ctx.discover(SINK))
        payload = b"x" * params["size"]
        for _ in range(params["warmup"]):
            await ctx.call(sink, "bench.Sink.Echo", payload)
        samples = []
        clock = time.perf_counter
        for _ in range(params["count"]):
            started = clock()
            await ctx.call(sink, "bench.Sink.Echo", payload)
            samples.append(clock() - started)
        return json.dumps(samples).encode()

    @rpc("bench.Driver.Tells")
    async def tells(self, ctx: Context, request: bytes) -> bytes:
        params = json.loads(request)
        sink = Dest.actor(await ctx.discover(SINK))
        payload = b"x" * params["size"]
        base = int(await ctx.call(sink, "bench.Sink.Count", b""))
        target = base + params["count"]
        started = time.perf_counter()
        for _ in range(params["count"]):
            await ctx.tell(sink, "bench.Sink.Tell", payload)
        sent = time.perf_counter()
        while int(await ctx.call(sink, "bench.Sink.Count", b"")) < target:
            pass
        done = time.perf_counter()
        return json.dumps({"send_s": sent - started, "handled_s": done - started}).encode()

    @rpc("bench.Driver.Stream")
    async def stream(self, ctx: Context, request: bytes) -> bytes:
        """Send ``count`` reliable chunks of ``size`` bytes to the Sink; the seconds from
        the first send until the Sink has handled the last."""
        params = json.loads(request)
        sink = Dest.actor(await ctx.discover(SINK))
        payload = bytes(range(256)) * (params["size"] // 256)
        base = int(await ctx.call(sink, "bench.Sink.Chunks", b""))
        started = time.perf_counter()
        for n in range(params["count"]):
            await ctx.send_data_stream(sink, DataStream(STREAM_ID, n, payload), timeout=60)
        while int(await ctx.call(sink, "bench.Sink.Chunks", b"")) < base + params["count"]:
            pass
        return json.dumps(time.perf_counter() - started).encode()
