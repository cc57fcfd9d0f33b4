#!/usr/bin/env python3
"""Load scenarios: start a node of ours, run ``actrhost load`` against it, keep JSON + PNG.

Shared by ``scripts/load_echo.py``, ``load_tells.py``, ``load_streams.py`` and
``load_chain.py`` (and runnable itself: ``load_scenarios.py SCENARIO OUT_DIR``).

Setup: each scenario copies its config from ``configs/`` into a temp dir (so it never
collides with a node the user already runs from the same file), starts the node with
``python -m actrhost run``, waits until every actor runs, runs ``actrhost load`` once per
step with ``--json`` and ``--plot`` into OUT_DIR, and stops the node (SIGTERM, then SIGKILL
of its process group). OUT_DIR also gets ``summary.json``: one line of figures per step and
the environment. Everything stays on this machine (ipc sockets, shared memory).

Metric: calls (or tells, or chunks) per second that succeeded inside the measured window,
and latency percentiles; open-loop latency counts from each request's scheduled time.

    python scripts/load_echo.py out/echo              # ~1 minute
    python scripts/load_echo.py out/echo --quick      # smoke run, ~20 s
    python scripts/load_scenarios.py --list
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO = SCRIPTS_DIR.parent
sys.path.insert(0, str(REPO))  # run from a source checkout without installing

import actrhost  # noqa: E402

NODE_START_TIMEOUT_S = 30.0
NODE_STOP_TIMEOUT_S = 15.0
#: Default p99 bound of the capacity search ("calls/s at p99 <= 1 ms").
CAPACITY_P99_MS = 1.0
#: The raw baseline sends one request at a time: above this rate it would measure its own
#: queueing (a 64-byte round trip takes ~0.1-0.2 ms here), so it is left out.
RAW_BASELINE_MAX_RATE = 5000.0
#: A rate step passes only if this share of its requests succeeded inside the window.
CAPACITY_MIN_ACHIEVED = 0.95


@dataclass
class Step:
    """One ``actrhost load`` run of a scenario."""

    name: str
    args: list[str]


@dataclass
class Scenario:
    """A node config and the steps run against it."""

    name: str
    config: str  # file name in configs/
    description: str
    steps: list[Step]
    capacity: dict[str, Any] | None = None  # target/route of a p99 capacity search


def _duration(args: argparse.Namespace) -> str:
    return "2s" if args.quick else f"{args.duration:g}s"


SCENARIOS: dict[str, Scenario] = {
    "echo": Scenario(
        "echo",
        "echo.toml",
        "64-byte calls to demo.Echo.Say: latency floor, saturation, and capacity at p99 <= 1 ms",
        [
            Step("echo-c1", ["-c", "1", "-w", "1"]),
            Step("echo-c8", ["-c", "8"]),
            Step("echo-c32", ["-c", "32"]),
        ],
        capacity={
            "target": "demo+Echo",
            "route": "demo.Echo.Say",
            "payload": ["--payload-size", "64"],
        },
    ),
    "tells": Scenario(
        "tells",
        "echo.toml",
        "64-byte tells to demo.Echo.Say: hand-over rate, and what the node served",
        [
            Step("tells-c32", ["--tell", "-c", "32"]),
            Step("tells-rate5000", ["--tell", "--rate", "5000"]),
        ],
    ),
    "streams": Scenario(
        "streams",
        "chain.toml",
        "1 MiB data-stream chunks to the chain's Tail (shared-memory ring)",
        [
            Step("streams-1mib-c2", ["--stream", "--chunk-size", "1MiB", "-c", "2"]),
            Step("streams-1mib-rate1000", ["--stream", "--chunk-size", "1MiB", "--rate", "1000"]),
        ],
    ),
    "chain": Scenario(
        "chain",
        "chain.toml",
        "calls through Head -> Middle -> Tail (three calls each), 64 bytes",
        [
            Step("chain-c1", ["-c", "1", "-w", "1"]),
            Step("chain-c16", ["-c", "16"]),
            Step("chain-rate1000", ["--rate", "1000"]),
        ],
    ),
}
#: What each scenario's steps target (added to every step).
TARGETS = {
    "echo": ["--target", "demo+Echo", "--route", "demo.Echo.Say", "--payload-size", "64"],
    "tells": ["--target", "demo+Echo", "--route", "demo.Echo.Say", "--payload-size", "64"],
    "streams": ["--target", "tail"],
    "chain": ["--target", "head", "--route", "chain.Head.Run", "--payload-size", "64"],
}


# -- the node ----------------------------------------------------------------------------


@contextlib.contextmanager
def running_node(config_name: str, folder: Path) -> Iterator[Path]:
    """A node from ``configs/<config_name>``, copied into ``folder``; stopped on exit."""
    text = (REPO / "configs" / config_name).read_text()
    # The copy imports examples/ from the repository, wherever the copy lives.
    text = re.sub(r"(?m)^python_path\s*=.*$", f"python_path = [{json.dumps(str(REPO))}]", text)
    text = re.sub(r'(?m)^name\s*=\s*"([^"]+)"', rf'name = "\1-load{os.getpid()}"', text, count=1)
    config = folder / config_name
    config.write_text(text)
    log = open(folder / "node.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "actrhost", "run", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        _wait_running(config, proc)
        yield config
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(NODE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _wait_running(config: Path, proc: subprocess.Popen[bytes]) -> None:
    async def all_running() -> bool:
        async with actrhost.connect(config) as shell:
            infos = await shell.actors()
            return bool(infos) and all(i.state == "running" for i in infos)

    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with {proc.returncode}; see its node.log")
        with contextlib.suppress(actrhost.ActrError, OSError):
            if asyncio.run(all_running()):
                return
        time.sleep(0.1)
    raise SystemExit(f"the node did not run within {NODE_START_TIMEOUT_S:g} s")


# -- the raw baseline --------------------------------------------------------------------

_RAW_PEER = """
import os, sys, threading, zmq
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
sock = zmq.Context().socket(zmq.REP)
sock.bind(sys.argv[1])
print("ready", flush=True)
while True:
    sock.send(sock.recv())
