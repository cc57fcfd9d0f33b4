#!/usr/bin/env python3
"""Benchmark: what a worker's per-route statistics cost per message.

Setup: one process, no I/O. The baseline is what a worker did per message before it kept
per-route statistics: one counter increment on a dataclass. The variant is what it does
now (``workers/_route_stats.py``): two ``time.monotonic_ns()`` reads and
``RouteStats.record`` (a counter and two 5-bit histograms), with handling times spread
over 20-400 µs as in a local call. Both run ``--messages`` times per round, interleaved
over ``--rounds`` rounds; the figures are medians over the rounds.

Metric: ns per message for each, and the difference (the cost of the statistics). Set it
against the local call's p50 from ``scripts/bench_local.py`` (≈ 100-250 µs here).

    python scripts/bench_route_stats.py            # 7 rounds of 200,000 messages
    python scripts/bench_route_stats.py --rounds 3 --messages 50000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actrhost.workers._route_stats import RouteStats


@dataclass
class _Counters:
    calls_served: int = 0


def baseline(messages: int) -> float:
    """ns per message: the counter increment alone."""
    counters = _Counters()
    start = time.perf_counter_ns()
    for _ in range(messages):
        counters.calls_served += 1
    return (time.perf_counter_ns() - start) / messages


def with_route_stats(messages: int, handled_ns: list[int]) -> float:
    """ns per message: the counter, two clock reads and ``RouteStats.record``."""
    counters = _Counters()
    stats = RouteStats()
    clock = time.monotonic_ns
    n = len(handled_ns)
    start = time.perf_counter_ns()
    for i in range(messages):
        started = clock()
        counters.calls_served += 1
        ended = clock()
        # Recorded values come from the spread below, not from the (tiny) clock delta, so
        # the histogram touches as many buckets as in a real worker.
        stats.record(
            handled_ns[i % n] // 4, handled_ns[i % n] + ended - started, request=True, error_code=0
        )
    return (time.perf_counter_ns() - start) / messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    handled_ns = [rng.randint(20_000, 400_000) for _ in range(4096)]
    base_runs, stats_runs = [], []
    with_route_stats(10_000, handled_ns)  # warm-up
    for _ in range(args.rounds):
        base_runs.append(baseline(args.messages))
        stats_runs.append(with_route_stats(args.messages, handled_ns))
    base = statistics.median(base_runs)
    variant = statistics.median(stats_runs)
    diffs = statistics.median(s - b for s, b in zip(stats_runs, base_runs, strict=True))
    print(f"rounds {args.rounds} x {args.messages:,} messages (medians)")
    print(f"baseline: counter only           {base:8.0f} ns/message")
    print(f"with per-route statistics        {variant:8.0f} ns/message")
    print(f"cost of the statistics           {diffs:8.0f} ns/message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
