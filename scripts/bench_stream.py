#!/usr/bin/env python3
"""Benchmark: data-stream throughput between actors against memcpy and raw pyzmq.

Setup: every transfer is between two processes on this machine; the payload is prepared
once per size and every receiver touches the first and the last byte of each chunk.
Measured, one function each:

    (m) np.copyto of 64 MiB into a preallocated array (one process)   MB/s   the limit
    (z) pyzmq PUSH -> PULL over ipc, copy=False on both ends         MB/s, chunks/s
    (a) actrhost ``ctx.send_data_stream`` actor -> actor,              MB/s, chunks/s
        STREAM_RELIABLE, [shm] defaults (threshold 64 KiB, ring 64 MiB)

at 64 KiB, 1 MiB and 16 MiB chunks. (z) sends from this process to a peer process
started from this script (``--peer``); (a) runs in a node (``python -m actrhost run``) the
script starts in a temp dir, where the ``StreamSource`` actor of ``bench_stream_actors.py``
sends bursts to a ``StreamSink`` actor in another worker process. A timed run goes from
the first send to the last chunk handled by the receiver (``CLOCK_MONOTONIC`` on both
sides) and is preceded by a warm-up burst that the receiver has handled. The chunk count
of each case is calibrated first (grown until a run lasts ``run_s``, like pyzmq's
``perf/collect.py``); then the cases run in interleaved rounds and every ratio is taken
within one round, so it survives the machine drifting between fast and slow phases; the
table shows medians over the rounds.

Metric: MB/s (10^6 bytes/s) of payload, chunks/s; ratios a/m, a/z, z/m. Targets: 1 MiB
chunks >= 0.50 of memcpy and >= 2.00 x raw pyzmq; 64 KiB chunks >= 30,000 chunks/s.

    python scripts/bench_stream.py                         # full run, ~1-2 minutes
    python scripts/bench_stream.py --quick                 # smoke run, < 60 s
    python scripts/bench_stream.py --json results.jsonl    # also append results as a line
    python scripts/bench_stream.py --profile prof/         # py-spy the two actor workers

Every process, temp dir and /dev/shm segment the script made is removed on exit, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO = SCRIPTS_DIR.parent
sys.path.insert(0, str(REPO))  # run from a source checkout without installing

from _bench_node import BenchNode  # noqa: E402  (scripts/ is on sys.path when run)

import actrhost  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
MEMCPY_BYTES = 64 * MiB
SIZES = (64 * KiB, 1 * MiB, 16 * MiB)
#: Bytes raw pyzmq may queue per socket, which bounds the peer's memory; ZeroMQ's HWM
#: counts messages, so each chunk size gets its own sockets with HWM = this / size.
ZMQ_QUEUE_BYTES = 256 * MiB
#: How long a peer or node may take to answer its first message before we give up.
FIRST_REPLY_TIMEOUT_S = 10.0
#: How often the peer checks that this script still runs (it exits when it is gone).
PEER_WATCHDOG_S = 0.5
SHELL_CALL_TIMEOUT_S = 300.0
#: Fewest chunks in a timed run, so pipeline fill and drain stay a small part of it.
MIN_CHUNKS = 32

TARGETS = {
    "1MiB_over_memcpy": 0.50,  # >=
    "1MiB_over_pyzmq": 2.00,  # >=
    "64KiB_chunks_per_s": 30_000.0,  # >=
}


@dataclass(frozen=True)
class Params:
    """Sizes of one run; ``--quick`` shrinks them."""

    mode: str
    rounds: int
    run_s: float  # target duration of one timed run (chunk counts are calibrated to it)
    warmup_chunks: int  # per run, handled before the clock starts
    memcpy_repeat: int  # copies of MEMCPY_BYTES per baseline measurement
    payload: str = "bytes"  # or "ndarray": what the source actor sends
    threshold_bytes: int = 65536
    ring_bytes: int = 64 * MiB
    sizes: tuple[int, ...] = SIZES


FULL = Params("full", rounds=15, run_s=0.75, warmup_chunks=16, memcpy_repeat=16)
QUICK = Params("quick", rounds=2, run_s=0.2, warmup_chunks=8, memcpy_repeat=4)


@dataclass(frozen=True)
class Run:
    """One timed run: payload moved and seconds from the first send to the last chunk handled.

    ``send_s`` is when the last send returned: close to ``elapsed_s`` when the sender is
    the bottleneck, well below it when chunks queue up in front of the receiver.
    """

    chunks: int
    bytes: int
    elapsed_s: float
    send_s: float

    @property
    def mb_per_s(self) -> float:
        """Payload throughput, 10^6 bytes per second."""
        return self.bytes / self.elapsed_s / 1e6

    @property
    def chunks_per_s(self) -> float:
        """Chunks per second."""
        return self.chunks / self.elapsed_s


def label(size: int) -> str:
    """64 KiB, 1 MiB, ..."""
    return f"{size // MiB} MiB" if size >= MiB and size % MiB == 0 else f"{size // KiB} KiB"


# -- (m): memcpy -------------------------------------------------------------------------


class Memcpy:
    """(m) Two pre-touched 64 MiB arrays for the np.copyto baseline."""

    def __init__(self) -> None:
        self.src = np.ones(MEMCPY_BYTES, dtype=np.uint8)
        self.dst = np.zeros_like(self.src)
        np.copyto(self.dst, self.src)  # touch every page of both

    def measure(self, repeat: int) -> Run:
        """(m) ``repeat`` copies of the whole array with np.copyto."""
        started = time.perf_counter()
        for _ in range(repeat):
            np.copyto(self.dst, self.src)
        elapsed = time.perf_counter() - started
        return Run(repeat, repeat * MEMCPY_BYTES, elapsed, elapsed)


# -- (z): raw pyzmq, peer process ------------------------------------------------------


def zmq_hwm(size: int) -> int:
    """High-water mark (messages) of the raw sockets for ``size``-byte chunks."""
    return max(4, ZMQ_QUEUE_BYTES // size)


def _socket(ctx: zmq.Context[Any], kind: int, hwm: int) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    return sock


def _exit_with_parent() -> None:
    """Peer side: exit as soon as the benchmark process is gone (even if it was SIGKILLed)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PEER_WATCHDOG_S)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def peer_main(folder: str) -> None:
    """Peer of (z): PULL with copy=False, touch the first and last byte of every chunk.

    Binds one PULL socket per chunk size (each with its own HWM) in ``folder``. A burst
    goes to one of them and ends with an empty message, a marker, answered on the ack
    socket with the chunks and bytes received since the previous marker and the
    monotonic time the last one was handled.
    """
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us
    ctx = zmq.Context()
    poller = zmq.Poller()
    for size in SIZES:
        pull = _socket(ctx, zmq.PULL, zmq_hwm(size))
        pull.bind(pull_endpoint(Path(folder), size))
        poller.register(pull, zmq.POLLIN)
    ack = _socket(ctx, zmq.PUSH, 16)
    ack.connect(ack_endpoint(Path(folder)))
    checksum = 0
    while True:
        for pull, _ in poller.poll():
            chunks = nbytes = 0
            last_handled = 0.0
            while True:  # a tight loop until the marker: no poll per chunk
                view = pull.recv(copy=False).buffer
                size = len(view)
                if size == 0:
                    break
                checksum ^= view[0] ^ view[-1]
                chunks += 1
                nbytes += size
                last_handled = time.monotonic()
            ack.send_json({"chunks": chunks, "bytes": nbytes, "last_handled": last_handled})


