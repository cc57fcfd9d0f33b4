"""Ping -> Pong -> Ping: a nested call that needs concurrent handlers to not deadlock."""

from __future__ import annotations

import asyncio
import time

from actrhost import Actor, ActrError, ActrType, Context, Dest, rpc

from ..echo.actors import discover_when_running

PONG = ActrType("demo", "Pong")


class Ping(Actor):
    """Sends ``rounds`` pings when it starts and prints the median round trip."""

    rounds = 200

    @rpc("demo.Ping.Count")
    async def count(self, ctx: Context, request: bytes) -> bytes:
        # Pong calls this while Ping's own call to Pong is still waiting.
        return str(int(request or b"0") + 1).encode()

    async def on_start(self, ctx: Context) -> None:
        self._task = asyncio.ensure_future(self._play(ctx))

    async def _play(self, ctx: Context) -> None:
        pong = await discover_when_running(ctx, PONG)
        times = []
        for n in range(self.rounds):
            started = time.perf_counter()
            try:
                answer = await ctx.call(Dest.actor(pong), "demo.Pong.Hit", str(n).encode())
            except ActrError as exc:
                # This runs as a background task: say so, or the failure goes unseen.
                print(f"ping: round {n} failed: {exc!r}", flush=True)
                return
            times.append(time.perf_counter() - started)
            assert answer == str(n + 1).encode(), answer
        times.sort()
        print(
            f"ping: {self.rounds} nested round trips, median {times[len(times) // 2] * 1e6:.0f} µs",
            flush=True,
        )

    async def on_stop(self, ctx: Context) -> None:
        self._task.cancel()


class Pong(Actor):
    """Answers a hit by asking the caller to count: A -> B -> A."""

    @rpc("demo.Pong.Hit")
    async def hit(self, ctx: Context, request: bytes) -> bytes:
        assert ctx.caller_id is not None
        return await ctx.call(Dest.actor(ctx.caller_id), "demo.Ping.Count", request)
