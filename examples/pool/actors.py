"""A pool of ``demo+Square`` instances; Dispatcher spreads calls round-robin over them."""

from __future__ import annotations

import asyncio
import collections

from actrhost import Actor, ActrType, Context, Dest, NotFound, Unavailable, rpc

SQUARE = ActrType("demo", "Square")


async def wait_for_instances(ctx: Context, actr_type: ActrType, count: int) -> None:
    """Poll discovery until ``count`` different instances answer (at most 10 s)."""
    seen: set[object] = set()
    for _ in range(200):
        try:
            seen.add(await ctx.discover(actr_type))
        except (NotFound, Unavailable):
            pass
        if len(seen) >= count:
            return
        await asyncio.sleep(0.05)


class Square(Actor):
    """Squares an integer given as text; answers ``"<result> by <its ActrId>"``."""

    @rpc("demo.Square.Compute")
    async def compute(self, ctx: Context, request: bytes) -> bytes:
        value = int(request)
        return f"{value * value} by {ctx.self_id}".encode()


class Dispatcher(Actor):
    """Calls 30 squares, discovering an instance each time, and prints who did how many."""

    async def on_start(self, ctx: Context) -> None:
        self._task = asyncio.ensure_future(self._dispatch(ctx))

    async def _dispatch(self, ctx: Context) -> None:
        # Wait until every instance of the pool runs, so the work spreads over all three.
        await wait_for_instances(ctx, SQUARE, 3)
        done_by: collections.Counter[str] = collections.Counter()
        for n in range(30):
            worker = await ctx.discover(SQUARE)
            answer = await ctx.call(Dest.actor(worker), "demo.Square.Compute", str(n).encode())
            done_by[answer.decode().split(" by ")[1]] += 1
        for actr_id, count in sorted(done_by.items()):
            print(f"dispatcher: {count} squares by {actr_id}", flush=True)

    async def on_stop(self, ctx: Context) -> None:
        self._task.cancel()