def pull_endpoint(folder: Path, size: int) -> str:
    """Where the peer's PULL socket for ``size``-byte chunks listens."""
    return f"ipc://{folder / f'pull-{size}.sock'}"


def ack_endpoint(folder: Path) -> str:
    """Where the peer's acks go (bound by the benchmark process)."""
    return f"ipc://{folder / 'ack.sock'}"


class ZmqPeer:
    """The raw pyzmq receiver process (its own process group) and our PUSH and ack sockets."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ack = _socket(self.ctx, zmq.PULL, 16)
        self.ack.bind(ack_endpoint(folder))  # before the peer starts: its acks need a target
        self.pushes: dict[int, zmq.Socket[Any]] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the peer (it is ready once it answers; every run warms up)."""
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--peer", str(self.folder)], start_new_session=True
        )

    def _push(self, size: int) -> zmq.Socket[Any]:
        """The PUSH socket for ``size``-byte chunks, connected on first use."""
        if size not in self.pushes:
            push = self.pushes[size] = _socket(self.ctx, zmq.PUSH, zmq_hwm(size))
            push.connect(pull_endpoint(self.folder, size))
        return self.pushes[size]

    def burst(self, payload: Any, count: int) -> dict[str, Any]:
        """Send ``count`` chunks and a marker; return the peer's ack, with ``sent`` added."""
        push = self._push(len(payload))
        for _ in range(count):
            push.send(payload, copy=False)
        sent = time.monotonic()
        push.send(b"")
        if not self.ack.poll(int(FIRST_REPLY_TIMEOUT_S * 1000)):
            raise RuntimeError(f"pyzmq peer: no ack within {FIRST_REPLY_TIMEOUT_S} s")
        ack: dict[str, Any] = self.ack.recv_json()
        return {**ack, "sent": sent}

    def close(self) -> None:
        """Kill the peer (by its process group) and close our sockets. Idempotent."""
        proc, self.process = self.process, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not self.ctx.closed:
            for push in self.pushes.values():
                push.close(linger=0)
            self.ack.close(linger=0)
            self.ctx.term()


