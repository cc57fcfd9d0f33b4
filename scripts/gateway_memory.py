#!/usr/bin/env python
"""What a gateway holds in memory when traffic for another node or a local actor cannot go.

Not a benchmark: two harness nodes (real gateway processes, fake workers in this
process, a real signaling server; ``actrhost.gateway._testing``) and one flood, then the
resident memory (``VmRSS``) of the gateway that holds what waits, before and at its peak.

``stuck-worker``: node A floods node B's actor with ``--count`` tells or calls while
that actor's worker reads nothing; B's gateway holds them (``Tuning.worker_backlog_bytes``
bounds it, each frame counted with ``WAITING_COST_BYTES``). ``partition``: node A floods
node B's actor with tells for ``--seconds`` while B's gateway is stopped (SIGSTOP): A's
gateway holds them through its failed reconnect attempts (bounded by
``Tuning.reconnect_queue_bytes``, then dropped and the sender told, and by ZeroMQ's
pipes).

    python scripts/gateway_memory.py stuck-worker --kind call --count 50000
    python scripts/gateway_memory.py partition --seconds 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actrhost import ActrError  # noqa: E402
from actrhost.gateway._testing import (  # noqa: E402
    FAST_TUNING,
    HarnessNode,
    LoopRunner,
    start_nodes,
)
from actrhost.signaling._testing import ServerProcess  # noqa: E402


def rss_mib(pid: int) -> int:
    """Resident memory of process ``pid``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def stuck_worker(a: HarnessNode, b: HarnessNode, args: argparse.Namespace) -> str:
    """Flood B's actor while its worker reads nothing; B's gateway memory."""
    assert b.process is not None
    worker, target, payload = b.workers["b1"], b.ids["b1"], bytes(args.size)
    before = rss_mib(b.process.pid)
    worker.rpc.pause_reading()
    calls: list[asyncio.Future[bytes]] = []
    try:
        for _ in range(args.count):
            if args.kind == "tell":
                await a.tell("a1", target, "note", payload)
            else:  # all outstanding at once, as many callers would have them
                calls.append(
                    asyncio.ensure_future(a.call("a1", target, "echo", payload, timeout_s=60))
                )
        await asyncio.sleep(3)  # what is on its way arrives
        peak = rss_mib(b.process.pid)
        undeliverable = (await b.stats())["undeliverable"]
    finally:
        worker.rpc.resume_reading()
    refused = sum(
        isinstance(r, ActrError) for r in await asyncio.gather(*calls, return_exceptions=True)
    )
    return (
        f"{args.count:,} {args.kind}s of {args.size} bytes for a worker that reads nothing: "
        f"B's gateway {before} -> {peak} MiB; calls refused {refused:,}, "
        f"tells undeliverable (refused, or waited 5 s) {undeliverable:,}"
    )


async def partition(a: HarnessNode, b: HarnessNode, args: argparse.Namespace) -> str:
    """Flood B's actor with tells while B's gateway is stopped; A's gateway memory."""
    assert a.process is not None and b.process is not None
    target, payload = b.ids["b1"], bytes(args.size)
    before = peak = rss_mib(a.process.pid)
    accepted = failed = 0
    refused = a.workers["a1"].rpc.refused  # what a real worker checks before each tell
    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            try:
                refused.check(target)
                await a.tell("a1", target, "note", payload)
                accepted += 1
            except ActrError:
                # The gateway said it drops them (the link's queue is full), or the
                # deadline passed waiting for room.
                failed += 1
                await asyncio.sleep(0)  # (a worker's actor would wait or do other work)
            if (accepted + failed) % 1000 == 0:
                peak = max(peak, rss_mib(a.process.pid))
        lanes = (await a.stats())["remote_nodes"][b.node_id]["lanes"]
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    return (
        f"tells of {args.size} bytes for {args.seconds:g} s to a node whose gateway is "
        f"stopped: {accepted:,} accepted ({lanes['rpc_reliable']['dropped']:,} of them "
        f"dropped by A's gateway), {failed:,} failed; A's gateway {before} -> "
        f"{max(peak, rss_mib(a.process.pid))} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("stuck-worker", "partition"))
    parser.add_argument("--kind", choices=("call", "tell"), default="tell")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=16, help="payload bytes")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gateway-memory-"))
    runner = LoopRunner()
    try:
        with ServerProcess() as server:
            tuning = dict(FAST_TUNING)  # a stopped gateway is noticed in 1.5 s
            a = HarnessNode(folder / "a", server.url, [("a1", "t+A")], name="a", tuning=tuning)
            b = HarnessNode(
                folder / "b", server.url, [("b1", "t+B")], name="b", hwm=4, tuning=tuning
            )
            try:
                runner.run(start_nodes(a, b))
                runner.run(a.call("a1", b.ids["b1"], "echo", b"up"))
                flood = stuck_worker if args.case == "stuck-worker" else partition
                print(runner.run(flood(a, b, args), timeout_s=args.seconds + 120), flush=True)
            finally:
                runner.run(a.stop())
                runner.run(b.stop())
    finally:
        runner.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
