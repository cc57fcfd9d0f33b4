"""Benchmark of the signaling server: registrations/s, discovery requests/s, latency,
server memory per registered actor.

Setup: one server process (``python -m actrhost.signaling``, what ``actrhost signal``
runs) and N client processes, each with one WebSocket (as a node's gateway has) carrying
its share of the actors. All on loopback.

Phases, each started by the parent at the same moment in every client:
  1. register: each client registers ``--actors`` actors (of ``--types`` types, each with
     a service schema) with ``--concurrency`` requests in flight.
  2. ``--rounds`` rounds, interleaved (this machine drifts between a fast and a slow
     state, so a baseline is only comparable when measured next to the figure):
     a. discover: each client runs ``--concurrency`` loops of discovery requests (random
        type, locked fingerprint, 1 candidate) for ``--seconds``;
     b. baseline: the same loops against a bare websockets echo server (frames of the
        same size, same processes), the transport's ceiling.
  Reported: medians over rounds, and discovery / baseline per round.

Memory per actor = (server RSS after registering - RSS before) / actors. Heartbeats run
during the rounds (every ``--heartbeat-interval`` s, batched per client).

Usage:
  python scripts/bench_signaling.py                      # 4 clients x 1500 actors
  python scripts/bench_signaling.py --clients 8 --actors 2500 --rounds 5 --json-out r.jsonl
  python scripts/bench_signaling.py --ranking-micro      # ranking cost per actor only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMA = """syntax = "proto3"; package bench.t{n};
