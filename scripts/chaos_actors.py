"""Actors for ``chaos_remote.py``: a Driver that sends numbered stream chunks and tells
to a Sink on another node, and calls it (discovering it each time) meanwhile, and the
Sink that records what arrived."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from typing import Any

from actrhost import Actor, ActrType, Context, DataStream, Dest, rpc

SINK = ActrType("chaos", "Sink")
STREAM_ID = "chaos"


def _summary(numbers: list[int]) -> dict[str, Any]:
    """What arrived of 0, 1, 2, ...: how many, once each?, in order?, and the first
    ranges missing below the highest ("0-2784": what a killed receiver had taken; a
    range further on: lost on the way)."""
    seen = set(numbers)
    top = max(numbers, default=-1)
    missing: list[str] = []
    start = None
    for n in range(top + 2):
        if n not in seen and n <= top:
            start = n if start is None else start
        elif start is not None:
            missing.append(f"{start}-{n - 1}" if n - 1 > start else str(start))
            start = None
    return {
        "count": len(numbers),
        "duplicates": len(numbers) - len(seen),
        "in_order": numbers == sorted(numbers),
        "missing": missing[:5],
    }


class Sink(Actor):
    """Keeps the number of each chunk of stream ``chaos`` and each ``Note`` tell."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.notes: list[int] = []
        self.corrupt = 0  # chunks whose payload does not match its checksum

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream(STREAM_ID, self._on_chunk)

    async def _on_chunk(self, chunk: DataStream, sender: object) -> None:
        if zlib.crc32(bytes(chunk.payload)) != int(chunk.metadata.get("crc", "-1")):
            self.corrupt += 1
        self.chunks.append(chunk.sequence)

    @rpc("chaos.Sink.Note")
    async def note(self, ctx: Context, request: bytes) -> None:
        self.notes.append(int(request))

    @rpc("chaos.Sink.Echo")
    async def echo(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("chaos.Sink.Report")
    async def report(self, ctx: Context, request: bytes) -> bytes:
        summary = {"chunks": _summary(self.chunks), "tells": _summary(self.notes)}
        return json.dumps({**summary, "corrupt": self.corrupt}).encode()


class Driver(Actor):
    """On ``chaos.Driver.Run``: sends ``count`` chunks of ``size`` bytes (reliable lane),
    each followed by a tell with its number, to the Sink; says which were accepted."""

    @rpc("chaos.Driver.Run")
    async def run(self, ctx: Context, request: bytes) -> bytes:
        params = json.loads(request)
        calls = asyncio.ensure_future(
            _calls(ctx, params["call_every_s"], params["call_timeout_s"], params["calls_for_s"])
        )
        try:
            sent = await self._send(ctx, params)
        finally:
            called = await calls
        return json.dumps({**sent, "calls": called}).encode()

    async def _send(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        sink = Dest.actor(await ctx.discover(SINK))
        accepted: dict[str, list[int]] = {"chunks": [], "tells": []}
        errors: dict[str, int] = {}
        for n in range(params["count"]):
            payload = n.to_bytes(8, "big") * (params["size"] // 8)
            chunk = DataStream(STREAM_ID, n, payload, {"crc": str(zlib.crc32(payload))})
            for kind, send in (
                ("chunks", ctx.send_data_stream(sink, chunk, timeout=params["timeout_s"])),
                ("tells", ctx.tell(sink, "chaos.Sink.Note", b"%d" % n)),
            ):
                try:
                    await send
                except Exception as exc:  # counted by kind: the report says what failed
                    why = f"{type(exc).__name__}: {exc}"[:120]
                    errors[why] = errors.get(why, 0) + 1
                else:
                    accepted[kind].append(n)
        # Whether a fault came while the stream went or after it: the report says.
        return {"accepted": accepted, "errors": errors, "sending_s": time.monotonic() - started}


async def _calls(ctx: Context, every_s: float, timeout_s: float, for_s: float) -> dict[str, Any]:
    """Discover the Sink and call it every ``every_s`` for ``for_s`` seconds: how many
    went through, the errors by kind, the slowest of each (a call must never hang)."""
    ok = 0
    errors: dict[str, int] = {}
    slowest = {"ok_s": 0.0, "failed_s": 0.0}
    until = time.monotonic() + for_s
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            sink = Dest.actor(await ctx.discover(SINK))
            await ctx.call(sink, "chaos.Sink.Echo", b"ping", timeout=timeout_s)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"[:100]
            errors[why] = errors.get(why, 0) + 1
            kind = "failed_s"
        else:
            ok += 1
            kind = "ok_s"
        slowest[kind] = round(max(slowest[kind], time.monotonic() - started), 2)
        await asyncio.sleep(every_s)
    return {"ok": ok, "errors": errors, "slowest": slowest}
