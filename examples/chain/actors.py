"""Head -> Middle -> Tail: one request crosses three worker processes and comes back.

``chain.Head.Run`` calls ``chain.Middle.Run``, which calls ``chain.Tail.Run``; the Tail
returns the request's bytes, so the answer to the Head is the request. A load test of the
Head measures two nested hops on top of the Shell's own call. The Tail also takes data
streams (stream id ``load``) and counts what arrives, for stream load tests.
"""

from __future__ import annotations

import json

from actrhost import Actor, ActrId, ActrType, Context, Dest, rpc

MIDDLE = ActrType("chain", "Middle")
TAIL = ActrType("chain", "Tail")
#: The stream the Tail takes; ``actrhost load --stream`` uses it by default.
STREAM_ID = "load"


class Head(Actor):
    """A: passes each request on to a Middle and returns its answer."""

    @rpc("chain.Head.Run")
    async def run(self, ctx: Context, request: bytes) -> bytes:
        # Discovery is a local directory lookup, round-robin over the running instances.
        middle = await ctx.discover(MIDDLE)
        return await ctx.call(Dest.actor(middle), "chain.Middle.Run", request, timeout=10)


class Middle(Actor):
    """B: passes each request on to a Tail and returns its answer."""

    @rpc("chain.Middle.Run")
    async def run(self, ctx: Context, request: bytes) -> bytes:
        tail = await ctx.discover(TAIL)
        return await ctx.call(Dest.actor(tail), "chain.Tail.Run", request, timeout=10)


class Tail(Actor):
    """C: answers with the request's bytes; counts the data-stream chunks it receives."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream(STREAM_ID, self._on_chunk)

    async def _on_chunk(self, chunk: object, sender: ActrId | None) -> None:
        self.chunks += 1
        self.bytes += memoryview(chunk.payload).nbytes  # type: ignore[attr-defined]

    @rpc("chain.Tail.Run")
    async def run(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("chain.Tail.Stats")
    async def stats(self, ctx: Context, request: bytes) -> bytes:
        return json.dumps({"chunks": self.chunks, "bytes": self.bytes}).encode()
