#!/usr/bin/env python
"""Where a remote call's time goes: stage by stage, across the three processes.

Setup as in ``bench_remote.py`` (two real gateway processes, a real signaling server,
this process playing both nodes' workers). Every process records ``time.monotonic_ns()``
(one clock for the whole machine) when a call passes certain functions: our ZeroMQ
sends and drains, the gateway's handlers, the envelope codec, aiortc's SCTP and DTLS
entry points, aioice's hand-over to DTLS. The gateways get the wrappers from a generated
``sitecustomize`` module put first on their ``PYTHONPATH``; the recorded events are
written when they stop.

For each call the events inside its window form a sequence; the report takes the most
common sequence and prints, per event, the median time since the call started and the
step from the event before. Wrapping costs about 1 µs per event, so the total is ≈ 10 %
above ``bench_remote.py``'s figure. It is a diagnostic, not a benchmark: read it for
proportions. ``docs/gateway.md`` (Benchmark) shows one run.

    python scripts/trace_remote.py                 # 1,000 calls
    python scripts/trace_remote.py --calls 3000 --plain   # aiortc without the tuning
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actrhost.gateway._ice import use_host_addresses  # noqa: E402
from actrhost.gateway._testing import HarnessNode, start_nodes  # noqa: E402
from actrhost.signaling._testing import ServerProcess  # noqa: E402

TRACE_DIR_ENV = "ACTRHOST_TRACE_DIR"

# The generated sitecustomize: wraps the traced functions when TRACE_DIR_ENV is set.
# (module path, class or "", function, label, is it a coroutine function)
TRACED = [
    ("actrhost._zmqloop", "LoopSocket", "send_nowait", "zmq send", False),
    ("actrhost._zmqloop", "LoopSocket", "send_multipart_nowait", "zmq send", False),
    ("actrhost._zmqloop", "LoopSocket", "_drain", "zmq drain", False),
    ("actrhost._envelope", "", "decode", "decode", False),
    ("actrhost._envelope", "", "encode", "encode", False),
    ("actrhost._rpc", "RpcEndpoint", "_on_router_message", "worker: request in", False),
    ("actrhost.gateway._outbound", "Outbound", "_on_router", "gateway: frame from worker", False),
    ("actrhost.gateway._inbound", "Inbound", "_on_link_frame", "gateway: frame from node", False),
    ("actrhost.gateway._inbound", "Inbound", "_on_dealer", "gateway: answer from worker", False),
    ("aiortc.rtcsctptransport", "RTCSctpTransport", "_receive_chunk", "sctp: chunk in", True),
    ("aiortc.rtcsctptransport", "RTCSctpTransport", "_data_channel_flush", "sctp: flush", True),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_send_data", "dtls: send", True),
    ("aioice.ice", "Connection", "data_received", "ice: datagram to dtls", False),
    ("aioice.ice", "StunProtocol", "send_data", "udp: sendto", True),
]

SITECUSTOMIZE = """
import atexit, functools, importlib, json, os, time
_dir = os.environ.get(%(env)r)
if _dir:
    _events = []
    _now = time.monotonic_ns

    def _wrap(owner, name, label, is_async):
        original = getattr(owner, name)
        if is_async:
            async def traced(*args, **kwargs):
                _events.append((label, _now()))
                return await original(*args, **kwargs)
        else:
            def traced(*args, **kwargs):
                _events.append((label, _now()))
                return original(*args, **kwargs)
        setattr(owner, name, functools.wraps(original)(traced))

    for _module, _cls, _name, _label, _is_async in %(traced)r:
        try:
            _owner = importlib.import_module(_module)
        except ImportError:
            continue
        _wrap(getattr(_owner, _cls) if _cls else _owner, _name, _label, _is_async)

    def _dump():
        with open(os.path.join(_dir, "%%d.json" %% os.getpid()), "w") as out:
            json.dump(_events, out)

    atexit.register(_dump)
    # The gateway leaves with os._exit (actrhost.gateway.__main__.exit_now): no atexit.
    _os_exit = os._exit

    def _exit(code):
        _dump()
        _os_exit(code)

    os._exit = _exit
