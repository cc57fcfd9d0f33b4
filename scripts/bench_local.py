#!/usr/bin/env python3
"""Benchmark: local actor messaging against raw pyzmq baselines, plus start and restart times.

Setup: every figure is between two processes on this machine, with 64-byte payloads over
ipc. The raw baselines talk to a peer process started from this script (``--peer``); the
actrhost figures come from a node (``python -m actrhost run``) the script starts in a temp
dir, where the ``Driver`` actor of ``bench_actors.py`` measures calls and tells to a
``Sink`` actor in another worker process. Measured, one function each:

    (a) pyzmq DEALER/ROUTER round trip, blocking sockets        p50 / p99 µs
    (b) the same with zmq.asyncio on both ends                   p50 / p99 µs
    (c) actrhost actor -> actor ``call`` round trip              p50 / p99 µs
    (d) actrhost actor -> actor ``tell``, handled                msg/s
    (e) pyzmq PUSH/PULL, received                                msg/s
    (f) node start until 8 actor instances run (Shell polls)    s
    (g) SIGKILL of a worker until a call to it succeeds again    ms

(a)-(e) run in interleaved rounds, each with a warm-up, and each ratio (c/b, c/a, b/a,
d/e) is taken within one round, so it survives the machine drifting between fast and slow
phases (DESIGN §10); the table shows medians over the rounds. (f) and (g) follow, as
medians of several runs, each right after its baseline: f0 = 8 (g0 = 1) bare interpreters
started at once that import the worker module and exit, the floor of starting workers.
(g) kills the Sink worker, then calls it every ms with a 50 ms timeout until a call
succeeds. The kills are spaced beyond the Sink's ``restart_window_s`` so each one is a
*first* restart, which the supervisor does without backoff (repeated crashes within the
window wait 50 ms, 100 ms, ... before restarting).

Metric: µs per round trip, messages per second, seconds; ratio = variant / baseline of the
same round (c/b, c/a, b/a, d/e, f/f0, g/g0); targets: c/b <= 1.0, tell >= 100,000 msg/s,
8 actors ready <= 1.5 s, serving again <= 300 ms.

    python scripts/bench_local.py                          # full run, ~1.5-2 minutes
    python scripts/bench_local.py --quick                  # smoke run, ~15 s
    python scripts/bench_local.py --json results.jsonl     # also append results as a line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import google.protobuf
import zmq
import zmq.asyncio

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO = SCRIPTS_DIR.parent
sys.path.insert(0, str(REPO))  # run from a source checkout without installing

from _bench_node import BenchNode  # noqa: E402  (scripts/ is on sys.path when run)

import actrhost  # noqa: E402

PAYLOAD_BYTES = 64
PAYLOAD = b"x" * PAYLOAD_BYTES
#: High-water mark of the raw sockets, the node's default ``hwm_messages``.
HWM_MESSAGES = 10000
#: How long a peer or node may take to answer its first message before we give up.
FIRST_REPLY_TIMEOUT_S = 10.0
#: How often the peers check that this script still runs (they exit when it is gone).
PEER_WATCHDOG_S = 0.5

#: (g): the Sink's restart window; kills are spaced further apart than this.
RESTART_WINDOW_S = 1.0
KILL_CALL_TIMEOUT_S = 0.05
KILL_RETRY_PAUSE_S = 0.001

TARGETS = {
    "call_p50_vs_asyncio": 1.0,  # c/b <= 1.0
    "tell_msg_per_s": 100_000.0,  # >= 100,000
    "start_8_ready_s": 1.5,  # <= 1.5 s
    "kill_to_serving_s": 0.3,  # <= 300 ms
}


@dataclass(frozen=True)
class Params:
    """Sizes of one run; ``--quick`` shrinks every count."""

    mode: str
    rounds: int
    warmup: int
    rtt_count: int
    tell_count: int
    push_count: int
    start_runs: int
    start_instances: int
    kills: int
    payload_bytes: int = PAYLOAD_BYTES
    hwm_messages: int = HWM_MESSAGES
    restart_window_s: float = RESTART_WINDOW_S
    kill_call_timeout_s: float = KILL_CALL_TIMEOUT_S


FULL = Params("full", rounds=7, warmup=500, rtt_count=5000, tell_count=200_000,
              push_count=500_000, start_runs=7, start_instances=8, kills=9)  # fmt: skip
QUICK = Params("quick", rounds=2, warmup=100, rtt_count=500, tell_count=20_000,
               push_count=50_000, start_runs=2, start_instances=8, kills=3)  # fmt: skip


# -- peer processes (raw pyzmq baselines) ------------------------------------------------


def _exit_with_parent() -> None:
    """Peer side: exit as soon as the benchmark process is gone (even if it was SIGKILLed)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PEER_WATCHDOG_S)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM_MESSAGES)
    sock.setsockopt(zmq.RCVHWM, HWM_MESSAGES)
    return sock


