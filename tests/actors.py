"""Actors used by the tests (imported by worker processes from this folder)."""

from __future__ import annotations

import asyncio
import os

from google.protobuf.wrappers_pb2 import Int64Value, StringValue

from actrhost import Actor, ActrType, Context, Dest, PayloadType, Unavailable, rpc


class Echo(Actor):
    """Echoes, fails, sleeps, reports its context."""

    @rpc("test.Echo.Say")
    async def say(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("test.Echo.Fail")
    async def fail(self, ctx: Context, request: bytes) -> bytes:
        raise ValueError(f"boom: {request.decode()}")

    @rpc("test.Echo.Unavailable")
    async def unavailable(self, ctx: Context, request: bytes) -> bytes:
        raise Unavailable("not today")

    @rpc("test.Echo.Sleep")
    async def sleep(self, ctx: Context, request: bytes) -> bytes:
        await asyncio.sleep(float(request))
        return b"slept"

    @rpc("test.Echo.Whoami")
    async def whoami(self, ctx: Context, request: bytes) -> bytes:
        return "|".join(
            [str(ctx.self_id), str(ctx.caller_id), ctx.request_id, ctx.traceparent, ctx.tracestate,
             str(os.getpid())]
        ).encode()

    @rpc("test.Echo.Upper")
    async def upper(self, ctx: Context, request: StringValue) -> StringValue:
        return StringValue(value=request.value.upper())

    @rpc("test.Echo.CallShell")
    async def call_shell(self, ctx: Context, request: bytes) -> bytes:
        return await ctx.call(Dest.SHELL, "test.Shell.Hello", request, timeout=5)


class Relay(Actor):
    """Calls another actor on behalf of its caller (A -> B -> A, deadlines, traces)."""

    @rpc("test.Relay.Forward")
    async def forward(self, ctx: Context, request: bytes) -> bytes:
        target_type, route, payload = request.split(b" ", 2)
        target = await ctx.discover(ActrType.parse(target_type.decode()))
        return await ctx.call(Dest.actor(target), route.decode(), payload)

    @rpc("test.Relay.Back")
    async def back(self, ctx: Context, request: bytes) -> bytes:
        # A -> B -> A: call back into whoever called us.
        assert ctx.caller_id is not None
        return await ctx.call(Dest.actor(ctx.caller_id), "test.Relay.Leaf", request)

    @rpc("test.Relay.Leaf")
    async def leaf(self, ctx: Context, request: bytes) -> bytes:
        return b"leaf:" + request

    @rpc("test.Relay.PingPong")
    async def ping_pong(self, ctx: Context, request: bytes) -> bytes:
        peer = await ctx.discover(ActrType.parse(request.decode()))
        return await ctx.call(Dest.actor(peer), "test.Relay.Back", b"x")

    @rpc("test.Relay.Local")
    async def local(self, ctx: Context, request: bytes) -> bytes:
        return await ctx.call(Dest.LOCAL, "test.Relay.Leaf", request)


class Recorder(Actor):
    """Records the order in which it handled messages; tells count into it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @rpc("test.Recorder.Block")
    async def block(self, ctx: Context, request: bytes) -> bytes:
        await asyncio.sleep(float(request))
        self.seen.append("block")
        return b"ok"

    @rpc("test.Recorder.Note")
    async def note(self, ctx: Context, request: bytes) -> bytes:
        self.seen.append(request.decode())
        return b"ok"

    @rpc("test.Recorder.Urgent", payload_type=PayloadType.RPC_SIGNAL)
    async def urgent(self, ctx: Context, request: bytes) -> bytes:
        self.seen.append("urgent:" + request.decode())
        return b"ok"

    @rpc("test.Recorder.Seen")
    async def seen_list(self, ctx: Context, request: bytes) -> bytes:
        return ",".join(self.seen).encode()

    @rpc("test.Recorder.Count")
    async def count(self, ctx: Context, request: Int64Value) -> Int64Value:
        self.seen.append(str(request.value))
        return Int64Value(value=len(self.seen))


class Hooks(Actor):
    """Writes marker files from on_start / on_stop so tests can see the hooks ran."""

    async def on_start(self, ctx: Context) -> None:
        marker = os.environ.get("ACTRHOST_TEST_MARKERS")
        if marker:
            with open(marker, "a") as f:
                f.write(f"start {ctx.self_id}\n")

    async def on_stop(self, ctx: Context) -> None:
        marker = os.environ.get("ACTRHOST_TEST_MARKERS")
        if marker:
            with open(marker, "a") as f:
                f.write(f"stop {ctx.self_id}\n")

    @rpc("test.Hooks.Sleep")
    async def sleep(self, ctx: Context, request: bytes) -> bytes:
        await asyncio.sleep(float(request))
        return b"done"


class CrashOnStart(Actor):
    """Fails in on_start: a crash loop for the restart-limit tests."""

    async def on_start(self, ctx: Context) -> None:
        raise RuntimeError("cannot start")


class ExitSoon(Actor):
    """Exits cleanly or with an error right after starting (transient/temporary tests)."""

    @rpc("test.Exit.Now")
    async def now(self, ctx: Context, request: bytes) -> bytes:
        asyncio.get_running_loop().call_later(0.05, os._exit, int(request))
        return b"bye"
