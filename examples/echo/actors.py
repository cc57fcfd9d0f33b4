"""Echo answers ``demo.Echo.Say`` with what it got; Client calls it and prints the answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from actrhost import Actor, ActrError, ActrId, ActrType, Context, Dest, NotFound, Unavailable, rpc

ECHO = ActrType("demo", "Echo")


async def discover_when_running(ctx: Context, actr_type: ActrType, timeout_s: float = 10) -> ActrId:
    """Discover an instance, waiting until one is known and runs.

    ``ctx.discover`` itself waits for an instance this node is starting; one on another
    node is known once that node registered it with signaling (NotFound until then), and
    one restarting or given up on is Unavailable.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await ctx.discover(actr_type)
        except (NotFound, Unavailable):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


class Echo(Actor):
    """Returns every request unchanged."""

    @rpc("demo.Echo.Say")
    async def say(self, ctx: Context, request: bytes) -> bytes:
        return request


@dataclass
class ClientSettings:
    """The client's ``[actor.settings]`` (every key optional)."""

    calls: int = 3
    interval_s: float = 0.5
    greeting: str = "hello"


class Client(Actor):
    """On start, finds an Echo and calls it a few times, printing each answer."""

    settings: ClientSettings  # from the config, checked when it is loaded

    async def on_start(self, ctx: Context) -> None:
        self._task = asyncio.ensure_future(self._talk(ctx))

    async def _talk(self, ctx: Context) -> None:
        try:
            echo = await discover_when_running(ctx, ECHO)
            for n in range(1, self.settings.calls + 1):
                request = f"{self.settings.greeting} #{n}".encode()
                answer = await ctx.call(Dest.actor(echo), "demo.Echo.Say", request)
                print(f"client got: {answer.decode()} (from {echo})", flush=True)
                await asyncio.sleep(self.settings.interval_s)
        except ActrError as exc:
            print(f"client: {exc!r}", flush=True)  # a background task: say why it ended

    async def on_stop(self, ctx: Context) -> None:
        self._task.cancel()