def peer_sync_echo(endpoint: str) -> None:
    """Peer of (a): a blocking ROUTER that sends every message back."""
    sock = _socket(zmq.Context(), zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        sock.send_multipart(sock.recv_multipart())


async def peer_async_echo(endpoint: str) -> None:
    """Peer of (b): a zmq.asyncio ROUTER that sends every message back."""
    sock = _socket(zmq.asyncio.Context(), zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        await sock.send_multipart(await sock.recv_multipart())


def peer_pull_sink(endpoint: str, ack_endpoint: str) -> None:
    """Peer of (e): count PULLed messages; an empty one is a marker, acked with the count."""
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL)
    pull.bind(endpoint)
    ack = _socket(ctx, zmq.PUSH)
    ack.connect(ack_endpoint)
    received = 0
    while True:
        if pull.recv():
            received += 1
        else:
            ack.send(str(received).encode())
            received = 0


def peer_main(kind: str, endpoint: str, ack_endpoint: str) -> None:
    """Entry point of a peer process (``bench_local.py --peer KIND ENDPOINT [ACK]``)."""
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us
    if kind == "sync-echo":
        peer_sync_echo(endpoint)
    elif kind == "async-echo":
        asyncio.run(peer_async_echo(endpoint))
    elif kind == "pull-sink":
        peer_pull_sink(endpoint, ack_endpoint)
    else:
        raise SystemExit(f"unknown peer kind {kind!r}")


class Peers:
    """The three baseline peer processes, each in its own process group."""

    def __init__(self, folder: Path) -> None:
        self.sync_echo = f"ipc://{folder / 'sync-echo.sock'}"
        self.async_echo = f"ipc://{folder / 'async-echo.sock'}"
        self.pull_sink = f"ipc://{folder / 'pull-sink.sock'}"
        self.ack_endpoint = f"ipc://{folder / 'pull-ack.sock'}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ctx: zmq.Context[Any] = zmq.Context()
        # Bound before the sink starts, so its acks have somewhere to go.
        self.ack = _socket(self.ctx, zmq.PULL)
        self.ack.bind(self.ack_endpoint)

    def start(self) -> None:
        """Spawn the peers; they are ready once they answer (each measurement warms up)."""
        for args in (
            ["sync-echo", self.sync_echo],
            ["async-echo", self.async_echo],
            ["pull-sink", self.pull_sink, self.ack_endpoint],
        ):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--peer", *args], start_new_session=True
                )
            )

    def close(self) -> None:
        """Kill every peer (by its own process group) and close our socket. Idempotent."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.processes.clear()
        if not self.ctx.closed:
            self.ack.close(linger=0)
            self.ctx.term()


def _wait_readable(sock: zmq.Socket[Any], what: str) -> None:
    if not sock.poll(int(FIRST_REPLY_TIMEOUT_S * 1000)):
        raise RuntimeError(f"{what}: no answer within {FIRST_REPLY_TIMEOUT_S} s")


# -- (a), (b), (e): raw pyzmq ----------------------------------------------------------


def measure_sync_rtt(endpoint: str, count: int, warmup: int) -> list[float]:
    """(a) Round trips (s) of a blocking DEALER to the blocking ROUTER echo peer."""
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.DEALER)
    try:
        sock.connect(endpoint)
        sock.send(PAYLOAD)
        _wait_readable(sock, "sync echo peer")
        sock.recv()
        for _ in range(warmup):
            sock.send(PAYLOAD)
            sock.recv()
        clock = time.perf_counter
        samples = []
        for _ in range(count):
            started = clock()
            sock.send(PAYLOAD)
            sock.recv()
            samples.append(clock() - started)
        return samples
    finally:
        sock.close(linger=0)
        ctx.term()


async def _async_rtt(endpoint: str, count: int, warmup: int) -> list[float]:
    ctx = zmq.asyncio.Context()
    sock = _socket(ctx, zmq.DEALER)
    try:
        sock.connect(endpoint)
        async with asyncio.timeout(FIRST_REPLY_TIMEOUT_S):
            await sock.send(PAYLOAD)
            await sock.recv()
        for _ in range(warmup):
            await sock.send(PAYLOAD)
            await sock.recv()
        clock = time.perf_counter
        samples = []
        for _ in range(count):
            started = clock()
            await sock.send(PAYLOAD)
            await sock.recv()
            samples.append(clock() - started)
        return samples
    finally:
        sock.close(linger=0)
        ctx.term()


def measure_async_rtt(endpoint: str, count: int, warmup: int) -> list[float]:
    """(b) Round trips (s) of a zmq.asyncio DEALER to the zmq.asyncio ROUTER echo peer."""
    return asyncio.run(_async_rtt(endpoint, count, warmup))


def measure_push_rate(peers: Peers, count: int, warmup: int) -> float:
    """(e) Messages/s a PUSH socket gets to the PULL peer, until the peer acks the last one."""
    ctx = zmq.Context()
    push = _socket(ctx, zmq.PUSH)
    try:
        push.connect(peers.pull_sink)

        def burst(n: int) -> None:
            for _ in range(n):
                push.send(PAYLOAD)
            push.send(b"")  # marker: the peer acks with how many it got
            _wait_readable(peers.ack, "pull peer")
            got = int(peers.ack.recv())
            if got != n:
                raise RuntimeError(f"pull peer received {got} of {n} messages")

        burst(warmup)
        started = time.perf_counter()
        burst(count)
        return count / (time.perf_counter() - started)
    finally:
        push.close(linger=0)
        ctx.term()


# -- the node ----------------------------------------------------------------------------


BENCH_ACTORS = f"""
[[actor]]
name = "sink"
type = "bench+Sink"
handler = "bench_actors:Sink"
max_restarts = 1000
restart_window_s = {RESTART_WINDOW_S}

