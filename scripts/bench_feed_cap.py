#!/usr/bin/env python
"""A flood of small tells from another node, with and without the cap on a worker's
feed (``actrhost._rpc.FEED_RECEIVE_HWM``).

Setup: two harness nodes (``actrhost.gateway._testing.HarnessNode``: real gateway
processes, a real signaling server, loopback) whose actors are played in this process;
node A's actor sends ``--tells`` tells of 64 bytes to node B's, which reads them as fast
as they come (``hwm_messages`` 10,000). Timed from the first send until B's actor has
all. Variants are values of the cap, the first the baseline: no cap (the feed's queue
is ``hwm_messages``, as before the cap). Each round runs every variant once, in the
order given; the report gives tells/s per variant, its median over rounds, and the
median of the per-round ratios to the baseline.

    python scripts/bench_feed_cap.py                          # 3 rounds: none, 1024, 256
    python scripts/bench_feed_cap.py --rounds 5 --caps 1000000000,1024
    python scripts/bench_feed_cap.py --rounds 1 --caps 1024 --tell-bytes 4096
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import actrhost._rpc as rpc  # noqa: E402
from actrhost.gateway._testing import FAST_TUNING, HarnessNode, LoopRunner, start_nodes  # noqa: E402
from actrhost.signaling._testing import ServerProcess  # noqa: E402

TELL_BYTES = 64
NO_CAP = 1_000_000_000


def flood(cap: int, count: int, server_url: str, folder: Path, size: int = TELL_BYTES) -> float:
    """Tells/s of one flood with the feed's queue capped at ``cap`` frames."""
    rpc.FEED_RECEIVE_HWM = cap  # read when a worker opens its feed (node B's, here)
    runner = LoopRunner()
    tuning = dict(FAST_TUNING)
    a = HarnessNode(folder / "a", server_url, [("a1", "t+A")], name="a", tuning=tuning)
    b = HarnessNode(folder / "b", server_url, [("b1", "t+B")], name="b", tuning=tuning)
    try:
        runner.run(start_nodes(a, b))
        assert runner.run(a.call("a1", b.ids["b1"], "echo", b"up")) == b"up"  # connected
        received = b.workers["b1"].received.tells

        async def go() -> float:
            started = time.monotonic()
            for n in range(count):
                await a.tell("a1", b.ids["b1"], "note", b"%06d" % n + bytes(size - 6))
            while len(received) < count:
                await asyncio.sleep(0.01)
            return count / (time.monotonic() - started)

        return float(runner.run(go(), timeout_s=600))
    finally:
        runner.run(a.stop())
        runner.run(b.stop())
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tells", type=int, default=60_000)
    parser.add_argument("--tell-bytes", type=int, default=TELL_BYTES, help="payload of a tell")
    parser.add_argument(
        "--caps", default=f"{NO_CAP},1024,256", help="feed caps, the first the baseline"
    )
    args = parser.parse_args()
    caps = [int(text) for text in args.caps.split(",")]
    rates: dict[int, list[float]] = {cap: [] for cap in caps}
    with ServerProcess() as server, tempfile.TemporaryDirectory(prefix="bfc") as tmp:
        for round_no in range(args.rounds):
            for cap in caps:
                folder = Path(tmp) / f"r{round_no}-{cap}"
                rates[cap].append(flood(cap, args.tells, server.url, folder, args.tell_bytes))
            print(
                f"round {round_no + 1}: " + ", ".join(f"{c}: {rates[c][-1]:,.0f}/s" for c in caps)
            )
    base = rates[caps[0]]
    for cap in caps:
        ratios = [rate / base_rate for rate, base_rate in zip(rates[cap], base, strict=True)]
        label = "no cap" if cap >= NO_CAP else f"cap {cap}"
        print(
            f"{label}: median {statistics.median(rates[cap]):,.0f} tells/s, "
            f"{statistics.median(ratios):.2f} x baseline"
        )


if __name__ == "__main__":
    main()
