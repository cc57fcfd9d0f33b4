"""How a user's typed code reads the public API: checked by mypy --strict in
tests/test_public_api.py (not run)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from google.protobuf.wrappers_pb2 import Int64Value, StringValue

import actrhost
from actrhost import Actor, ActrId, Context, DataStream, Dest, MediaSample, rpc


class Proxy(Actor):
    @rpc("typed.Proxy.Forward")
    async def forward(self, ctx: Context, request: bytes) -> bytes:
        return await ctx.call(Dest.LOCAL, "typed.Proxy.Other", request)

    @rpc("typed.Proxy.Typed")
    async def typed(self, ctx: Context, request: StringValue) -> Int64Value:
        answer = await ctx.call(Dest.LOCAL, "typed.X.Y", request, response_type=Int64Value)
        assert_type(answer, Int64Value)
        return answer

    async def on_start(self, ctx: Context) -> None:
        async def on_chunk(chunk: DataStream, sender: ActrId) -> None:
            assert_type(chunk.sequence, int)

        async def on_sample(sample: MediaSample, sender: ActrId | None) -> None:
            pass

        await ctx.register_stream("frames", on_chunk)
        await ctx.register_media_track("cam", on_sample)


async def script() -> bytes:
    async with actrhost.connect("node.toml") as shell:

        @shell.on_rpc("typed.Shell.Hello")
        async def hello(request: bytes, caller: ActrId) -> bytes:
            return request

        # The decorator keeps the handler's own type.
        served = assert_type(hello(b"x", ActrId.parse("1@1:a+b")), Coroutine[Any, Any, bytes])
        served.close()
        typed = await shell.call("proxy", "typed.Proxy.Typed", b"", response_type=StringValue)
        assert_type(typed, StringValue)
        return await shell.call("proxy", "typed.Proxy.Forward", b"x", timeout=2)