[[actor]]
name = "driver"
type = "bench+Driver"
handler = "bench_actors:Driver"
"""


def node_config(folder: Path, actors_toml: str, start_method: str) -> str:
    """A quiet node in ``folder`` whose handlers come from scripts/."""
    return (
        f'[node]\nname = "bl{os.urandom(4).hex()}"\nrun_dir = "{folder / "run"}"\n'
        f'python_path = ["{SCRIPTS_DIR}"]\nlog_level = "warning"\n'
        f'start_method = "{start_method}"\n' + textwrap.dedent(actors_toml)
    )


@contextlib.contextmanager
def running_node(
    folder: Path, actors_toml: str, instances: int, start_method: str
) -> Iterator[BenchNode]:
    """A started node, stopped and cleaned up on exit, whatever happens."""
    node = BenchNode(folder, node_config(folder, actors_toml, start_method))
    try:
        node.spawn()
        asyncio.run(node.wait_running(instances, poll_s=0.02))
        yield node
    finally:
        node.stop()


# -- (c), (d): actrhost messaging -------------------------------------------------------


async def _ask_driver(node: BenchNode, route_key: str, params: dict[str, int]) -> Any:
    async with actrhost.connect(node.config_path) as shell:
        reply = await shell.call("driver", route_key, json.dumps(params).encode(), timeout=300)
    return json.loads(reply)


def measure_actor_calls(node: BenchNode, count: int, warmup: int) -> list[float]:
    """(c) Round trips (s) of Driver -> Sink ``ctx.call``, timed inside the Driver."""
    params = {"size": PAYLOAD_BYTES, "warmup": warmup, "count": count}
    samples: list[float] = asyncio.run(_ask_driver(node, "bench.Driver.Calls", params))
    return samples


def measure_actor_tells(node: BenchNode, count: int) -> dict[str, float]:
    """(d) Driver -> Sink ``ctx.tell``: sent/s and handled/s (until the Sink counted all)."""
    params = {"size": PAYLOAD_BYTES, "count": count}
    times = asyncio.run(_ask_driver(node, "bench.Driver.Tells", params))
    return {"sent_per_s": count / times["send_s"], "handled_per_s": count / times["handled_s"]}


# -- (f), (g): start and restart --------------------------------------------------------


def measure_bare_starts(processes: int) -> float:
    """Baseline of (f) and (g): seconds until ``processes`` interpreters, started at once,
    have imported the worker module and exited: the floor of starting a worker."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import actrhost.workers._process"], env=env, cwd=REPO
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            if proc.wait(30) != 0:
                raise RuntimeError(f"importing the worker module failed ({proc.returncode})")
        return time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def measure_start_to_ready(folder: Path, instances: int, start_method: str) -> float:
    """(f) Seconds from spawning ``actrhost run`` until a Shell sees every instance running.

    The Shell attaches as soon as the control socket exists and polls ``actors()`` every
    10 ms. Stopping the node afterwards is not timed.
    """
    actors = f"""
    [[actor]]
    name = "sink"
    type = "bench+Sink"
    handler = "bench_actors:Sink"
    instances = {instances}
    """
    node = BenchNode(folder, node_config(folder, actors, start_method))
    try:
        started = time.perf_counter()
        node.spawn()
        asyncio.run(node.wait_running(instances, poll_s=0.01))
        return time.perf_counter() - started
    finally:
        node.stop()


