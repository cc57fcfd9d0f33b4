"""Echo answers ``demo.Echo.Say`` with what it got; Client calls it and prints the answer."""

from __future__ import annotations

import asyncio

from actrhost import Actor, ActrType, Context, Dest, rpc

ECHO = ActrType("demo", "Echo")


class Echo(Actor):
    """Returns every request unchanged."""

    @rpc("demo.Echo.Say")
    async def say(self, ctx: Context, request: bytes) -> bytes:
        return request


class Client(Actor):
    """On start, finds an Echo and calls it a few times, printing each answer."""

    async def on_start(self, ctx: Context) -> None:
        self._task = asyncio.ensure_future(self._talk(ctx))

    async def _talk(self, ctx: Context) -> None:
        echo = await ctx.discover(ECHO)
        for n in range(1, 4):
            answer = await ctx.call(Dest.actor(echo), "demo.Echo.Say", f"hello #{n}".encode())
            print(f"client got: {answer.decode()} (from {echo})", flush=True)
            await asyncio.sleep(0.5)

    async def on_stop(self, ctx: Context) -> None:
        self._task.cancel()
