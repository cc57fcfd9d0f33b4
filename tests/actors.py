"""Actors used by the tests (imported by worker processes from this folder)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from google.protobuf.wrappers_pb2 import Int64Value, StringValue

from actrhost import (
    Actor,
    ActrError,
    ActrId,
    ActrType,
    Context,
    DataStream,
    Dest,
    MediaSample,
    NotFound,
    PayloadType,
    Unavailable,
    rpc,
)


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
            [
                str(ctx.self_id),
                str(ctx.caller_id),
                ctx.request_id,
                ctx.traceparent,
                ctx.tracestate,
                str(os.getpid()),
            ]
        ).encode()

    @rpc("test.Echo.Repeat")
    async def repeat(self, ctx: Context, request: bytes) -> bytes:
        return b"r" * int(request)

    @rpc("test.Echo.Upper")
    async def upper(self, ctx: Context, request: StringValue) -> StringValue:
        return StringValue(value=request.value.upper())

    @rpc("test.Echo.CallShell")
    async def call_shell(self, ctx: Context, request: bytes) -> bytes:
        return await ctx.call(Dest.SHELL, "test.Shell.Hello", request, timeout=5)


class SlowStart(Echo):
    """An Echo whose ``on_start`` takes 1.5 s: it stays "starting" that long."""

    async def on_start(self, ctx: Context) -> None:
        await asyncio.sleep(1.5)


class FindsAtStart(Actor):
    """Discovers the type in its ``find`` setting from ``on_start``, as the README's
    example client does."""

    async def on_start(self, ctx: Context) -> None:
        self.found = await ctx.discover(self.settings["find"])

    @rpc("test.Finder.Found")
    async def found_id(self, ctx: Context, request: bytes) -> bytes:
        return str(self.found).encode()


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

    @rpc("test.Relay.ToId")
    async def to_id(self, ctx: Context, request: bytes) -> bytes:
        target_id, route, payload = request.split(b" ", 2)
        target = ActrId.parse(target_id.decode())
        return await ctx.call(Dest.actor(target), route.decode(), payload, timeout=15)

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

    @rpc("test.Relay.TellUntilRefused")
    async def tell_until_refused(self, ctx: Context, request: bytes) -> bytes:
        # A tell and a stream chunk to the actor named, every 20 ms, until one raises:
        # "<sends> <error type>: <message>", or "never" after 10 s.
        target = Dest.actor(ActrId.parse(request.decode()))
        for n in range(500):
            try:
                if n % 2:
                    await ctx.tell(target, "test.Echo.Say", b"%d" % n)
                else:
                    await ctx.send_data_stream(target, DataStream("s", n, b"x"), timeout=1)
            except ActrError as exc:
                return f"{n} {type(exc).__name__}: {exc.message}".encode()
            await asyncio.sleep(0.02)
        return b"never"


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

    @rpc("test.Recorder.Busy")
    async def busy(self, ctx: Context, request: bytes) -> bytes:
        """Computes for ``request`` ms without awaiting, then notes "busy"."""
        until = time.monotonic() + float(request) / 1000
        while time.monotonic() < until:
            pass
        self.seen.append("busy")
        return b"ok"

    @rpc("test.Recorder.Urgent", payload_type=PayloadType.RPC_SIGNAL)
    async def urgent(self, ctx: Context, request: bytes) -> bytes:
        self.seen.append("urgent:" + request.decode())
        return b"ok"

    @rpc("test.Recorder.Seen")
    async def seen_list(self, ctx: Context, request: bytes) -> bytes:
        return ",".join(self.seen).encode()

    @rpc("test.Recorder.Heads")
    async def heads(self, ctx: Context, request: bytes) -> bytes:
        """The first ``request`` characters of each note (long notes, short answer)."""
        return ",".join(seen[: int(request)] for seen in self.seen).encode()

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

    @rpc("test.Hooks.Mark")
    async def mark(self, ctx: Context, request: bytes) -> bytes:
        _mark(request.decode())
        return b""


def _mark(text: str) -> None:
    marker = os.environ.get("ACTRHOST_TEST_MARKERS")
    if marker:
        with open(marker, "a") as f:
            f.write(text + "\n")


class SlowWork(Actor):
    """Handles each tell and stream chunk in 5 ms, marking it: a backlog builds up."""

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream("s", self.chunk)

    async def chunk(self, chunk: DataStream, sender: ActrId | None) -> None:
        await asyncio.sleep(0.005)
        _mark(f"chunk {chunk.sequence}")

    @rpc("test.Slow.Note")
    async def note(self, ctx: Context, request: bytes) -> bytes:
        await asyncio.sleep(0.005)
        _mark(f"tell {request.decode()}")
        return b""


class StuckStart(Echo):
    """An on_start that takes a minute, marking whether it ended by cancellation."""

    async def on_start(self, ctx: Context) -> None:
        _mark(f"start began {ctx.self_id}")
        try:
            await asyncio.sleep(60)
        finally:
            _mark(f"start ended {ctx.self_id}")


class BlockedStart(Echo):
    """An on_start that blocks its event loop for a minute (no await to cancel)."""

    async def on_start(self, ctx: Context) -> None:
        time.sleep(60)


class Blocking(Echo):
    """A handler that blocks its event loop, after a stream chunk to itself through a
    ring (a segment of its own process, written and read)."""

    @rpc("test.Blocking.Sleep")
    async def block(self, ctx: Context, request: bytes) -> bytes:
        await ctx.send_data_stream(Dest.LOCAL, DataStream("to-self", 0, bytes(1 << 20)))
        time.sleep(float(request))
        return b"slept"


class Hog(Actor):
    """Stream callbacks that work 1 ms each and never await (plain functions); records
    the order in which chunks of streams "a" and "b" were handled."""

    def __init__(self) -> None:
        self.order: list[str] = []

    async def on_start(self, ctx: Context) -> None:
        for stream_id in ("a", "b"):
            await ctx.register_stream(stream_id, self._on_chunk)

    def _on_chunk(self, chunk: DataStream, sender: object) -> None:
        busy_until = time.perf_counter() + 0.001
        while time.perf_counter() < busy_until:
            pass
        self.order.append(chunk.stream_id)

    @rpc("test.Hog.Order")
    async def handled(self, ctx: Context, request: bytes) -> bytes:
        return "".join(self.order).encode()


class SlowStop(Echo):
    """An on_stop that takes a minute, or (setting ``until_file``) until that file exists,
    or (setting ``stop_s``) that many seconds."""

    async def on_stop(self, ctx: Context) -> None:
        until_file = self.settings.get("until_file")
        ends_at = time.monotonic() + float(self.settings.get("stop_s", 60))
        while time.monotonic() < ends_at:
            if until_file and os.path.exists(until_file):
                return
            await asyncio.sleep(0.02)


class CancelsItsTaskAtStop(Echo):
    """The usual clean-up in on_stop: cancel a task, then await it, without suppressing
    its CancelledError."""

    async def on_start(self, ctx: Context) -> None:
        self.ticker = asyncio.ensure_future(asyncio.sleep(3600))

    async def on_stop(self, ctx: Context) -> None:
        self.ticker.cancel()
        await self.ticker


class FailsInInit(Actor):
    """Raises in ``__init__``."""

    def __init__(self) -> None:
        raise ValueError(f"no such mode {self.settings.get('mode')!r}")


class CrashOnStart(Actor):
    """Fails in on_start: a crash loop for the restart-limit tests."""

    async def on_start(self, ctx: Context) -> None:
        raise RuntimeError("cannot start")


class OneShot(Actor):
    """A job: exits cleanly 0.2 s after it started (with restart = "transient": done)."""

    async def on_start(self, ctx: Context) -> None:
        asyncio.get_running_loop().call_later(0.2, os._exit, 0)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class Oddly(Actor):
    """Fails in ways that once left the caller without an answer."""

    @rpc("test.Oddly.Fail")
    async def fail(self, ctx: Context, request: bytes) -> bytes:
        if request == b"surrogate":  # a file name that is not UTF-8, as os.fsdecode gives it
            name = os.fsdecode(b"/tmp/caf\xe9.txt")
            raise NotFound(f"no file {name}")
        if request == b"unprintable":
            raise _Unprintable()
        if request == b"long":
            raise ValueError("x" * 5_000_000)
        if request == b"generator-exit":
            raise GeneratorExit("from a handler")
        if request == b"exit-0":
            sys.exit(0)
        return request

    @rpc("test.Oddly.CallLater")
    async def call_later(self, ctx: Context, request: bytes) -> bytes:
        """Keeps this request's ctx for a call made after the request's deadline."""

        async def later() -> None:
            await asyncio.sleep(float(request))
            try:
                await ctx.call(Dest.LOCAL, "test.Oddly.Fail", b"x", timeout=5)
                self.later = "answered"
            except Exception as exc:
                self.later = f"{type(exc).__name__}: {exc}"

        self.task = asyncio.ensure_future(later())
        return b"later"

    @rpc("test.Oddly.Later")
    async def later_result(self, ctx: Context, request: bytes) -> bytes:
        return getattr(self, "later", "").encode()


class ExitSoon(Actor):
    """Exits cleanly or with an error right after starting (transient/temporary tests)."""

    @rpc("test.Exit.Now")
    async def now(self, ctx: Context, request: bytes) -> bytes:
        asyncio.get_running_loop().call_later(0.05, os._exit, int(request))
        return b"bye"

    @rpc("test.Exit.LeavingAChild")
    async def leaving_a_child(self, ctx: Context, request: bytes) -> bytes:
        # Start a child that outlives this worker: it is orphaned when we exit. In a
        # session of its own, it is not in the worker's process group, which the
        # supervisor ends once the worker exited: it is adopted, and reaped as it exits.
        import subprocess

        child = subprocess.Popen(["sleep", request.decode()], start_new_session=True)
        asyncio.get_running_loop().call_later(0.05, os._exit, 1)
        return str(child.pid).encode()


class StreamSink(Actor):
    """Receives streams and media; records what arrived (checksums, order, arrays)."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[dict]] = {}
        self.delay_s = 0.0
        self.block_s = 0.0
        self.raise_on: set[int] = set()

    async def on_start(self, ctx: Context) -> None:
        for stream_id in ("s0", "s1", "s2", "s3", "lossy", "reliable"):
            await ctx.register_stream(stream_id, self._on_chunk)
        await ctx.register_media_track("video", self._on_sample)

    async def _on_chunk(self, chunk, sender) -> None:
        import zlib

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.block_s:  # a callback that never yields: its worker reads no socket meanwhile
            time.sleep(self.block_s)
        payload = chunk.payload
        record = {
            "seq": chunk.sequence,
            "crc": zlib.crc32(payload),
            "len": payload.nbytes,
            "type": type(payload).__name__,
            "readonly": bool(
                payload.readonly if isinstance(payload, memoryview) else not payload.flags.writeable
            ),
            "sender": str(sender),
            "meta": chunk.metadata,
        }
        if hasattr(payload, "dtype"):
            record["dtype"] = str(payload.dtype)
            record["shape"] = list(payload.shape)
        if payload.nbytes:  # touch first and last byte of the zero-copy view
            _ = bytes(memoryview(payload).cast("B")[:1]) + bytes(memoryview(payload).cast("B")[-1:])
        self.chunks.setdefault(chunk.stream_id, []).append(record)
        if chunk.sequence in self.raise_on:
            raise RuntimeError(f"callback fails on {chunk.sequence}")

    async def _on_sample(self, sample, sender) -> None:
        import zlib

        self.chunks.setdefault("video", []).append(
            {
                "ts": sample.timestamp,
                "codec": sample.codec,
                "kind": str(sample.media_type),
                "crc": zlib.crc32(sample.data),
                "shape": list(getattr(sample.data, "shape", [])),
            }
        )

    @rpc("test.Sink.Hold")
    async def hold(self, ctx: Context, request: bytes) -> bytes:
        # Holds a handler slot for a while; says how many chunks arrived meanwhile.
        before = sum(len(c) for c in self.chunks.values())
        await asyncio.sleep(float(request))
        return str(sum(len(c) for c in self.chunks.values()) - before).encode()

    @rpc("test.Sink.Sleep")
    async def sleep(self, ctx: Context, request: bytes) -> bytes:
        """Holds a handler slot for ``request`` seconds (awaiting)."""
        await asyncio.sleep(float(request))
        return b"ok"

    @rpc("test.Sink.Results")
    async def results(self, ctx: Context, request: bytes) -> bytes:
        import json

        return json.dumps(self.chunks).encode()

    @rpc("test.Sink.Configure")
    async def configure(self, ctx: Context, request: bytes) -> bytes:
        import json

        params = json.loads(request)
        self.delay_s = params.get("delay_s", 0.0)
        self.block_s = params.get("block_s", 0.0)
        self.raise_on = set(params.get("raise_on", []))
        self.chunks.clear()
        if params.get("unregister"):
            await ctx.unregister_stream(params["unregister"])
        return b"ok"