async def _running_pid(shell: actrhost.Shell, name: str) -> int:
    """Pid of the running instance ``name``, waiting up to 10 s."""
    async with asyncio.timeout(10):
        while True:
            for info in await shell.actors():
                if info.name == name and info.state == "running" and info.pid:
                    return info.pid
            await asyncio.sleep(0.01)


async def _watch_restart(shell: actrhost.Shell, old_pid: int, since: float) -> dict[str, float]:
    """Seconds after ``since`` at which the Shell's directory showed the worker dead (or
    gone) and its successor running. (The directory lists a successor once it registered,
    that is running, so there is no separate "spawned" step to see.)"""
    steps: dict[str, float] = {}
    while "running" not in steps:
        for info in await shell.actors():
            if info.name == "sink" and (info.pid != old_pid or info.state != "running"):
                now = time.perf_counter() - since
                steps.setdefault("dead", now)
                if info.pid not in (None, old_pid) and info.state == "running":
                    steps["running"] = now
        await asyncio.sleep(0.001)
    return steps


async def _kill_to_serving(node: BenchNode, kills: int) -> dict[str, Any]:
    samples: list[float] = []
    steps: list[dict[str, float]] = []
    # Shell.call may leave a failed future nobody awaits when the target dies; count those
    # warnings instead of printing a traceback for each.
    unretrieved = 0

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal unretrieved
        if isinstance(context.get("exception"), actrhost.ActrError):
            unretrieved += 1
        else:
            loop.default_exception_handler(context)

    asyncio.get_running_loop().set_exception_handler(on_error)
    baselines: list[float] = []
    clock = time.perf_counter
    async with actrhost.connect(node.config_path) as shell:
        for _ in range(kills):
            baselines.append(measure_bare_starts(1))  # blocks the loop; the sleep catches up
            await asyncio.sleep(RESTART_WINDOW_S + 0.2)  # the next restart is a first one
            pid = await _running_pid(shell, "sink")
            await shell.call("sink", "bench.Sink.Echo", PAYLOAD, timeout=5)  # it serves
            killed = clock()
            os.kill(pid, signal.SIGKILL)
            watcher = asyncio.ensure_future(_watch_restart(shell, pid, killed))
            while True:
                try:
                    await shell.call(
                        "sink", "bench.Sink.Echo", PAYLOAD, timeout=KILL_CALL_TIMEOUT_S
                    )
                    break
                except actrhost.ActrError:
                    if clock() - killed > 30:
                        raise RuntimeError("the Sink did not serve again within 30 s") from None
                    await asyncio.sleep(KILL_RETRY_PAUSE_S)  # lets the directory update
            samples.append(clock() - killed)
            async with asyncio.timeout(10):
                steps.append(await watcher)  # also: it really is a new process
    return {
        "samples": samples,
        "baselines": baselines,
        "steps": steps,
        "unretrieved_future_warnings": unretrieved,
    }