def measure_pyzmq(peer: ZmqPeer, payload: bytes, count: int, warmup: int) -> Run:
    """(z) ``count`` chunks PUSHed with copy=False, until the peer handled the last one."""
    ack = peer.burst(payload, warmup)
    if ack["chunks"] != warmup:
        raise RuntimeError(f"pyzmq peer received {ack['chunks']} of {warmup} warm-up chunks")
    started = time.monotonic()
    ack = peer.burst(payload, count)
    if ack["chunks"] != count or ack["bytes"] != count * len(payload):
        raise RuntimeError(f"pyzmq peer counted {ack} for {count} chunks of {len(payload)} B")
    return Run(count, ack["bytes"], ack["last_handled"] - started, ack["sent"] - started)


# -- (a): the node -----------------------------------------------------------------------


NODE_TOML = """\
[node]
name = "{name}"
run_dir = "{run_dir}"
python_path = ["{scripts}"]
log_level = "warning"

[shm]
threshold_bytes = {threshold_bytes}
ring_bytes = {ring_bytes}

[[actor]]
name = "sink"
type = "bench+StreamSink"
handler = "bench_stream_actors:StreamSink"

[[actor]]
name = "source"
type = "bench+StreamSource"
handler = "bench_stream_actors:StreamSource"
"""


class StreamNode(BenchNode):
    """The benchmark's node: a stream source and sink with the run's [shm] sizes."""

    def __init__(self, folder: Path, params: Params) -> None:
        super().__init__(
            folder,
            NODE_TOML.format(
                name=f"bs{os.urandom(4).hex()}",
                run_dir=folder / "run",
                scripts=SCRIPTS_DIR,
                threshold_bytes=params.threshold_bytes,
                ring_bytes=params.ring_bytes,
            ),
        )

    def start(self) -> None:
        """Start the supervisor; return once both actors run (their pids in ``pids``)."""
        self.spawn()
        asyncio.run(self.wait_running(2, poll_s=0.02))

    def call_source(self, params: dict[str, Any]) -> dict[str, Any]:
        """One ``bench.StreamSource.Run`` call from a Shell; the source's JSON answer."""

        async def ask() -> bytes:
            async with actrhost.connect(self.config_path) as shell:
                request = json.dumps(params).encode()
                reply: bytes = await shell.call(
                    "source", "bench.StreamSource.Run", request, timeout=SHELL_CALL_TIMEOUT_S
                )
                return reply

        result: dict[str, Any] = json.loads(asyncio.run(ask()))
        return result


