#!/usr/bin/env python
"""One fault between two real nodes while an actor streams to another: what arrives.

A signaling server and two nodes run as a user runs them (``python -m actrhost run``,
on loopback, in a private temporary folder). The ``Driver`` of ``chaos_actors.py`` on
node B sends ``--count`` numbered reliable chunks of ``--size`` bytes (with checksums),
each followed by a numbered tell, to the ``Sink`` on node A, and meanwhile discovers and
calls the Sink every ``--call-every`` seconds (each call with ``--call-timeout``) until
15 s after the fault.
``--after`` seconds into that, one process gets the fault: ``stop`` (SIGSTOP, then
SIGCONT after ``--hold`` seconds) or ``kill`` (SIGKILL; a supervisor restarts its gateway
and workers).

The report says what the Driver had accepted (sends that returned) and what the Sink
got: how many, duplicates, order, corrupt payloads, the first ranges of numbers missing; and every
log line at WARNING or above from both nodes. What actrhost promises (docs/gateway.md):
each accepted tell and reliable chunk arrives once, in order, while both actors live
(within what a sender keeps when a *sending* gateway dies: Limits); a send while the
node's gateway is not running fails at once with ``Unavailable``; a call fails within
seconds when the other node's gateway or the link is down (503), not at its deadline.
The calls' report: how many went through, errors by kind, the slowest success and the
slowest failure.

    python scripts/chaos_remote.py --fault kill --process gateway-b
    python scripts/chaos_remote.py --fault stop --process gateway-a --hold 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import actrhost  # noqa: E402
from actrhost.signaling._testing import ServerProcess  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _bench_node import BenchNode  # noqa: E402

PROCESSES = ("gateway-a", "gateway-b", "worker-a", "worker-b", "supervisor-a", "signal")
#: Log lines worth reporting: a level of WARNING or above, or a traceback.
NOTEWORTHY = re.compile(r" (WARNING|ERROR|CRITICAL) |^Traceback")


def node_config(folder: Path, url: str, actor: str) -> str:
    """A node named after its folder, with one actor of chaos_actors.py."""
    return (
        f'[node]\nname = "chaos-{folder.name}-{os.getpid()}"\nrun_dir = "{folder / "run"}"\n'
        f'python_path = ["{ROOT / "scripts"}"]\n'
        f'[signaling]\nurl = "{url}"\n[webrtc]\nice_host_addresses = ["127.0.0.1"]\n'
        f'[[actor]]\nname = "{actor.lower()}"\ntype = "chaos+{actor}"\n'
        f'handler = "chaos_actors:{actor}"\n'
    )


async def victim_pid(which: str, nodes: dict[str, BenchNode], server: ServerProcess) -> int:
    """The pid of the process ``which`` (one of PROCESSES) names, now."""
    if which == "signal":
        assert server.proc is not None
        return server.proc.pid
    role, side = which.split("-")
    node = nodes[side]
    if role == "supervisor":
        assert node.process is not None
        return node.process.pid
    async with actrhost.connect(node.config_path) as shell:
        status = await shell.status()
    if role == "gateway":
        return int(status["gateway"]["pid"])
    return int(status["actors"][0]["pid"])


async def fault(args: argparse.Namespace, nodes: dict[str, BenchNode], server: Any) -> str:
    await asyncio.sleep(args.after)
    pid = await victim_pid(args.process, nodes, server)
    if args.fault == "kill":
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL {args.process} (pid {pid}) at {args.after} s"
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(args.hold)
    finally:
        os.kill(pid, signal.SIGCONT)
    return f"SIGSTOP {args.process} (pid {pid}) at {args.after} s for {args.hold} s"


async def settled_report(node: BenchNode, expected: int, quiet_s: float) -> dict[str, Any]:
    """The Sink's report once it has everything, or once nothing new came for ``quiet_s``
    (``{"unreachable": …}`` when its node never answered for that long: a killed
    supervisor takes its node down for good)."""
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while True:
        try:
            async with actrhost.connect(node.config_path) as shell:
                report: dict[str, Any] = json.loads(
                    await shell.call("sink", "chaos.Sink.Report", b"", timeout=10)
                )
        except actrhost.ActrError as exc:  # its worker restarting (a fault of this run)
            if time.monotonic() - since > quiet_s:
                return {"unreachable": str(exc)}
            await asyncio.sleep(0.5)
            continue
        counts = (report["chunks"]["count"], report["tells"]["count"])
        if counts != last:
            last, since = counts, time.monotonic()
        if counts == (expected, expected) or time.monotonic() - since > quiet_s:
            return report
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    with ServerProcess() as server:
        nodes = {
            "a": BenchNode(folder / "a", node_config(folder / "a", server.url, "Sink")),
            "b": BenchNode(folder / "b", node_config(folder / "b", server.url, "Driver")),
        }
        try:
            for node in nodes.values():
                node.spawn()
            for node in nodes.values():
                await node.wait_running(1, poll_s=0.05)
            params = {
                "count": args.count,
                "size": args.size,
                "timeout_s": args.timeout,
                "call_every_s": args.call_every,
                "call_timeout_s": args.call_timeout,
                "calls_for_s": args.after + (args.hold if args.fault == "stop" else 0) + 15,
            }
            faulted = asyncio.ensure_future(fault(args, nodes, server))
            started = time.monotonic()
            sent: dict[str, Any]
            async with actrhost.connect(nodes["b"].config_path) as shell:
                try:
                    reply = await shell.call(
                        "driver", "chaos.Driver.Run", json.dumps(params).encode(), timeout=900
                    )
                    sent = json.loads(reply)
                except actrhost.ActrError as exc:
                    # The Driver was the one killed (worker-b): what it had accepted died
                    # with it. The Sink's report still says whether anything came twice
                    # or out of order.
                    sent = {
                        "accepted": None,
                        "errors": {"driver": str(exc)},
                        "calls": None,
                        "sending_s": None,
                    }
            took = time.monotonic() - started
            what = await faulted
            accepted = sent["accepted"]
            expected = len(accepted["chunks"]) if accepted is not None else -1
            got = await settled_report(nodes["a"], expected, args.quiet)
        finally:
            for node in nodes.values():
                node.stop()
            logs = {
                side: [
                    line
                    for line in node.log_path.read_text(errors="replace").splitlines()
                    if NOTEWORTHY.search(line)
                ]
                for side, node in nodes.items()
            }
    sending_s = sent["sending_s"]
    return {
        "fault": what,
        "driver_s": round(took, 1),
        # A fault after the last send tests the calls only (a fast stream, a small
        # --count): make --count larger, or --after smaller.
        "sending_s": round(sending_s, 1) if sending_s is not None else None,
        "fault_mid_stream": None if sending_s is None else args.after < sending_s,
        "accepted": (
            {kind: len(numbers) for kind, numbers in accepted.items()}
            if accepted is not None
            else "unknown: the Driver died with its counts"
        ),
        "send_errors": sent["errors"],
        "calls": sent["calls"],
        "received": got,
        "logs": logs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=("stop", "kill"), default="kill")
    parser.add_argument("--process", choices=PROCESSES, default="gateway-a")
    parser.add_argument("--after", type=float, default=3.0, help="seconds into the stream")
    parser.add_argument("--hold", type=float, default=10.0, help="stop: seconds stopped")
    parser.add_argument("--count", type=int, default=12000, help="chunks (and tells)")
    parser.add_argument("--size", type=int, default=65536, help="bytes per chunk")
    parser.add_argument("--timeout", type=float, default=60.0, help="per send, seconds")
    parser.add_argument("--quiet", type=float, default=20.0, help="settled after (s)")
    parser.add_argument("--call-every", type=float, default=0.05, help="seconds between calls")
    parser.add_argument("--call-timeout", type=float, default=30.0, help="per call, seconds")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the nodes and the server are stopped and removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    folder = Path(tempfile.mkdtemp(prefix="chaos-remote-"))
    try:
        report = asyncio.run(run(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