def measure_kill_to_serving(node: BenchNode, kills: int) -> dict[str, Any]:
    """(g) Seconds from SIGKILL of the Sink worker until a Shell call to it succeeds.

    Before each kill, the baseline: one bare interpreter importing the worker module.
    Also when the Shell's directory showed the worker dead and its successor running
    (polled every ms), to tell detection, restart and reconnection apart.
    """
    return asyncio.run(_kill_to_serving(node, kills))


# -- statistics and report --------------------------------------------------------------


def p50(samples: list[float]) -> float:
    """The median."""
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    """The 99th percentile (linear interpolation between samples)."""
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def environment() -> dict[str, Any]:
    """What the figures depend on, recorded with them."""
    affinity = len(os.sched_getaffinity(0))
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "pinned": affinity < (os.cpu_count() or affinity),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "protobuf": google.protobuf.__version__,
        "actrhost": actrhost.__version__,
    }


def run_rounds(params: Params, peers: Peers, node: BenchNode, say: Callable[[str], None]) -> dict:
    """(a)-(e) interleaved, ``params.rounds`` times; per-round figures and ratios."""
    rounds = []
    for index in range(params.rounds):
        a = measure_sync_rtt(peers.sync_echo, params.rtt_count, params.warmup)
        b = measure_async_rtt(peers.async_echo, params.rtt_count, params.warmup)
        c = measure_actor_calls(node, params.rtt_count, params.warmup)
        e = measure_push_rate(peers, params.push_count, params.warmup)
        d = measure_actor_tells(node, params.tell_count)
        r = {
            "a_p50_us": p50(a) * 1e6, "a_p99_us": p99(a) * 1e6,
            "b_p50_us": p50(b) * 1e6, "b_p99_us": p99(b) * 1e6,
            "c_p50_us": p50(c) * 1e6, "c_p99_us": p99(c) * 1e6,
            "d_sent_per_s": d["sent_per_s"], "d_handled_per_s": d["handled_per_s"],
            "e_per_s": e,
        }  # fmt: skip
        r["c_over_b_p50"] = r["c_p50_us"] / r["b_p50_us"]
        r["c_over_b_p99"] = r["c_p99_us"] / r["b_p99_us"]
        r["c_over_a_p50"] = r["c_p50_us"] / r["a_p50_us"]
        r["b_over_a_p50"] = r["b_p50_us"] / r["a_p50_us"]
        r["d_over_e"] = r["d_handled_per_s"] / r["e_per_s"]
        rounds.append(r)
        say(
            f"round {index + 1}/{params.rounds}: a {r['a_p50_us']:.0f} µs, "
            f"b {r['b_p50_us']:.0f} µs, c {r['c_p50_us']:.0f} µs, "
            f"d {r['d_handled_per_s']:,.0f}/s, e {r['e_per_s']:,.0f}/s"
        )
    return {"rounds": rounds, "median": {k: p50([r[k] for r in rounds]) for k in rounds[0]}}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and whether each target is met: what the table and the JSON show."""
    m = dict(results["median"])
    start, start0 = results["start_8_ready_s"], results["start_baseline_s"]
    kill, kill0 = results["kill_to_serving_s"], results["kill_baseline_s"]
    m["f_s"], m["f0_s"] = p50(start), p50(start0)
    m["f_over_f0"] = p50([f / f0 for f, f0 in zip(start, start0, strict=True)])
    spawned = results["start_8_ready_spawn_s"]
    m["f_spawn_s"] = p50(spawned)
    m["f_spawn_over_f0"] = p50([f / f0 for f, f0 in zip(spawned, start0, strict=True)])
    m["g_ms"], m["g0_ms"] = p50(kill) * 1e3, p50(kill0) * 1e3
    m["g_over_g0"] = p50([g / g0 for g, g0 in zip(kill, kill0, strict=True)])
    for step in ("dead", "running"):
        m[f"g_{step}_ms"] = p50([s[step] for s in results["kill_steps_s"]]) * 1e3
    m["met"] = {
        "call_p50_vs_asyncio": m["c_over_b_p50"] <= TARGETS["call_p50_vs_asyncio"],
        "tell_msg_per_s": m["d_handled_per_s"] >= TARGETS["tell_msg_per_s"],
        "start_8_ready_s": m["f_s"] <= TARGETS["start_8_ready_s"],
        "kill_to_serving_s": m["g_ms"] / 1e3 <= TARGETS["kill_to_serving_s"],
    }
    return m


def print_table(m: dict[str, Any], results: dict[str, Any]) -> None:
    """The summary as a table with units, ratios and targets, then notes."""
    met = {k: "met" if ok else "MISSED" for k, ok in m["met"].items()}
    start, kill = results["start_8_ready_s"], results["kill_to_serving_s"]
    rows = [
        ("(a) pyzmq sync DEALER/ROUTER RTT", f"{m['a_p50_us']:.0f} / {m['a_p99_us']:.0f}",
         "µs p50/p99", "baseline", "", ""),
        ("(b) pyzmq zmq.asyncio RTT", f"{m['b_p50_us']:.0f} / {m['b_p99_us']:.0f}",
         "µs p50/p99", f"b/a {m['b_over_a_p50']:.2f}", "", ""),
        ("(c) actor -> actor call RTT", f"{m['c_p50_us']:.0f} / {m['c_p99_us']:.0f}",
         "µs p50/p99", f"c/b {m['c_over_b_p50']:.2f} (p99 {m['c_over_b_p99']:.2f}), "
         f"c/a {m['c_over_a_p50']:.2f}", "c/b <= 1.00", met["call_p50_vs_asyncio"]),
        ("(e) pyzmq PUSH/PULL", f"{m['e_per_s']:,.0f}", "msg/s", "baseline", "", ""),
        ("(d) actor -> actor tell, handled", f"{m['d_handled_per_s']:,.0f}", "msg/s",
         f"d/e {m['d_over_e']:.3f} (sent {m['d_sent_per_s']:,.0f}/s)", ">= 100,000 msg/s",
         met["tell_msg_per_s"]),
        ("(f) node start -> 8 actors running", f"{m['f_s']:.3f}", "s",
         f"f/f0 {m['f_over_f0']:.2f} (f0 {m['f0_s']:.3f} s; runs "
         f"{min(start):.2f}-{max(start):.2f})", "<= 1.5 s", met["start_8_ready_s"]),
        ("(f') the same, start_method spawn", f"{m['f_spawn_s']:.3f}", "s",
         f"f'/f0 {m['f_spawn_over_f0']:.2f}", "", ""),
        ("(g) SIGKILL -> serving again", f"{m['g_ms']:.0f}", "ms",
         f"g/g0 {m['g_over_g0']:.2f} (g0 {m['g0_ms']:.0f} ms; runs "
         f"{min(kill) * 1e3:.0f}-{max(kill) * 1e3:.0f})", "<= 300 ms", met["kill_to_serving_s"]),
    ]  # fmt: skip
    header = ("case", "median", "unit", "ratio (median of per-round ratios)", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        "# f0 / g0: wall time of 8 / 1 bare interpreters, started at once, importing "
        "actrhost.workers._process and exiting (the floor of spawning workers); "
        f"(a)-(e), (f) and (g) with start_method {results['start_method']}"
    )
    print(
        f"# (g) median ms after SIGKILL, as the Shell saw it: worker dead {m['g_dead_ms']:.0f}, "
        f"successor running {m['g_running_ms']:.0f}, first call answered {m['g_ms']:.0f}"
    )
    if results["unretrieved_future_warnings"]:
        print(
            f"# (g) Shell.call left {results['unretrieved_future_warnings']} failed futures "
            "unretrieved (asyncio 'Future exception was never retrieved'; silenced here)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, < 60 s")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of (a)-(e)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="append results as one line")
    parser.add_argument(
        "--start-method",
        choices=("forkserver", "spawn"),
        default="forkserver",
        help="[node] start_method of the nodes of (a)-(e), (f) and (g); (f') always spawns",
    )
    args = parser.parse_args()
    if args.peer:
        peer_main(args.peer[0], args.peer[1], args.peer[2] if len(args.peer) > 2 else "")
        return

    params = QUICK if args.quick else FULL
    if args.rounds:
        params = Params(**{**asdict(params), "rounds": args.rounds})
    env = environment()
    print(
        f"# {env['machine']}, {env['cpu_count']} CPUs (pinned: {'yes' if env['pinned'] else 'no'}),"
        f" Python {env['python']}, pyzmq {env['pyzmq']} (libzmq {env['libzmq']}), protobuf "
        f"{env['protobuf']}; {params.mode}: {params.rounds} rounds, {PAYLOAD_BYTES} B payloads",
        flush=True,
    )

    def say(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    # SIGTERM unwinds like Ctrl-C, so the finally blocks below clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    began = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="actrb-"))  # short: ipc paths max ~107 bytes
    peers = Peers(folder)
    try:
        peers.start()
        with running_node(folder / "node", BENCH_ACTORS, 2, args.start_method) as node:
            results = run_rounds(params, peers, node, say)
            say(f"(g) {params.kills} kills, {RESTART_WINDOW_S + 0.2:.1f} s apart")
            kill = measure_kill_to_serving(node, params.kills)
            results["kill_to_serving_s"] = kill["samples"]
            results["kill_baseline_s"] = kill["baselines"]
            results["kill_steps_s"] = kill["steps"]
            results["unretrieved_future_warnings"] = kill["unretrieved_future_warnings"]
        peers.close()
        results["start_8_ready_s"], results["start_baseline_s"] = [], []
        results["start_8_ready_spawn_s"] = []
        results["start_method"] = args.start_method
        for run in range(params.start_runs):
            bare = measure_bare_starts(params.start_instances)
            seconds = measure_start_to_ready(
                folder / f"start{run}", params.start_instances, args.start_method
            )
            spawned = measure_start_to_ready(
                folder / f"spawn{run}", params.start_instances, "spawn"
            )
            results["start_baseline_s"].append(bare)
            results["start_8_ready_s"].append(seconds)
            results["start_8_ready_spawn_s"].append(spawned)
            say(
                f"(f) start {run + 1}/{params.start_runs}: {seconds:.3f} s, spawning "
                f"{spawned:.3f} s (bare {bare:.3f} s)"
            )
    finally:
        peers.close()
        shutil.rmtree(folder, ignore_errors=True)
    results["params"] = asdict(params)
    results["environment"] = env
    results["targets"] = TARGETS
    results["elapsed_s"] = time.perf_counter() - began
    results["summary"] = summarize(results)
    print_table(results["summary"], results)
    print(f"# took {results['elapsed_s']:.0f} s")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"benchmark": "bench_local", **results}) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (every process and temp dir was cleaned up)", file=sys.stderr)
        sys.exit(130)