@contextlib.contextmanager
def running_node(folder: Path, params: Params) -> Iterator[StreamNode]:
    """A started node, stopped and cleaned up on exit, whatever happens."""
    node = StreamNode(folder, params)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        leftovers = node.leftover_segments()
        if leftovers:
            raise RuntimeError(f"shared-memory segments outlived the node: {leftovers}")


def measure_actrhost(node: StreamNode, params: Params, size: int, count: int) -> Run:
    """(a) ``count`` chunks source -> sink, from the first send to the last chunk handled."""
    reply = node.call_source(
        {"size": size, "count": count, "warmup": params.warmup_chunks, "kind": params.payload}
    )
    started = reply["started"]
    return Run(
        reply["chunks"], reply["bytes"], reply["last_handled"] - started, reply["sent"] - started
    )


# -- calibration and rounds ---------------------------------------------------------------


def calibrate(measure: Callable[[int], Run], size: int, run_s: float) -> int:
    """Chunk count for runs of about ``run_s``: grow it until a run lasts half of that.

    The first run is thrown away: it connects sockets and maps pages for the first time.
    """
    count = max(MIN_CHUNKS, 4 * MiB // size)
    measure(count)
    while True:
        elapsed = measure(count).elapsed_s
        if elapsed >= run_s / 2:
            return max(MIN_CHUNKS, round(count * run_s / elapsed))
        count = math.ceil(count * min(10.0, max(2.0, run_s / max(elapsed, 1e-6))))


def run_rounds(
    params: Params,
    memcpy: Memcpy,
    cases: dict[str, Callable[[int, int], Run]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Calibrate every case and size, then run (m) and every case ``params.rounds`` times.

    Returns per-round figures (``m``, ``<case>_<size>_mb_s`` / ``_chunks_s``, ratios), the
    medians over the rounds and the calibrated counts.
    """
    counts: dict[str, int] = {}
    for case, measure in cases.items():
        for size in params.sizes:
            count = calibrate(lambda n, m=measure, s=size: m(s, n), size, params.run_s)
            counts[f"{case}_{size}"] = count
            say(f"calibrated {case} {label(size)}: {count} chunks per run")
    rounds: list[dict[str, float]] = []
    for index in range(params.rounds):
        r = {"m_mb_s": memcpy.measure(params.memcpy_repeat).mb_per_s}
        for size in params.sizes:
            order = list(cases.items()) if index % 2 == 0 else list(cases.items())[::-1]
            for case, measure in order:  # alternate, so neither case always runs first
                run = measure(size, counts[f"{case}_{size}"])
                r[f"{case}_{size}_mb_s"] = run.mb_per_s
                r[f"{case}_{size}_chunks_s"] = run.chunks_per_s
                r[f"{case}_{size}_send_share"] = run.send_s / run.elapsed_s
            r[f"z_{size}_over_m"] = r[f"z_{size}_mb_s"] / r["m_mb_s"]
            r[f"a_{size}_over_m"] = r[f"a_{size}_mb_s"] / r["m_mb_s"]
            r[f"a_{size}_over_z"] = r[f"a_{size}_mb_s"] / r[f"z_{size}_mb_s"]
        rounds.append(r)
        say(
            f"round {index + 1}/{params.rounds}: memcpy {r['m_mb_s']:,.0f} MB/s; "
            + "; ".join(
                f"{label(s)} pyzmq {r[f'z_{s}_mb_s']:,.0f} / actrhost {r[f'a_{s}_mb_s']:,.0f} MB/s"
                for s in params.sizes
            )
        )
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    return {"counts": counts, "rounds": rounds, "median": median}


def check_targets(median: dict[str, float]) -> dict[str, Any]:
    """Each target with its value and whether it is met (None: size not measured)."""
    values = {
        "1MiB_over_memcpy": median.get(f"a_{MiB}_over_m"),
        "1MiB_over_pyzmq": median.get(f"a_{MiB}_over_z"),
        "64KiB_chunks_per_s": median.get(f"a_{64 * KiB}_chunks_s"),
    }
    return {
        name: {
            "value": value,
            "required": TARGETS[name],
            "met": None if value is None else value >= TARGETS[name],
        }
        for name, value in values.items()
    }


# -- report --------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What the figures depend on, recorded with them."""
    affinity = len(os.sched_getaffinity(0))
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "pinned": affinity < (os.cpu_count() or affinity),
        "loadavg_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "actrhost": actrhost.__version__,
    }


def print_table(results: dict[str, Any], params: Params) -> None:
    """Medians with units and ratios, then the targets."""
    m = results["median"]
    rounds = results["rounds"]

    def spread(key: str) -> str:
        values = [r[key] for r in rounds]
        return f"{min(values):,.0f}-{max(values):,.0f}"

    def row(case: str, name: str, size: int) -> tuple[str, ...]:
        key = f"{case}_{size}"
        over_z = f"{m[f'{key}_over_z']:.2f}" if case == "a" else "1.00"
        return (
            name, label(size), f"{m[f'{key}_mb_s']:,.0f}", f"{m[f'{key}_chunks_s']:,.0f}",
            f"{m[f'{key}_over_m']:.2f}", over_z, f"{m[f'{key}_send_share']:.2f}",
            spread(f"{key}_mb_s"),
        )  # fmt: skip

    header = ("case", "chunk", "MB/s", "chunks/s", "÷ memcpy", "÷ pyzmq", "send", "MB/s range")
    memcpy = ("(m) np.copyto", label(MEMCPY_BYTES), f"{m['m_mb_s']:,.0f}", "", "1.00", "", "",
              spread("m_mb_s"))  # fmt: skip
    rows = [header, memcpy]
    rows += [row("z", "(z) pyzmq PUSH/PULL copy=False", size) for size in params.sizes]
    for size in params.sizes:
        lane = "ring" if size >= params.threshold_bytes else "inline"
        rows.append(row("a", f"(a) actrhost stream ({lane})", size))
    _print_rows(rows)
    print(
        "# medians over the rounds; ratios are medians of per-round ratios; MB = 10^6 bytes;\n"
        "# send = when the last send returned / when the last chunk was handled (1.00: the\n"
        "# sender is the bottleneck; lower: chunks queue in front of the receiver)"
    )
    print()
    rows = [("target", "median", "required", "")]
    for name, t in results["targets"].items():
        if t["met"] is None:
            continue
        verdict = "met" if t["met"] else f"MISSED by {1 - t['value'] / t['required']:.0%}"
        fmt = "{:,.0f}" if name.endswith("per_s") else "{:.2f}"
        rows.append((name, fmt.format(t["value"]), ">= " + fmt.format(t["required"]), verdict))
    _print_rows(rows)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def append_json(path: Path, params: Params, env: dict[str, Any], results: dict[str, Any]) -> None:
    """Append one line: parameters, environment, per-round figures, medians, targets."""
    record = {"benchmark": "bench_stream", "params": asdict(params), "environment": env, **results}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# -- profiling ------------------------------------------------------------------------------

#: Sampling without pausing the target, idle samples kept (waiting shows up), per function.
PY_SPY = ["py-spy", "record", "--format", "raw", "--nonblocking", "--idle", "--function"]


def profile_workers(node: StreamNode, params: Params, out_dir: Path, seconds: float) -> None:
    """Record both actor workers with ``py-spy record --format raw`` during a long burst.

    For each size: estimates the rate with a short run, starts a burst lasting about
    ``seconds`` + 3, records sender and receiver for ``seconds`` after 0.5 s, then prints
    the top functions by own time of each, as a share of the wall time (idle included)
    and as µs per chunk at the burst's rate (raw files are kept in ``out_dir``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for size in params.sizes:
        count = calibrate(lambda n, s=size: measure_actrhost(node, params, s, n), size, 0.3)
        count = round(measure_actrhost(node, params, size, count).chunks_per_s * (seconds + 3))
        runs: list[Run] = []

        def send_burst(size: int = size, count: int = count, runs: list[Run] = runs) -> None:
            runs.append(measure_actrhost(node, params, size, count))

        burst = threading.Thread(target=send_burst)
        burst.start()
        time.sleep(0.5)
        paths = {name: out_dir / f"{name}-{label(size).replace(' ', '')}.txt" for name in node.pids}
        recorders = [
            subprocess.Popen(
                [*PY_SPY, "-d", str(math.ceil(seconds)), "-p", str(pid), "-o", str(paths[name])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in node.pids.items()
        ]
        for proc in recorders:
            proc.wait()
        burst.join()
        if not runs:
            raise RuntimeError(f"the profiled burst of {label(size)} chunks failed")
        rate = runs[0].chunks_per_s
        for name, path in paths.items():
            print(
                f"\n## {name}, {label(size)} chunks, {rate:,.0f} chunks/s while recorded ({path})"
            )
            for share, frame in top_frames(path):
                print(f"{share:6.1%}  {share / rate * 1e6:7.2f} µs/chunk  {frame}")


def top_frames(path: Path, limit: int = 12) -> list[tuple[float, str]]:
    """(share of samples, frame) of the frames with the most own time in a raw py-spy file."""
    own: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        own[_short(stack.split(";")[-1]) or "(no Python stack sampled)"] += int(count)
    total = sum(own.values()) or 1
    return [(n / total, frame) for frame, n in own.most_common(limit)]


def _short(frame: str) -> str:
    """``f (/usr/…/site-packages/zmq/sugar/socket.py:12)`` -> ``f (zmq/sugar/socket.py:12)``."""
    name, _, where = frame.partition(" (")
    for marker in ("/site-packages/", "/lib/python3.11/", f"{REPO}/"):
        if marker in where:
            where = where[where.index(marker) + len(marker) :]
            break
    return f"{name} ({where}" if where else name


# -- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run, < 60 s")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 2)")
    parser.add_argument(
        "--payload",
        choices=["bytes", "ndarray"],
        default="bytes",
        help="what the source actor sends (default bytes)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="append results as a line")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="instead: py-spy both actor workers, keep raw files in DIR",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=5.0, metavar="S", help="per size (default 5)"
    )
    args = parser.parse_args()
    if args.peer:
        peer_main(args.peer)
        return

    params = QUICK if args.quick else FULL
    params = Params(**{**asdict(params), "payload": args.payload,
                       "rounds": args.rounds or params.rounds})  # fmt: skip
    # SIGTERM unwinds like Ctrl-C, so every finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = environment()
    print(
        f"# bench_stream ({params.mode}): {env['machine']}, {env['cpu_count']} CPUs "
        f"(pinned: {'yes' if env['pinned'] else 'no'}), load {env['loadavg_1min_at_start']:.1f}, "
        f"Python {env['python']}, numpy {env['numpy']}, pyzmq {env['pyzmq']} "
        f"(libzmq {env['libzmq']}), {params.rounds} rounds of ~{params.run_s} s runs, "
        f"payload {params.payload}",
        flush=True,
    )

    def say(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    folder = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    peer = ZmqPeer(folder)
    try:
        if args.profile:
            with running_node(folder / "node", params) as node:
                profile_workers(node, params, args.profile, args.profile_seconds)
            return
        memcpy = Memcpy()
        payloads = {size: np.full(size, 7, dtype=np.uint8).tobytes() for size in params.sizes}
        peer.start()
        with running_node(folder / "node", params) as node:
            cases: dict[str, Callable[[int, int], Run]] = {
                "z": lambda size, n: measure_pyzmq(peer, payloads[size], n, params.warmup_chunks),
                "a": lambda size, n: measure_actrhost(node, params, size, n),
            }
            started = time.monotonic()
            results = run_rounds(params, memcpy, cases, say)
            results["wall_s"] = time.monotonic() - started
        results["targets"] = check_targets(results["median"])
        print_table(results, params)
        if args.json:
            append_json(args.json, params, env, results)
    finally:
        peer.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
