"""``actrhost load``: check the node, start the generators, show progress, report.

The parent process never sends a request itself: it samples the node's counters before
and after, starts the generator processes (:mod:`._generator`) at one shared instant,
merges their progress into the live line and their results into the report.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import multiprocessing
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from .._errors import NotFound
from .._histogram import Histogram
from ._args import UsageError, spec_from_args, usage_exit
from ._generator import worker_main
from ._progress import Progress
from ._report import build_result, format_report
from ._spec import CALL, LoadSpec, WorkerPlan, split, timeline_interval_s

EXIT_OK = 0
EXIT_FAILURE = 1
#: How long generators may take to start and attach (imports + Shell attach).
READY_TIMEOUT_S = 30.0
#: Lead time between "start" and the shared start instant, so every generator gets it.
START_LEAD_S = 0.05
#: Beyond the planned end plus one request timeout: generators that still have not
#: reported are told to stop, then killed this much later.
FINISH_GRACE_S = 5.0
#: Tells and chunks are only queued when sent: before sampling its counters, wait for the
#: node to work through them while it makes progress (as long as this without any), but
#: no longer than SETTLE_MAX_S in all.
SETTLE_TIMEOUT_S = 5.0
SETTLE_MAX_S = 30.0
#: Checks 0.1 s apart that must see nothing queued and nothing moving: what waits in a
#: socket the gateway is not reading yet (its link is full) shows in no counter.
SETTLED_CHECKS = 3


class LoadFailed(Exception):
    """The run could not be done; ``str()`` is the one line shown (exit code 1)."""


def run_cli(args: argparse.Namespace) -> int:
    """Run ``actrhost load`` for parsed ``args``; returns the exit code."""
    try:
        spec = spec_from_args(args, ["actrhost", *sys.argv[1:]])
    except UsageError as exc:
        usage_exit(str(exc))
    try:
        return run(spec)
    except LoadFailed as exc:
        print(f"actrhost: load: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def run(spec: LoadSpec, *, stdout: Any = None) -> int:
    """Run one load test and print its report; raises :class:`LoadFailed`.

    Raises ``ConfigError`` for a bad config file (the CLI turns it into exit code 2).
    """
    from .. import ActrError

    if not spec.config.startswith("ipc://"):
        from .._config import load_config

        load_config(spec.config)
    started_at = datetime.datetime.now(datetime.UTC)
    try:
        before, node_name, target_ids, remote = asyncio.run(_preflight(spec))
    except ActrError as exc:
        raise LoadFailed(exc.message) from None
    interval_s = timeline_interval_s(spec)
    # A target on another node is discovered once, here: the generators send to its id
    # (a type resolved per request would ask signaling every time).
    plans = split(dataclasses.replace(spec, target=target_ids[0]) if remote else spec, interval_s)
    progress = Progress(spec.progress)
    try:
        results, interrupted = _drive(spec, plans, progress)
    finally:
        progress.close()
    try:
        after: dict[str, Any] | None
        after, settled = asyncio.run(_sample_after(spec, before))
    except ActrError:
        after, settled = None, True  # the node went away: report what the client saw
    result = build_result(
        spec,
        results=results,
        interval_s=interval_s,
        node_name=node_name,
        target_ids=target_ids,
        target_remote=remote,
        before=before,
        after=after,
        started_at=started_at,
        interrupted=interrupted,
        settled=settled,
    )
    out = stdout if stdout is not None else sys.stdout
    print(format_report(result), file=out, flush=True)
    if spec.json_path:
        with open(spec.json_path, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if spec.plot_path:
        from ._plot import write_plot

        write_plot(result, spec.plot_path)
    if interrupted:
        return 130
    gone = next((r["node_gone"] for r in results if r.get("node_gone")), "")
    if gone:
        print(f"actrhost load: the run ended early: {gone}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# -- the node ----------------------------------------------------------------------------


def _target_ids(target: str, actors: list[Any], node: str) -> list[str]:
    """Ids of the instances ``target`` names; NotFound (with what runs) when none."""
    from .. import ActrId, ActrType

    try:
        if "@" in target:
            wanted = ActrId.parse(target)
            found = [a for a in actors if a.actr_id == wanted]
        elif "+" in target:
            kind = ActrType.parse(target)
            found = [a for a in actors if a.type == kind]
        else:
            found = [a for a in actors if a.name == target]
    except ValueError as exc:
        raise NotFound(f"--target {target!r}: {exc}") from None
    if not found:
        names = ", ".join(sorted({f"{a.name} ({a.type})" for a in actors})) or "nothing"
        raise NotFound(f"--target {target!r}: no such actor on node {node} (it runs: {names})")
    return [str(a.actr_id) for a in found]


async def _preflight(spec: LoadSpec) -> tuple[dict[str, Any], str, list[str], bool]:
    """The node's status before, its name, the target's ids, and whether the target is on
    another node (reached through this node's gateway)."""
    from .. import connect

    async with connect(spec.config) as shell:
        status = await shell.status()
        node = status.get("node") or shell.node_name
        try:
            return status, node, _target_ids(spec.target, await shell.actors(), node), False
        except NotFound:
            remote = await _remote_target(shell, spec.target)
            if remote is None:
                raise
            return status, node, [str(remote)], True


async def _remote_target(shell: Any, target: str) -> Any:
    """The ActrId of a type or id text on another node, when this node has a gateway;
    None for anything else (an actor name is a local thing)."""
    from .. import ActrId, ActrType

    if shell.directory.gateway is None:
        return None
    if "@" in target:
        return ActrId.parse(target)
    if "+" in target:
        return await shell.discover(ActrType.parse(target))  # NotFound says why
    return None


def _served(status: dict[str, Any]) -> tuple[int, int]:
    """What the node's actors handled, and what waits in their mailboxes; with the frames
    its gateway sent to other nodes added to the first (they move while it drains)."""
    served = backlog = 0
    for actor in status.get("actors", []):
        stats = actor.get("stats") or {}
        served += stats.get("tells_served", 0) + stats.get("errors", 0)
        backlog += stats.get("mailbox_depth", 0)
    gateway = (status.get("gateway") or {}).get("stats") or {}
    for node in (gateway.get("remote_nodes") or {}).values():
        served += sum(lane.get("frames_out", 0) for lane in (node.get("lanes") or {}).values())
        link = node.get("connection") or {}
        backlog += link.get("queued_bytes", 0) + link.get("stream_inflight_bytes", 0)
    return served, backlog


async def _sample_after(spec: LoadSpec, before: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The node's status after the run, and whether it had worked through what was sent."""
    from .. import connect

    async with connect(spec.config) as shell:
        status = await shell.status()
        if spec.mode == CALL:
            return status, True
        # A tell or chunk is sent once queued: let the node work through its mailboxes,
        # and its gateway through its link's queues (the link table showed 6 of 50
        # chunks, QA), so "served" compares with "sent". Stop when nothing is queued and
        # nothing moves; while it still moves, wait on (a remote stream's last 1,600
        # chunks took ~4 s more than the 5 s this waited until 2026-12-06, QA).
        start = time.monotonic()
        progress_at = start
        last = _served(status)
        quiet = 0  # checks in a row with nothing queued and nothing moving
        while quiet < SETTLED_CHECKS:
            now_s = time.monotonic()
            if now_s - progress_at >= SETTLE_TIMEOUT_S or now_s - start >= SETTLE_MAX_S:
                return status, False
            await asyncio.sleep(0.1)
            status = await shell.status()
            now = _served(status)
            if now[0] > last[0] or now[1] < last[1]:
                progress_at = time.monotonic()
            quiet = quiet + 1 if now[1] == 0 and now[0] == last[0] else 0
            last = now
        return status, True


# -- the generators ----------------------------------------------------------------------


class _State:
    def __init__(self, plans: list[WorkerPlan]) -> None:
        self.interrupts = 0
        self.ready: set[int] = set()
        self.results: dict[int, dict[str, Any]] = {}
        self.progress: dict[int, dict[str, Any]] = {}
        self.plans = plans

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt


def _handle(state: _State, conn: Connection, index: int, pending: set[Connection]) -> None:
    try:
        message = conn.recv()
    except (EOFError, OSError):
        pending.discard(conn)
        if index not in state.results:
            raise LoadFailed(f"generator {index} exited without a result") from None
        return
    kind = message.get("kind")
    if kind == "ready":
        state.ready.add(index)
    elif kind == "progress":
        state.progress[index] = message
    elif kind == "result":
        state.results[index] = message
        pending.discard(conn)
    elif kind == "fatal":
        raise LoadFailed(f"generator {index}: {message.get('message')}")


def _wait(pending: set[Connection], timeout_s: float) -> list[Connection]:
    """The connections of ``pending`` with something to read (within ``timeout_s``)."""
    return [c for c in wait(list(pending), timeout=timeout_s) if isinstance(c, Connection)]


def _drive(
    spec: LoadSpec, plans: list[WorkerPlan], progress: Progress
) -> tuple[list[dict[str, Any]], bool]:
    ctx = multiprocessing.get_context("spawn")  # zmq contexts do not survive a fork
    state = _State(plans)
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: dict[Connection, int] = {}
    old_handler = signal.signal(signal.SIGINT, state.on_sigint)
    try:
        for plan in plans:
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=worker_main, args=(plan, theirs), name=f"actrhost-load-{plan.index}"
            )
            proc.daemon = True
            proc.start()
            theirs.close()
            procs.append(proc)
            conns[mine] = plan.index
        pending = set(conns)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(state.ready) < len(plans):
            if state.interrupts:
                raise LoadFailed("interrupted before the generators started")
            if time.monotonic() > deadline:
                raise LoadFailed(f"generators not ready after {READY_TIMEOUT_S:g} s")
            for conn in _wait(pending, 0.25):
                _handle(state, conn, conns[conn], pending)
        t0 = time.monotonic() + START_LEAD_S
        for conn in conns:
            conn.send({"kind": "start", "t0": t0})
        _collect(spec, state, conns, pending, t0, progress)
        return [state.results[i] for i in sorted(state.results)], state.interrupts > 0
    finally:
        signal.signal(signal.SIGINT, old_handler)
        for conn in conns:
            try:
                conn.send({"kind": "stop"})
            except OSError:
                pass
        for started in procs:
            started.join(timeout=5)
            if started.is_alive():
                started.kill()
                started.join(timeout=5)
        for conn in conns:
            conn.close()


def _collect(
    spec: LoadSpec,
    state: _State,
    conns: dict[Connection, int],
    pending: set[Connection],
    t0: float,
    progress: Progress,
) -> None:
    measure_start = t0 + spec.warmup_s
    finish_by = None
    if spec.duration_s is not None:
        finish_by = measure_start + spec.duration_s + spec.timeout_s + FINISH_GRACE_S
    stopped = False
    while pending:
        now = time.monotonic()
        if (state.interrupts or (finish_by is not None and now > finish_by)) and not stopped:
            stopped = True
            finish_by = now + spec.timeout_s + FINISH_GRACE_S
            for conn in pending:
                conn.send({"kind": "stop"})
        elif stopped and finish_by is not None and now > finish_by:
            raise LoadFailed("generators did not finish after being told to stop")
        for conn in _wait(pending, 0.1):
            _handle(state, conn, conns[conn], pending)
        reports = list(state.progress.values())
        latency = Histogram.merged(Histogram.from_dict(r["latency"]) for r in reports)
        progress.update(
            elapsed_s=max(0.0, time.monotonic() - measure_start),
            planned_s=spec.duration_s,
            warming_up=time.monotonic() < measure_start,
            done=sum(r["ok"] + r["errors"] for r in reports),
            errors=sum(r["errors"] for r in reports),
            latency=latency,
        )
