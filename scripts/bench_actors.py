"""Actors used by the benchmarks (imported by worker processes from this folder)."""

from __future__ import annotations

import json
import time

from actrhost import Actor, ActrType, Context, Dest, rpc

SINK = ActrType("bench", "Sink")


class Sink(Actor):
    """Answers calls with their payload and counts tells."""

    def __init__(self) -> None:
        self.told = 0

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