"""


class RawBaseline:
    """Blocking pyzmq REQ/REP over ipc between two processes, paced like the open loop.

    The floor of this machine: what a 64-byte round trip costs with no actrhost at all,
    measured from each request's scheduled time exactly as ``actrhost load --rate`` does
    (one request at a time: a late answer delays the next send, and that delay counts).
    Its p99 next to the node's tells how much of a tail is the machine's own.
    """

    def __init__(self, folder: Path) -> None:
        import zmq

        self.endpoint = f"ipc://{folder / 'raw-baseline.sock'}"
        self.peer = subprocess.Popen(
            [sys.executable, "-c", _RAW_PEER, self.endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.peer.stdout is not None
        self.peer.stdout.readline()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def run(self, rate: float, duration_s: float, warmup_s: float = 0.5) -> tuple[float, float]:
        """``(p50_ms, p99_ms)`` of ``rate`` round trips per second for ``duration_s``."""
        payload = b"x" * 64
        period = 1.0 / rate
        start = time.perf_counter() + 0.01
        measure_from = start + warmup_s
        count = int((warmup_s + duration_s) * rate)
        latencies = []
        for k in range(count):
            due = start + k * period
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.sock.send(payload)
            self.sock.recv()
            if due >= measure_from:
                latencies.append(time.perf_counter() - due)
        latencies.sort()
        n = len(latencies)
        return latencies[n // 2] * 1e3, latencies[min(n - 1, math.ceil(n * 0.99) - 1)] * 1e3

    def close(self) -> None:
        """Stop the peer (closing its stdin) and the socket."""
        self.sock.close()
        self.ctx.term()
        if self.peer.stdin:
            self.peer.stdin.close()
        try:
            self.peer.wait(5)
        except subprocess.TimeoutExpired:
            self.peer.kill()
            self.peer.wait()


# -- runs --------------------------------------------------------------------------------


def run_load(config: Path, out_dir: Path, name: str, args: list[str], plot: bool) -> dict[str, Any]:
    """One ``actrhost load`` run; prints its table, returns its JSON."""
    json_path = out_dir / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "actrhost",
        "load",
        str(config),
        *args,
        "--json",
        str(json_path),
    ]
    if plot:
        command += ["--plot", str(out_dir / f"{name}.png")]
    print(f"\n=== {name}: actrhost load {' '.join(args)}", flush=True)
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"{name}: actrhost load exited with {result.returncode}")
    return json.loads(json_path.read_text())


def figures(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The summary line of one run."""
    lat = doc["latency_ms"]
    return {
        "name": name,
        "command": " ".join(doc["command"][1:]),
        "loop": doc["load"]["loop"],
        "concurrency": doc["load"]["concurrency"],
        "rate_per_s": doc["load"]["rate_per_s"],
        "ok_per_s": round(doc["throughput"]["ok_per_s"], 1),
        "bytes_per_s": round(doc["throughput"]["bytes_per_s"]),
        "errors": doc["counts"]["errors"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "p99_9_ms": lat["p99_9"],
        "max_ms": lat["max"],
        "send_lag_p99_ms": doc["send_lag_ms"]["p99"] if doc["load"]["loop"] == "open" else None,
    }


def _step(
    config: Path,
    out_dir: Path,
    name: str,
    load_args: list[str],
    plot: bool,
    round_no: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    file_name = name if args.rounds == 1 else f"{name}-r{round_no}"
    line = figures(name, run_load(config, out_dir, file_name, load_args, plot))
    line["round"] = round_no
    return line


def _passed(line: dict[str, Any], bound_ms: float) -> bool:
    rate = line["rate_per_s"]
    return (
        line["errors"] == 0
        and line["p99_ms"] is not None
        and line["p99_ms"] <= bound_ms
        and line["ok_per_s"] >= CAPACITY_MIN_ACHIEVED * rate
    )


def capacity_ladder(saturation: float) -> list[float]:
    """Rates tried: 25 % steps from 5 % of the saturation throughput up to 120 % of it."""
    rates = []
    rate = max(100.0, round(saturation * 0.05, -2))
    while rate <= saturation * 1.2:
        rates.append(rate)
        rate = max(rate + 100, round(rate * 1.25, -2))
    return rates


def capacity_round(
    config: Path,
    out_dir: Path,
    scenario: Scenario,
    args: argparse.Namespace,
    rates: list[float],
    round_no: int,
    baseline: RawBaseline | None,
) -> list[dict[str, Any]]:
    """One climb of the ladder, stopped after two failed steps in a row (unless
    ``--full-ladder``); with a baseline, each step follows a raw run at the same rate.

    A step fails on p99 above the bound, any error, or less than 95 % of the rate achieved.
    It uses ``--capacity-workers`` generators (default 1): on a 2-core machine a second
    generator competes with the node's worker for a core, and its send lag alone would
    cross a 1 ms p99 — the search is about the node, so the client stays small.
    """
    assert scenario.capacity is not None
    target = ["--target", scenario.capacity["target"], "--route", scenario.capacity["route"]]
    target += [*scenario.capacity["payload"], "--workers", str(args.capacity_workers)]
    lines = []
    failures = 0
    for rate in rates:
        raw = None
        if baseline is not None and rate <= RAW_BASELINE_MAX_RATE:
            raw = baseline.run(rate, 2.0 if args.quick else args.duration)
        load_args = [*target, "--rate", f"{rate:g}", "--duration", _duration(args), "-q"]
        line = _step(config, out_dir, f"capacity-rate{rate:.0f}", load_args, False, round_no, args)
        line["passed"] = _passed(line, args.p99_bound_ms)
        if raw is not None:
            line["raw_p50_ms"], line["raw_p99_ms"] = raw
        lines.append(line)
        failures = 0 if line["passed"] else failures + 1
        if failures == 2 and not args.full_ladder:
            break
    return lines


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def aggregate(lines: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Medians over the rounds of one step (a step a round skipped counts as failed)."""
    first = lines[0]
    merged = {k: first[k] for k in ("name", "command", "loop", "concurrency", "rate_per_s")}
    merged["rounds"] = len(lines)
    for key in (
        "ok_per_s",
        "bytes_per_s",
        "p50_ms",
        "p99_ms",
        "p99_9_ms",
        "max_ms",
        "send_lag_p99_ms",
        "raw_p50_ms",
        "raw_p99_ms",
    ):
        merged[key] = _median([ln[key] for ln in lines if ln.get(key) is not None])
    merged["p99_ms_range"] = [
        min(ln["p99_ms"] or 0 for ln in lines),
        max(ln["p99_ms"] or 0 for ln in lines),
    ]
    merged["errors"] = max(ln["errors"] for ln in lines)
    if "passed" in first:
        merged["passed_rounds"] = sum(ln["passed"] for ln in lines)
        merged["passed"] = merged["passed_rounds"] * 2 > rounds  # a majority of all rounds
    return merged


def run_scenario(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """Start the node, run every step (and the capacity search), write summary.json.

    With ``--rounds N`` the steps run N times, interleaved (round 1 of every step, then
    round 2, ...), and the summary holds medians: the machine drifts between fast and slow
    phases, which interleaving spreads over all steps alike.
    """
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = not args.no_plot
    if plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print(
                "matplotlib is not installed: no PNGs (pip install 'actrhost[plot]')",
                file=sys.stderr,
            )
            plot = False
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rounds": args.rounds,
        "duration_s": 2.0 if args.quick else args.duration,
        "environment": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": os.getloadavg(),
        },
    }
    per_step: dict[str, list[dict[str, Any]]] = {}
    ladder: dict[float, list[dict[str, Any]]] = {}
    extra = ["--duration", _duration(args), "--warmup", "0.5s" if args.quick else "1s", "-q"]
    with (
        tempfile.TemporaryDirectory(prefix="actrhost-load-") as tmp,
        running_node(scenario.config, Path(tmp)) as config,
        contextlib.ExitStack() as stack,
    ):
        baseline = None
        if args.baseline and scenario.capacity is not None:
            baseline = RawBaseline(Path(tmp))
            stack.callback(baseline.close)
        rates: list[float] = []
        for round_no in range(1, args.rounds + 1):
            for step in scenario.steps:
                load_args = [*TARGETS[scenario.name], *step.args, *extra]
                line = _step(config, out_dir, step.name, load_args, plot, round_no, args)
                per_step.setdefault(step.name, []).append(line)
            if scenario.capacity is None or args.no_capacity:
                continue
            if args.rates:
                rates = [float(r) for r in args.rates.split(",")]
            if not rates:  # the ladder is fixed by the first round's saturation
                best = max(ln["ok_per_s"] for lines in per_step.values() for ln in lines)
                rates = capacity_ladder(best)
            for line in capacity_round(config, out_dir, scenario, args, rates, round_no, baseline):
                ladder.setdefault(line["rate_per_s"], []).append(line)
    summary["environment"]["load_average_after"] = os.getloadavg()
    summary["runs"] = [aggregate(lines, args.rounds) for lines in per_step.values()]
    summary["saturation_ok_per_s"] = max(r["ok_per_s"] for r in summary["runs"])
    if ladder:
        steps = [aggregate(lines, args.rounds) for _, lines in sorted(ladder.items())]
        summary["capacity"] = {
            "p99_bound_ms": args.p99_bound_ms,
            "workers": args.capacity_workers,
            "rate_per_s": max((s["rate_per_s"] for s in steps if s["passed"]), default=0.0),
            "steps": steps,
        }
    summary["all_runs"] = [ln for lines in per_step.values() for ln in lines] + [
        ln for lines in ladder.values() for ln in lines
    ]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """A compact table of every step (medians over the rounds)."""
    rounds = summary["rounds"]
    print(f"\n=== {summary['scenario']}: {summary['description']}")
    if rounds > 1:
        print(f"medians of {rounds} interleaved rounds; p99 range over the rounds")
    print(
        f"{'run':<26}{'ok/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99 range':>16}"
        f"{'max ms':>9}{'errors':>8}{'raw p99':>9}"
    )
    runs = list(summary["runs"])
    capacity = summary.get("capacity")
    if capacity:
        runs += capacity["steps"]
    for run in runs:
        low, high = run["p99_ms_range"]
        raw = f"{run['raw_p99_ms']:.3f}" if run.get("raw_p99_ms") is not None else ""
        mark = ""
        if "passed" in run:
            mark = f"  {'ok' if run['passed'] else '--'} {run['passed_rounds']}/{rounds}"
        print(
            f"{run['name']:<26}{run['ok_per_s']:>10,.0f}{run['p50_ms'] or 0:>9.3f}"
            f"{run['p99_ms'] or 0:>9.3f}{f'{low:.2f}-{high:.2f}':>16}{run['max_ms'] or 0:>9.2f}"
            f"{run['errors']:>8}{raw:>9}{mark}"
        )
    if capacity:
        bound = capacity["p99_bound_ms"]
        print(f"capacity at p99 <= {bound:g} ms: {capacity['rate_per_s']:,.0f}/s")
    print(f"saturation (best step): {summary['saturation_ok_per_s']:,.0f} ok/s")


def main(default: str | None = None, argv: list[str] | None = None) -> int:
    """Command line of the scenario scripts; ``default`` fixes the scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    if default is None:
        parser.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS))
        parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("out_dir", nargs="?", help="folder for the JSON and PNG files")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--quick", action="store_true", help="2 s runs: a smoke test")
    parser.add_argument("--no-plot", action="store_true", help="JSON only")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every step N times, interleaved (medians)"
    )
    parser.add_argument("--no-capacity", action="store_true", help="skip the p99 capacity search")
    parser.add_argument(
        "--capacity-workers", type=int, default=1, help="generators of the capacity search (1)"
    )
    parser.add_argument(
        "--p99-bound-ms", type=float, default=CAPACITY_P99_MS, help="capacity search bound (1)"
    )
    parser.add_argument(
        "--full-ladder", action="store_true", help="climb every rate, even past failures"
    )
    parser.add_argument("--rates", help="the capacity ladder's rates, e.g. 1000,2000,4000")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="before each ladder step, the raw pyzmq round trip at the same rate",
    )
    args = parser.parse_args(argv)
    if default is None and args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<10}{scenario.description}")
        return 0
    name = default or args.scenario
    if name is None or args.out_dir is None:
        parser.error("give a scenario and an output folder")
    run_scenario(SCENARIOS[name], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