class SlowStartSink(StreamSink):
    """A StreamSink whose ``on_start`` takes 1.5 s: it stays "starting" that long."""

    async def on_start(self, ctx: Context) -> None:
        await asyncio.sleep(1.5)
        await super().on_start(ctx)


class StreamSource(Actor):
    """Sends streams on request and returns the checksums of what it sent."""

    @rpc("test.Source.Send")
    async def send(self, ctx: Context, request: bytes) -> bytes:
        import json
        import zlib

        import numpy as np

        from actrhost import DataStream, MediaSample, PayloadType

        params = json.loads(request)
        if params.get("to_shell"):
            target = Dest.SHELL
        elif params.get("target_id"):
            target = Dest.actor(ActrId.parse(params["target_id"]))
        else:
            target = Dest.actor(await ctx.discover(ActrType.parse(params["target"])))
        rng = np.random.default_rng(params.get("seed", 0))
        lane = PayloadType[params.get("lane", "STREAM_RELIABLE")]
        sent = []
        for n, size in enumerate(params.get("sizes", [])):
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            kind = params.get("kind", "bytes")
            payload = memoryview(data) if kind == "memoryview" else data
            stream_id = (
                params.get("stream", "s0")
                if not params.get("streams")
                else params["streams"][n % len(params["streams"])]
            )
            ok = await ctx.send_data_stream(
                target,
                DataStream(stream_id, n, payload, {"n": str(n)}),
                payload_type=lane,
                timeout=params.get("timeout", 30.0),
            )
            sent.append(
                {"seq": n, "crc": zlib.crc32(data), "len": size, "ok": ok, "stream": stream_id}
            )
            if params.get("pause_s"):  # each chunk its own message, not one batch
                await asyncio.sleep(params["pause_s"])
            if params.get("block_s"):  # time for the receiver, without a loop turn here
                time.sleep(params["block_s"])
        for n, spec in enumerate(params.get("arrays", [])):
            array = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
            if spec.get("transpose"):
                array = array.T
            await ctx.send_data_stream(target, DataStream("s1", n, array))
            sent.append(
                {
                    "seq": n,
                    "crc": zlib.crc32(np.ascontiguousarray(array).tobytes()),
                    "dtype": str(array.dtype),
                    "shape": list(array.shape),
                }
            )
        for n in range(params.get("frames", 0)):
            if n:
                # A camera's pace, not a burst: media is newest-wins, so a burst may leave
                # one frame (docs/gateway.md, Media).
                await asyncio.sleep(params.get("frame_interval_s", 1 / 30))
            frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            ok = await ctx.send_media_sample(
                target, "video", MediaSample(frame, n * 3000, "raw", "video")
            )
            sent.append({"ts": n * 3000, "crc": zlib.crc32(frame.tobytes()), "ok": ok})
        return json.dumps(sent).encode()


