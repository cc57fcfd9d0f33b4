"""One generator process of ``actrhost load``: a Shell that sends requests and measures them.

The parent starts one process per :class:`WorkerPlan` (``multiprocessing`` spawn) and
talks to it over a pipe:

    worker -> parent  {"kind": "ready"}            attached, target looked up
    parent -> worker  {"kind": "start", "t0": T}   T on the shared monotonic clock
    worker -> parent  {"kind": "progress", ...}    every progress_interval_s
    parent -> worker  {"kind": "stop"}             finish early (Ctrl-C); EOF does the same
    worker -> parent  {"kind": "result", ...}      histograms, counts, timeline
    worker -> parent  {"kind": "fatal", "message"} could not run at all

Warm-up runs from T to T + warmup_s; requests *scheduled* before its end are sent but not
counted (those still unsent at its end are left out: a generator behind schedule must not
delay the measured requests with them). Closed loop: ``concurrency`` loops, each sends
its next request when the last one is answered. Open loop: request k is due at
T + offset + k / rate, whatever happened to the earlier ones, and its latency is taken
from that due time — if the node stalls, the requests that should have gone out
meanwhile carry the stall in their latency (no coordinated omission, as in wrk2).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import selectors
import signal
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from .._histogram import Histogram
from ._spec import CALL, TELL, WorkerPlan

#: Open loop: requests launched back to back (when behind schedule) before yielding to
#: the loop, so answers keep being read while catching up.
CATCH_UP_BURST = 64
#: Open loop: warm-up requests this late when the warm-up is over are not sent at all.
WARMUP_LATE_S = 0.5
#: How long in-flight requests may take after the end, beyond their own timeout.
DRAIN_GRACE_S = 1.0
#: The error code of an open-loop request still unsent when the run ended.
NOT_SENT = "not_sent"
#: How often a generator checks that its node is still there.
NODE_CHECK_S = 0.1

Op = Callable[[], Awaitable[bool]]


class _Interval:
    """One timeline point: requests that completed in one ``interval_s``."""

    __slots__ = ("errors", "latency", "ok")

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.latency = Histogram()


class Generator:
    """Runs one :class:`WorkerPlan` against a node and reports over ``conn``."""

    def __init__(self, plan: WorkerPlan, conn: Connection) -> None:
        self.plan = plan
        self.conn = conn
        self.latency = Histogram()  # successful requests, from the scheduled send time
        self.service = Histogram()  # successful requests, from the actual send time
        self.lag = Histogram()  # actual - scheduled send time (the generator's own delay)
        self.error_latency = Histogram()
        self.sent = 0
        self.ok = 0
        # Successes completed inside the measured window, whenever they were sent: the
        # throughput. A warm-up request answered after the warm-up counts here (not in
        # the latency), or a closed loop of slow calls would look slower than it is.
        self.ok_in_window = 0
        self.warmup_sent = 0
        self.warmup_errors = 0
        self.bytes_ok = 0
        self.errors: dict[str, int] = {}
        self.error_examples: dict[str, str] = {}
        self.timeline: dict[int, _Interval] = {}
        self.last_done = 0.0
        self.inflight = 0
        self.stopping = False
        #: The parent is gone: nobody waits for a result any more (its pipe closed).
        self.orphaned = False
        self.node_gone = ""  # why the run ended early: its node went away
        self._shell: Any = None  # set once attached
        self._next_k = 0  # the open loop's next request (its index in the schedule)
        self._quota = plan.total
        self._room = asyncio.Event()
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.t0 = self.measure_start = 0.0
        self.end: float | None = None

    # -- pipe to the parent ------------------------------------------------------------

    def _on_pipe(self) -> None:
        try:
            while self.conn.poll():
                self._inbox.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            # The parent is gone: stop as if told to, and never touch the pipe again.
            self._loop.remove_reader(self.conn.fileno())
            self._inbox.put_nowait({"kind": "stop", "eof": True})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, OSError):
            self.stopping = True

    async def _watch_parent(self, main: asyncio.Task[None]) -> None:
        while True:
            message = await self._inbox.get()
            if message.get("kind") == "stop":
                self.stopping = True
                self.orphaned = bool(message.get("eof"))
                if self.plan.rate_per_s is not None or self.orphaned:
                    # Stop the schedule; the requests in flight still finish (or time out),
                    # unless nobody waits for their results: the parent was killed, and
                    # this process held its rings for up to twice --timeout (QA).
                    main.cancel()
                return  # closed loops see `stopping` once their current request ends

    async def _watch_node(self, shell: Any, main: asyncio.Task[None]) -> None:
        """End the run when the node goes away: every later request would fail at once
        (hundreds of thousands of 503s in a few seconds), measuring nothing."""
        while shell.node_gone is None:
            await asyncio.sleep(NODE_CHECK_S)
        self.node_gone = shell.node_gone.message
        self.stopping = True
        main.cancel()

    # -- requests ----------------------------------------------------------------------

    def _op(self, shell: Any) -> Op:
        plan = self.plan
        target = _target(plan.target)
        payload = plan.payload
        timeout = plan.timeout_s
        route = plan.route_key
        if plan.mode == CALL:

            async def call() -> bool:
                await shell.call(target, route, payload, timeout=timeout)
                return True

            return call
        if plan.mode == TELL:

            async def tell() -> bool:
                await shell.tell(target, route, payload, timeout=timeout)
                return True

            return tell
        from .. import DataStream, PayloadType

        lane = PayloadType[plan.lane]
        sequence = itertools.count()
        stream_id = f"{plan.stream_id}"

        async def chunk() -> bool:
            return bool(
                await shell.send_data_stream(
                    target,
                    DataStream(stream_id, next(sequence), payload),
                    payload_type=lane,
                    timeout=timeout,
                )
            )

        return chunk

    async def _one(self, op: Op, scheduled: float, measured: bool) -> None:
        from .. import ActrError

        # The caller counted this request in `inflight` before scheduling it.
        clock = self._loop.time
        if measured:
            self.sent += 1
        else:
            self.warmup_sent += 1
        sent_at = clock()
        code: str | None = None
        message = ""
        try:
            if not await op():
                code, message = "dropped", "a latency-first lane dropped the chunk"
        except ActrError as exc:
            code, message = str(int(exc.code)), f"{type(exc).__name__}: {exc.message}"
        except asyncio.CancelledError:
            if measured:
                self._record(scheduled, sent_at, clock(), "cancelled", "stopped before an answer")
            raise
        except Exception as exc:
            code, message = type(exc).__name__, str(exc)
        finally:
            self.inflight -= 1
            self._room.set()
        if code is not None and self._shell.node_gone is not None:
            # Failed because the node is gone, at once (a closed loop made thousands of
            # these before the run ended, QA): the run ends, and they measure nothing.
            self.stopping = True
            self.node_gone = self._shell.node_gone.message
            if measured:
                self.sent -= 1
            else:
                self.warmup_sent -= 1
            return
        if measured:
            self._record(scheduled, sent_at, clock(), code, message)
        elif code is not None:
            self.warmup_errors += 1
        else:
            self._record_warmup_success(clock())

    def _record(
        self, scheduled: float, sent_at: float, done: float, code: str | None, message: str
    ) -> None:
        latency_ns = int((done - scheduled) * 1e9)
        index = int((done - self.measure_start) / self.plan.interval_s)
        point = self.timeline.get(index)
        if point is None:
            point = self.timeline[index] = _Interval()
        if code is None:
            self.ok += 1
            if self.end is None or done <= self.end:
                self.ok_in_window += 1
                self.bytes_ok += len(self.plan.payload)
            self.latency.record(latency_ns)
            self.service.record(int((done - sent_at) * 1e9))
            self.lag.record(int((sent_at - scheduled) * 1e9))
            point.ok += 1
            point.latency.record(latency_ns)
        else:
            self.errors[code] = self.errors.get(code, 0) + 1
            self.error_examples.setdefault(code, message[:300])
            self.error_latency.record(latency_ns)
            point.errors += 1
        if done > self.last_done:
            self.last_done = done

    def _record_warmup_success(self, done: float) -> None:
        if done < self.measure_start or (self.end is not None and done > self.end):
            return
        self.ok_in_window += 1
        self.bytes_ok += len(self.plan.payload)

    def _take_quota(self) -> bool:
        if self._quota is None:
            return True
        if self._quota <= 0:
            return False
        self._quota -= 1
        return True

    # -- the two loops -----------------------------------------------------------------

    async def _closed_slot(self, op: Op) -> None:
        clock = self._loop.time
        while not self.stopping:
            now = clock()
            if self.end is not None and now >= self.end:
                return
            measured = now >= self.measure_start
            if measured and not self._take_quota():
                return
            self.inflight += 1
            await self._one(op, now, measured)
            # A tell, a dropped latency-first chunk or an instant error completes without
            # ever suspending: give the loop its turn, or nothing else runs until the
            # end (progress, the parent's stop, the other slots, stream batch flushes,
            # the Shell's directory updates).
            await asyncio.sleep(0)

    async def _closed_loop(self, op: Op) -> None:
        await asyncio.gather(*(self._closed_slot(op) for _ in range(self.plan.concurrency)))

    async def _open_loop(self, op: Op, tasks: set[asyncio.Task[None]]) -> None:
        assert self.plan.rate_per_s is not None
        period = 1.0 / self.plan.rate_per_s
        first = self.t0 + self.plan.offset_s
        try:
            await self._schedule(op, tasks, first, period, self.plan.concurrency)
        except asyncio.CancelledError:
            self._record_not_sent(first, period)
            raise

    async def _schedule(
        self, op: Op, tasks: set[asyncio.Task[None]], first: float, period: float, cap: int
    ) -> None:
        clock = self._loop.time
        burst = 0
        k = 0
        while True:
            self._next_k = k
            scheduled = first + k * period
            if self.end is not None and scheduled >= self.end:
                return
            measured = scheduled >= self.measure_start
            if not measured and clock() >= self.measure_start + WARMUP_LATE_S:
                # A generator far behind schedule when the warm-up's time is over leaves
                # the rest of it unsent: warm-up is a time, and sending it late would delay
                # every measured request (QA: --rate 1000000 --total 5 sent a million
                # warm-up requests first, for 68 s, and measured 5 sent a minute late).
                k = max(k + 1, math.ceil((self.measure_start - first) / period))
                continue
            if measured and not self._take_quota():
                return
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                burst = 0
            elif burst >= CATCH_UP_BURST:
                await asyncio.sleep(0)
                burst = 0
            while self.inflight >= cap:
                # Held back, but still timed from `scheduled`: the wait counts as latency.
                self._room.clear()
                await self._room.wait()
            self.inflight += 1  # now, not when the task first runs: the cap must hold
            task = self._loop.create_task(self._one(op, scheduled, measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
            self._next_k = k
            burst += 1

    def _record_not_sent(self, first: float, period: float) -> None:
        """The run ended (its time was up, or Ctrl-C) while requests due by now were
        still unsent, held back by the in-flight cap (or a generator behind schedule):
        each is an error timed from its schedule (docs/load.md), not left out."""
        now = self._loop.time()
        for k in itertools.count(self._next_k):
            scheduled = first + k * period
            if scheduled > now or (self.end is not None and scheduled >= self.end):
                return
            if scheduled < self.measure_start:
                continue  # warm-up: not counted anyway
            if k > self._next_k and not self._take_quota():  # the first took its own
                return
            self.sent += 1
            self._record(scheduled, now, now, NOT_SENT, "the run ended before it could be sent")

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.plan.progress_interval_s)
            self._send(
                {
                    "kind": "progress",
                    "index": self.plan.index,
                    "sent": self.sent,
                    "ok": self.ok,
                    "errors": sum(self.errors.values()),
                    "latency": self.latency.to_dict(),
                }
            )

    # -- one run -----------------------------------------------------------------------

    async def run(self) -> None:
        """Attach, report ready, wait for the start, load, drain, report the result."""
        from .. import connect

        self._loop.add_reader(self.conn.fileno(), self._on_pipe)
        async with connect(self.plan.config) as shell:
            self._shell = shell
            op = self._op(shell)
            self._send({"kind": "ready", "index": self.plan.index})
            start = await self._inbox.get()
            if start.get("kind") != "start":
                self._send(self._result(0.0, 0.0))
                return
            plan = self.plan
            self.t0 = float(start["t0"])
            self.measure_start = self.t0 + plan.warmup_s
            if plan.duration_s is not None:
                self.end = self.measure_start + plan.duration_s
            wait = self.t0 - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            cpu_start, wall_start = time.process_time(), self._loop.time()
            ticker = self._loop.create_task(self._progress())
            tasks: set[asyncio.Task[None]] = set()
            if plan.rate_per_s is not None:
                main = self._loop.create_task(self._open_loop(op, tasks))
            else:
                main = self._loop.create_task(self._closed_loop(op))
            watcher = self._loop.create_task(self._watch_parent(main))
            node_watcher = self._loop.create_task(self._watch_node(shell, main))
            try:
                await main
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
            if tasks:
                # Each request ends by its own timeout; the grace only guards against a bug.
                drain_s = 0 if self.orphaned else plan.timeout_s + DRAIN_GRACE_S
                await asyncio.wait(set(tasks), timeout=drain_s)
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if plan.mode != CALL and not self.orphaned:
                await self._flush(shell)
            for task in (ticker, watcher, node_watcher):
                task.cancel()
            await asyncio.gather(ticker, watcher, node_watcher, return_exceptions=True)
            self._send(
                self._result(time.process_time() - cpu_start, self._loop.time() - wall_start)
            )

    async def _flush(self, shell: Any) -> None:
        """Wait until every target instance has read what this Shell sent it.

        A tell or chunk is "sent" once ZeroMQ has queued it, and the Shell's sockets close
        with linger 0: without this, the tail still queued when the run ends is discarded
        on close, and the node's counters come out short (measured: ~2 % of a tell flood).
        A call comes back only after the target read every frame queued before it on the
        same connection, so one call of the workers' barrier route per instance will do.
        """
        from .. import ActrError, ActrId
        from .._directory import BARRIER_ROUTE

        kind = _target(self.plan.target)
        barriers = [
            info.actr_id
            for info in await shell.actors()
            if info.state == "running" and _matches(kind, info)
        ]
        if not barriers and isinstance(kind, ActrId):
            # On another node: through the gateways the call follows the tells on the same
            # ordered channel (a stream's chunks travel on another one: best effort).
            barriers = [kind]
        for actr_id in barriers:
            try:
                await shell.call(actr_id, BARRIER_ROUTE, b"", timeout=self.plan.timeout_s)
            except ActrError:
                pass  # the target went away, or is not ours to reach: nothing to wait for

    def _result(self, cpu_s: float, wall_s: float) -> dict[str, Any]:
        return {
            "kind": "result",
            "index": self.plan.index,
            "sent": self.sent,
            "ok": self.ok,
            "ok_in_window": self.ok_in_window,
            "warmup_sent": self.warmup_sent,
            "warmup_errors": self.warmup_errors,
            "errors": dict(self.errors),
            "error_examples": dict(self.error_examples),
            "bytes_ok": self.bytes_ok,
            "latency": self.latency.to_dict(),
            "service": self.service.to_dict(),
            "lag": self.lag.to_dict(),
            "error_latency": self.error_latency.to_dict(),
            "timeline": [
                [index, p.ok, p.errors, p.latency.to_dict()]
                for index, p in sorted(self.timeline.items())
            ],
            "measure_start": self.measure_start,
            "last_done": self.last_done,
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "node_gone": self.node_gone,
        }


def _matches(target: Any, info: Any) -> bool:
    """Whether the instance ``info`` (an ActorInfo) is one ``target`` names."""
    from .. import ActrId, ActrType

    if isinstance(target, ActrId):
        return bool(info.actr_id == target)
    if isinstance(target, ActrType):
        return bool(info.type == target)
    return bool(info.name == target)


def _target(text: str) -> Any:
    """Parse the target once, so no request pays for it: ActrId, ActrType or a name."""
    from .._shell import target_key

    return target_key(text)


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Entry of a generator process (``multiprocessing`` target)."""
    # Ctrl-C reaches the whole process group: the parent decides, and tells us to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # select() sleeps with microsecond resolution where epoll rounds timeouts up to whole
    # milliseconds: open-loop sends would start up to 1 ms late, and that lateness counts
    # as latency (measured: asyncio.sleep(0.3 ms) overshoots p50 ~0.8 ms with epoll,
    # ~0.1 ms with select). A generator has a handful of fds, far below FD_SETSIZE.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_run(plan, conn))
    finally:
        loop.close()
        conn.close()


async def _run(plan: WorkerPlan, conn: Connection) -> None:
    try:
        await Generator(plan, conn).run()
    except Exception as exc:
        from .. import ActrError

        text = exc.message if isinstance(exc, ActrError) else f"{type(exc).__name__}: {exc}"
        try:
            conn.send({"kind": "fatal", "index": plan.index, "message": text})
        except OSError:
            pass