"""


def write_sitecustomize(folder: Path) -> None:
    """The module every traced process imports at start (Python's ``site`` does)."""
    text = SITECUSTOMIZE % {"env": TRACE_DIR_ENV, "traced": TRACED}
    (folder / "sitecustomize.py").write_text(text)


async def run_calls(
    args: argparse.Namespace, folder: Path
) -> tuple[list[tuple[int, int]], dict[int, str]]:
    use_host_addresses(["127.0.0.1"])
    env = {
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
        TRACE_DIR_ENV: str(folder),
    }
    if args.plain:
        env["ACTRHOST_GATEWAY_AIORTC"] = "plain"
    calls: list[tuple[int, int]] = []
    names = {os.getpid(): "workers"}
    with ServerProcess() as server:
        a = HarnessNode(folder / "a", server.url, [("src", "b+Src")], hwm=64, env=env)
        b = HarnessNode(folder / "b", server.url, [("sink", "b+Sink")], hwm=64, env=env)
        await start_nodes(a, b)
        for name, node in (("gateway A", a), ("gateway B", b)):
            assert node.process is not None
            names[node.process.pid] = name
        try:
            target = b.ids["sink"]
            for _ in range(100):  # warm-up: connection, caches
                await a.call("src", target, "echo", bytes(64))
            for _ in range(args.calls):
                started = time.monotonic_ns()
                await a.call("src", target, "echo", bytes(64))
                calls.append((started, time.monotonic_ns()))
        finally:
            await a.stop()
            await b.stop()
    return calls, names


def report(calls: list[tuple[int, int]], folder: Path, names: dict[int, str]) -> None:
    events = []
    for path in folder.glob("*.json"):
        pid = int(path.stem)
        for label, at in json.loads(path.read_text()):
            events.append((at, names.get(pid, str(pid)), label))
    events.sort()
    times = [at for at, _who, _label in events]
    sequences: Counter[tuple[tuple[str, str], ...]] = Counter()
    offsets: dict[tuple[tuple[tuple[str, str], ...], int], list[int]] = defaultdict(list)
    for started, ended in calls:
        window = events[bisect.bisect_left(times, started) : bisect.bisect_right(times, ended)]
        sequence = tuple((who, label) for _at, who, label in window)
        sequences[sequence] += 1
        for index, (at, _who, _label) in enumerate(window):
            offsets[(sequence, index)].append(at - started)
        offsets[(sequence, -1)].append(ended - started)
    sequence, count = sequences.most_common(1)[0]
    total = statistics.median(ended - started for started, ended in calls) / 1000
    print(f"{len(calls)} calls, median {total:.0f} µs; the most common sequence of events")
    print(f"({count} calls) with the median time of each since the call started:\n")
    print(f"{'process':<10} {'event':<30} {'at µs':>8} {'step µs':>8}")
    before = 0.0
    for index, (who, label) in enumerate([*sequence, ("caller", "call returns")]):
        at = statistics.median(offsets[(sequence, index if index < len(sequence) else -1)])
        print(f"{who:<10} {label:<30} {at / 1000:8.1f} {at / 1000 - before:8.1f}")
        before = at / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--plain", action="store_true", help="gateways without aiortc tuning")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trace-remote-"))
    try:
        write_sitecustomize(folder)
        os.environ[TRACE_DIR_ENV] = str(folder)
        # The same wrappers in this process, under a name of its own (Python's site may
        # have imported a sitecustomize already).
        spec = importlib.util.spec_from_file_location("_trace_site", folder / "sitecustomize.py")
        assert spec is not None and spec.loader is not None
        here = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(here)
        calls, names = asyncio.run(run_calls(args, folder))
        here._dump()  # this process's events (the gateways wrote theirs when they stopped)
        atexit.unregister(here._dump)
        report(calls, folder, names)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