message Req {{ string id = 1; uint32 count = 2; }}
message Resp {{ string id = 1; }}
service Svc{n} {{ rpc Do(Req) returns (Resp); }}
"""


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ranking_micro() -> None:
    """Cost of ranking alone (in-process): rank_candidates over buckets of n actors."""
    from actrhost._fingerprint import service_fingerprint
    from actrhost._ids import ActrId, ActrType, Realm
    from actrhost.signaling._presence import ActorEntry
    from actrhost.signaling._ranking import SchemaStore, rank_candidates
    from actrhost.signaling._types import Availability

    fp = service_fingerprint(SCHEMA.format(n=0))
    store = SchemaStore()
    store.learn(fp, SCHEMA.format(n=0))
    actr_type = ActrType("bench", "T0")
    for n in (10, 100, 1000):
        entries = [
            ActorEntry(
                ActrId(Realm(1), i, actr_type), None, fp, (), Availability.AVAILABLE,
                random.randrange(10), time.monotonic(),
            )
            for i in range(n)
        ]  # fmt: skip
        reps = max(10, 200_000 // n)
        t0 = time.perf_counter()
        for _ in range(reps):
            rank_candidates(
                entries, store=store, client_fingerprint=fp, caller_type=actr_type,
                caller_realm=1, count=1,
            )  # fmt: skip
        per_call = (time.perf_counter() - t0) / reps
        print(f"  ranking {n:5d} actors: {per_call * 1e6:8.1f} µs per request, "
              f"{per_call * 1e6 / n:.3f} µs per actor")  # fmt: skip


# -- client process ------------------------------------------------------------------------


async def _worker(url: str, echo_url: str, index: int, args: argparse.Namespace) -> None:
    from websockets.asyncio.client import connect

    from actrhost._fingerprint import service_fingerprint
    from actrhost.signaling import SignalingClient

    schemas = [SCHEMA.format(n=n) for n in range(args.types)]
    fingerprints = [service_fingerprint(s) for s in schemas]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def report(obj: dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    async with SignalingClient(url, max_in_flight=args.concurrency, request_timeout_s=60) as client:
        probe = await client.register("bench+Probe", 1)
        report({"ready": True})

        # Phase 1: registrations.
        await reader.readline()
        sem = asyncio.Semaphore(args.concurrency)
        reg_latencies: list[float] = []

        async def register_one(i: int) -> None:
            n = (index * args.actors + i) % args.types
            async with sem:
                t0 = time.perf_counter()
                await client.register(
                    f"bench+T{n}", 1, fingerprint=fingerprints[n], schema_text=schemas[n]
                )
                reg_latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(register_one(i) for i in range(args.actors)))
        report({"phase": "register", "seconds": time.perf_counter() - t0, "lat": reg_latencies})

        # Then rounds of discovery and of the bare-echo baseline, as the parent asks.
        frame = os.urandom(90)  # about the size of a discovery request
        # One echo connection per loop: a bare echo has no request ids to multiplex on.
        conns = [
            await connect(echo_url, proxy=None, compression=None) for _ in range(args.concurrency)
        ]
        rng = random.Random()

        async def discover_loop(stop_at: float, lat: list[float]) -> int:
            found = 0
            while loop.time() < stop_at:
                n = rng.randrange(args.types)
                t = time.perf_counter()
                result = await probe.discover(f"bench+T{n}", client_fingerprint=fingerprints[n])
                lat.append(time.perf_counter() - t)
                found += result.best is not None
            return found

        async def echo_loop(ws: Any, stop_at: float, lat: list[float]) -> int:
            while loop.time() < stop_at:
                t = time.perf_counter()
                await ws.send(frame)
                await ws.recv()
                lat.append(time.perf_counter() - t)
            return 0

        while (command := (await reader.readline()).decode().strip()) in ("discover", "baseline"):
            lat: list[float] = []
            stop_at = loop.time() + args.seconds
            t0 = time.perf_counter()
            if command == "discover":
                loops = [discover_loop(stop_at, lat) for _ in range(args.concurrency)]
            else:
                loops = [echo_loop(ws, stop_at, lat) for ws in conns]
            found = sum(await asyncio.gather(*loops))
            elapsed = time.perf_counter() - t0
            report({"phase": command, "seconds": elapsed, "lat": lat, "found": found})
        for ws in conns:
            await ws.close()


async def _echo_server() -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"echo listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


# -- parent ----------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"client process {proc.pid} exited ({proc.wait()})")
    result: dict[str, Any] = json.loads(line)
    return result


def _go(procs: list[subprocess.Popen[str]], command: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--actors", type=int, default=1500, help="actors per client process")
    parser.add_argument("--types", type=int, default=50, help="distinct actor types")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per client")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="discover/baseline rounds")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--json-out", help="append the result as one JSON line to this file")
    parser.add_argument(
        "--worker", nargs=3, metavar=("URL", "ECHO_URL", "INDEX"), help=argparse.SUPPRESS
    )
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ranking-micro", action="store_true", help="only time the ranking, in-process"
    )
    args = parser.parse_args()

    if args.ranking_micro:
        ranking_micro()
        return
    if args.echo_server:
        asyncio.run(_echo_server())
        return
    if args.worker:
        url, echo_url, index = args.worker
        asyncio.run(_worker(url, echo_url, int(index), args))
        return

    from actrhost.signaling._testing import ServerProcess

    common = [
        "--actors", str(args.actors), "--types", str(args.types),
        "--concurrency", str(args.concurrency), "--seconds", str(args.seconds),
    ]  # fmt: skip
    with ServerProcess(heartbeat_interval=args.heartbeat_interval) as server:
        echo = _spawn(["--echo-server"])
        assert echo.stdout is not None
        echo_url = echo.stdout.readline().split()[-1]
        procs = [
            _spawn(["--worker", server.url, echo_url, str(i), *common]) for i in range(args.clients)
        ]
        try:
            for proc in procs:
                _read_json(proc)  # ready: connected, probe registered
            time.sleep(0.5)  # let the server settle before the memory baseline
            rss_before = server.rss_bytes()

            def phase(command: str) -> dict[str, Any]:
                _go(procs, command)
                results = [_read_json(proc) for proc in procs]
                lat = [x for r in results for x in r["lat"]]
                return {
                    "count": len(lat),
                    "per_s": len(lat) / max(r["seconds"] for r in results),
                    "p50_ms": 1000 * percentile(lat, 0.50),
                    "p99_ms": 1000 * percentile(lat, 0.99),
                    "found": sum(r.get("found", 0) for r in results),
                }

            register = phase("register")
            rss_after = server.rss_bytes()
            rounds = []
            for _ in range(args.rounds):  # interleaved: the machine drifts between states
                rounds.append({"discover": phase("discover"), "baseline": phase("baseline")})
            _go(procs, "exit")
        finally:
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            echo.kill()
            echo.wait()

    actors = args.clients * args.actors
    import google.protobuf
    import websockets

    def median(key: str, sub: str) -> float:
        return statistics.median(r[key][sub] for r in rounds)

    ratios = [r["discover"]["per_s"] / r["baseline"]["per_s"] for r in rounds]
    record = {
        "bench": "signaling",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "clients": args.clients,
        "actors": actors,
        "types": args.types,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "protobuf": google.protobuf.__version__,
        "server_rss_before_mib": rss_before / 2**20,
        "server_rss_after_mib": rss_after / 2**20,
        "bytes_per_actor": (rss_after - rss_before) / actors,
        "register": register,
        "rounds_detail": rounds,
        "discover_per_s_median": median("discover", "per_s"),
        "discover_p50_ms_median": median("discover", "p50_ms"),
        "discover_p99_ms_median": median("discover", "p99_ms"),
        "baseline_per_s_median": median("baseline", "per_s"),
        "discover_vs_baseline_median": statistics.median(ratios),
    }
    print(
        f"signaling benchmark: {args.clients} client processes x {args.actors} actors, "
        f"{args.types} types, {args.concurrency} in flight per client, {os.cpu_count()} CPUs"
    )
    print(
        f"  register  {register['count']:7d} actors  {register['per_s']:8.0f} /s  "
        f"p50 {register['p50_ms']:6.2f} ms  p99 {register['p99_ms']:6.2f} ms"
    )
    for i, r in enumerate(rounds):
        d, b = r["discover"], r["baseline"]
        print(
            f"  round {i}: discover {d['per_s']:7.0f} /s  p50 {d['p50_ms']:6.2f} ms  "
            f"p99 {d['p99_ms']:6.2f} ms | bare echo {b['per_s']:7.0f} /s | ratio {ratios[i]:.2f}"
        )
    print(
        f"  median discover {record['discover_per_s_median']:.0f} /s, "
        f"p50 {record['discover_p50_ms_median']:.2f} ms, "
        f"p99 {record['discover_p99_ms_median']:.2f} ms, "
        f"ratio to bare echo {record['discover_vs_baseline_median']:.2f}"
    )
    print(
        f"  server RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
        f"for {actors} actors: {record['bytes_per_actor']:.0f} bytes per actor"
    )
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