class LoadTarget(Actor):
    """For tests/test_load.py: echoes, fails by turns, stalls once, dies on cue, sinks streams."""

    def __init__(self) -> None:
        self.mixed = 0
        self.first_stall_call: float | None = None
        self.stalled = False
        self.served = 0
        self.chunks = 0

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream("load", self._on_chunk)

    async def _on_chunk(self, chunk, sender) -> None:
        self.chunks += 1

    @rpc("test.Load.Say")
    async def say(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("test.Load.Sleep")
    async def sleep(self, ctx: Context, request: bytes) -> bytes:
        await asyncio.sleep(float(request))
        return b"slept"

    @rpc("test.Load.Block")
    async def block(self, ctx: Context, request: bytes) -> bytes:
        time.sleep(float(request))  # reads nothing meanwhile: senders wait for room
        return b"blocked"

    @rpc("test.Load.Mixed")
    async def mixed_results(self, ctx: Context, request: bytes) -> bytes:
        # By turns: ok, 500, 503, 404 — so a run of 4k calls has exactly k of each.
        self.mixed += 1
        turn = self.mixed % 4
        if turn == 2:
            raise ValueError("turn for a 500")
        if turn == 3:
            raise Unavailable("turn for a 503")
        if turn == 0:
            from actrhost import NotFound

            raise NotFound("turn for a 404")
        return request

    @rpc("test.Load.StallOnce")
    async def stall_once(self, ctx: Context, request: bytes) -> bytes:
        # Request "S@T": T seconds after the first call, block the whole actor for S seconds
        # (a synchronous sleep, like a long GC pause), once.
        import time

        stall_s, _, after_s = request.decode().partition("@")
        now = time.monotonic()
        if self.first_stall_call is None:
            self.first_stall_call = now
        if not self.stalled and now - self.first_stall_call >= float(after_s):
            self.stalled = True
            time.sleep(float(stall_s))
        return b"ok"

    @rpc("test.Load.ResetStall")
    async def reset_stall(self, ctx: Context, request: bytes) -> bytes:
        self.first_stall_call = None
        self.stalled = False
        return b"ok"

    @rpc("test.Load.DieAfter")
    async def die_after(self, ctx: Context, request: bytes) -> bytes:
        # Answer the N-th call, then exit the worker process at once (a crash).
        self.served += 1
        if self.served > int(request):
            # Dispatched before the exit came (two calls read at once, under load): it
            # must not be answered either.
            await asyncio.Event().wait()
        if self.served == int(request):
            asyncio.get_running_loop().call_soon(os._exit, 1)
        return b"ok"


class TwiceServed(Actor):
    """Serves one route key with two methods: refused by config checks."""

    @rpc("test.Twice.Say")
    async def say(self, ctx: Context, request: bytes) -> bytes:
        return request

    @rpc("test.Twice.Say")
    async def say_again(self, ctx: Context, request: bytes) -> bytes:
        return request


@dataclass
class Retry:
    """A nested settings table: ``[actor.settings.retry]``."""

    attempts: int = 3
    backoff_s: float = 0.1


@dataclass
class ConfiguredSettings:
    """Every kind of field ``_settings.py`` converts."""

    target: str
    mode: Literal["fast", "slow"] = "fast"
    ratio: float = 1.0
    verbose: bool = False
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    retry: Retry = field(default_factory=Retry)
    note: str | None = None


class Configured(Actor):
    """Reports the settings it was given, typed."""

    settings: ConfiguredSettings

    def __init__(self) -> None:
        self.seen_in_init = f"{self.name} {self.actr_type} {self.settings.mode}"

    @rpc("test.Configured.Settings")
    async def report(self, ctx: Context, request: bytes) -> bytes:
        return json.dumps(
            {
                **asdict(self.settings),
                "class": type(self.settings).__name__,
                "seen_in_init": self.seen_in_init,
            }
        ).encode()


class Untyped(Actor):
    """Reports the settings table it was given as it is (no annotation)."""

    @rpc("test.Untyped.Settings")
    async def report(self, ctx: Context, request: bytes) -> bytes:
        return json.dumps(
            {"settings": dict(self.settings), "mapping": type(self.settings).__name__}
        ).encode()


class Quirks(Actor):
    """Does what users get wrong: tells itself from on_start, answers what cannot be
    encoded, passes an ActrId where a Dest belongs."""

    def __init__(self) -> None:
        self.ticks = 0
        self.early_chunks: list[tuple[int, int]] = []

    async def on_start(self, ctx: Context) -> None:
        await ctx.register_stream("early", self._on_early_chunk)
        # Handled once on_start returns, not lost.
        await ctx.tell(Dest.actor(ctx.self_id), "test.Quirks.Tick", b"")
        # So are stream chunks: a small one inline, a large one through the ring.
        await ctx.send_data_stream(Dest.actor(ctx.self_id), DataStream("early", 0, b"x"))
        big = DataStream("early", 1, b"y" * (1 << 20))
        await ctx.send_data_stream(Dest.actor(ctx.self_id), big)
        await asyncio.sleep(0.3)  # all arrive while on_start still runs

    async def _on_early_chunk(self, chunk: DataStream, sender: ActrId | None) -> None:
        self.early_chunks.append((chunk.sequence, len(chunk.payload)))

    @rpc("test.Quirks.EarlyChunks")
    async def early_chunks_seen(self, ctx: Context, request: bytes) -> bytes:
        return json.dumps(self.early_chunks).encode()

    @rpc("test.Quirks.Tick")
    async def tick(self, ctx: Context, request: bytes) -> None:
        self.ticks += 1

    @rpc("test.Quirks.Ticks")
    async def ticks_seen(self, ctx: Context, request: bytes) -> bytes:
        return str(self.ticks).encode()

    @rpc("test.Quirks.BadAnswer")
    async def bad_answer(self, ctx: Context, request: bytes) -> bytes:
        return "a str is no payload"  # type: ignore[return-value]

    @rpc("test.Quirks.NoAwait")
    async def no_await(self, ctx: Context, request: bytes) -> bytes:
        return asyncio.sleep(0, b"forgot to await")  # type: ignore[return-value]

    @rpc("test.Quirks.IdAsDest")
    async def id_as_dest(self, ctx: Context, request: bytes) -> bytes:
        try:
            await ctx.call(ctx.self_id, "test.Quirks.Ticks")  # type: ignore[arg-type]
        except TypeError as exc:
            return str(exc).encode()
        return b"no TypeError"

    @rpc("test.Quirks.EmptyNames")
    async def empty_names(self, ctx: Context, request: bytes) -> bytes:
        errors = []
        for attempt in (
            ctx.call(Dest.LOCAL, ""),
            ctx.tell(Dest.LOCAL, ""),
            ctx.send_data_stream(Dest.LOCAL, DataStream("", 0, b"x")),
            ctx.send_media_sample(Dest.LOCAL, "", MediaSample(b"x")),
        ):
            try:
                await attempt
            except ValueError as exc:
                errors.append(str(exc))
        return json.dumps(errors).encode()

    @rpc("test.Quirks.Spawn")
    async def spawn(self, ctx: Context, request: bytes) -> bytes:
        import subprocess

        # Started and never waited for: the node must end it when it stops. b"tree": a
        # shell with two children of its own; b"session": in a session of its own (as a
        # daemon), out of reach of what ends the worker's process group; b"fork": as that,
        # and a copy of the worker, not another program.
        if request == b"fork":  # forked, in a session of its own, and never exec'd
            child = os.fork()
            if child == 0:
                os.setsid()
                time.sleep(300)
                os._exit(0)
            return str(child).encode()
        command = ["sh", "-c", "sleep 300 & sleep 300"] if request == b"tree" else ["sleep", "300"]
        session = request == b"session"
        return str(subprocess.Popen(command, start_new_session=session).pid).encode()

    @rpc("test.Quirks.RaiseCancelled")
    async def raise_cancelled(self, ctx: Context, request: bytes) -> bytes:
        waiter = asyncio.get_running_loop().create_future()
        waiter.cancel()
        return await waiter  # a future of its own was cancelled: not a stop of the actor


class DeafStart(Echo):
    """An on_start that swallows its cancellation and goes on waiting."""

    async def on_start(self, ctx: Context) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
