#!/usr/bin/env python
"""Remote calls and streams through two gateways, against raw aiortc in the same run.

Setup (all on loopback, one machine):

* **raw aiortc** (the baseline): this process and a child process, one
  RTCPeerConnection each, one data channel, no actrhost. Round trip of a 64-byte
  message; throughput of ``--chunk-bytes`` messages, with ``bufferedamountlow`` flow
  control as any careful sender must.
* **local call**: a ZeroMQ round trip from a fake worker of this process to one in a
  child process (the node's local call path between two actors, ``RpcEndpoint.call``),
  for the target formula below.
* **gateways**: a signaling server and two gateway processes; this process plays both
  nodes' supervisors and workers (``actrhost.gateway._testing.HarnessNode``): remote call
  round trip, remote calls per second with ``--inflight`` outstanding (against raw
  aiortc echoing as many pings outstanding), and a reliable stream of ``--chunk-bytes``
  chunks from node A's worker to node B's worker (end to end: worker -> ZeroMQ ->
  gateway -> aiortc -> gateway -> ZeroMQ -> worker). One pair of gateways per
  ``--variants`` entry, side by side: ``tuned`` (as shipped: on one host, as here, its
  gateways send each other 16 KiB SCTP packets, ``gateway/_sctp_packets.py``), ``plain``
  (aiortc and aioice without the gateway's tuning: 1,189-byte packets, as raw aiortc),
  ``asyncio`` (tuned, on the standard event loop instead of uvloop) and ``forward``.
* **real nodes** (``--nodes``, on by default): two nodes run with ``python -m actrhost
  run``, real supervisors, workers and gateways, as a user runs them: the ``Driver``
  actor of ``bench_actors.py`` on node A calls the ``Sink`` on node B (found with
  ``ctx.discover`` through signaling), and node B's own ``Driver`` calls that ``Sink``
  locally; both timed inside the Driver. What an actor sees, and its own budget: raw
  round trip + 2 x that local call. Then the Driver on A streams ``--stream-mib`` of
  ``--chunk-bytes`` reliable chunks to that Sink (``ctx.send_data_stream``, through the
  rings to its gateway), timed from the first send until the Sink has handled the last.
* **forward** (a bound, not a product): tuned gateways patched, for this benchmark only,
  to hand a call's frames on unchanged once the nodes are connected: no decoding, no
  request ids of their own, no pending entries or timers, no routing. What no gateway
  with the same processes, ZeroMQ hops and aiortc can beat. No stream is measured on it.
* **walk**: tuned gateways without ``gateway/_sctp_scan.py`` (aiortc walks every chunk
  in flight for ones to send again, on each SACK), for that tuning's A/B:
  ``tuned_stream_vs_walk`` is the ratio of the two streams in each round.

Rounds interleave the variants (the machine drifts between fast and slow states); the
report gives medians over rounds and ratios to raw aiortc measured in the same round.
Targets (issue 5): remote call p50 <= raw round trip + 2 x local call p50; remote stream
>= 90 % of raw throughput.

    python scripts/bench_remote.py                        # 5 rounds, 16 KiB chunks
    python scripts/bench_remote.py --variants tuned,walk --no-nodes --rounds 9
    python scripts/bench_remote.py --rounds 3 --chunk-bytes 65536 --stream-mib 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actrhost._envelope import REQUEST, RESPONSE, Envelope  # noqa: E402
from actrhost._rpc import RpcEndpoint  # noqa: E402
from actrhost.gateway._ice import use_host_addresses  # noqa: E402
from actrhost.gateway._testing import HarnessNode, start_nodes  # noqa: E402
from actrhost.signaling._testing import ServerProcess  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _bench_node import BenchNode  # noqa: E402

PING_BYTES = 64
#: Gateway pairs measured side by side (name -> environment of both gateway processes).
VARIANT_HELP = {
    "tuned": ("as shipped: uvloop, SCTP and STUN tuning (gateway/_sctp.py, _ice.py)", {}),
    "plain": ("uvloop, aiortc and aioice as they come", {"ACTRHOST_GATEWAY_AIORTC": "plain"}),
    "asyncio": ("the standard event loop, tuned", {"ACTRHOST_GATEWAY_LOOP": "asyncio"}),
    "forward": ("tuned, forwarding call frames unchanged (a lower bound)", {}),
    "walk": ("tuned, but aiortc walks its chunks in flight on every SACK (no _sctp_scan)", {}),
}
VARIANTS = {name: env for name, (_text, env) in VARIANT_HELP.items()}
#: The ``forward`` variant: a ``sitecustomize`` module put first on the gateways' path.
#: The first call takes the real path (locate, connect, the callee's socket); after it,
#: gateway A hands frames from its worker straight to the one connection and answers
#: straight to that worker, and gateway B hands frames straight to its one worker
#: socket and answers straight to the one connection.
FORWARD_SITECUSTOMIZE = """
from actrhost.gateway import _inbound, _outbound

_real_on_router = _outbound.Outbound._on_router
_real_on_link_frame = _inbound.Inbound._on_link_frame
_real_on_dealer = _inbound.Inbound._on_dealer
_seen = {}

def _on_router(self, parts):
    if len(parts) == 2 and self._nodes:
        _seen["caller"] = parts[0]
        next(iter(self._nodes.values())).pc.enqueue(0, parts[1])  # RPC_RELIABLE
    else:
        _real_on_router(self, parts)

def _on_link_frame(self, pc, lane, data):
    if "caller" in _seen:
        self._send_router(_seen["caller"], data)
    elif "link" in _seen:
        next(iter(self._dealers.values())).send_nowait(data)
    else:
        _seen["pc"] = pc
        _real_on_link_frame(self, pc, lane, data)

def _on_dealer(self, parts):
    if "link" in _seen:
        _seen["link"].enqueue(0, parts[-1])
    else:  # the first answer: the worker's socket is known (its feed is bound early)
        _real_on_dealer(self, parts)
        _seen["link"] = _seen["pc"]

_outbound.Outbound._on_router = _on_router
_inbound.Inbound._on_link_frame = _on_link_frame
_inbound.Inbound._on_dealer = _on_dealer
"""
#: The ``walk`` variant: the tuning of ``gateway/_sctp_scan.py`` left out.
WALK_SITECUSTOMIZE = """
from actrhost.gateway import _sctp_scan

_sctp_scan._installed = True  # its install() does nothing now
"""
#: Variants that run with a ``sitecustomize`` module first on the gateways' path.
SITECUSTOMIZE = {"forward": FORWARD_SITECUSTOMIZE, "walk": WALK_SITECUSTOMIZE}
HIGH_WATER_BYTES = 256 * 1024  # raw sender: what the gateway allows in aiortc's buffer too


# -- raw aiortc -------------------------------------------------------------------------


async def raw_peer_main() -> None:
    """The child of the raw baseline: answers the offer on stdout, echoes pings, counts."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from actrhost._config import WebrtcConfig
    from actrhost.gateway._ice import rtc_configuration

    use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    pc = RTCPeerConnection(rtc_configuration(WebrtcConfig()))
    await pc.setRemoteDescription(RTCSessionDescription(**json.loads(line)))
    channel = pc.createDataChannel("bench", negotiated=True, id=0)
    received = 0

    def on_message(data: bytes) -> None:
        nonlocal received
        kind = data[:1]
        if kind == b"P":
            channel.send(data)
        elif kind == b"D":
            received += len(data)
        elif kind == b"E":
            channel.send(b"A%d" % received)
            received = 0

    channel.on("message", on_message)
    await pc.setLocalDescription(await pc.createAnswer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": "answer"}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # parent closes stdin: done
    await pc.close()


class RawPair:
    """This process's end of the raw baseline."""

    async def start(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from actrhost._config import WebrtcConfig
        from actrhost.gateway._ice import rtc_configuration

        self.child = subprocess.Popen(
            [sys.executable, __file__, "--raw-peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pc = RTCPeerConnection(rtc_configuration(WebrtcConfig()))
        self.channel = self.pc.createDataChannel("bench", negotiated=True, id=0)
        self.channel.bufferedAmountLowThreshold = HIGH_WATER_BYTES // 4
        self._low = asyncio.Event()
        self.channel.on("bufferedamountlow", self._low.set)
        self._reply: asyncio.Future[bytes] | None = None
        self._echoes: Any = None  # set during concurrent(): called for every echo
        self.channel.on("message", self._on_message)
        opened = asyncio.Event()
        self.channel.on("open", opened.set)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(
            json.dumps({"sdp": self.pc.localDescription.sdp, "type": "offer"}) + "\n"
        )
        self.child.stdin.flush()
        answer = await asyncio.get_running_loop().run_in_executor(None, self.child.stdout.readline)
        await self.pc.setRemoteDescription(RTCSessionDescription(**json.loads(answer)))
        await asyncio.wait_for(opened.wait(), 10)

    def _on_message(self, data: bytes) -> None:
        if self._echoes is not None:
            self._echoes(data)
        elif self._reply is not None and not self._reply.done():
            self._reply.set_result(data)

    async def concurrent(self, count: int, inflight: int) -> float:
        """Round trips per second with ``inflight`` pings outstanding at all times."""
        ping = b"P" + bytes(PING_BYTES - 1)
        done = asyncio.get_running_loop().create_future()
        sent = inflight
        answered = 0

        def on_echo(_data: bytes) -> None:
            nonlocal sent, answered
            answered += 1
            if sent < count:
                sent += 1
                self.channel.send(ping)
            elif answered == count and not done.done():
                done.set_result(None)

        self._echoes = on_echo
        started = time.perf_counter()
        for _ in range(inflight):
            self.channel.send(ping)
        try:
            await asyncio.wait_for(done, 60)
        finally:
            self._echoes = None
        return count / (time.perf_counter() - started)

    async def _ask(self, data: bytes) -> bytes:
        self._reply = asyncio.get_running_loop().create_future()
        self.channel.send(data)
        return await self._reply

    async def round_trips(self, count: int) -> list[float]:
        ping = b"P" + bytes(PING_BYTES - 1)
        await self._ask(ping)  # warm-up
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await self._ask(ping)
            times.append(time.perf_counter() - started)
        return times

    async def throughput(self, chunk_bytes: int, total_bytes: int) -> float:
        chunk = b"D" + bytes(chunk_bytes - 1)
        count = total_bytes // chunk_bytes
        started = time.perf_counter()
        for _ in range(count):
            while self.channel.bufferedAmount > HIGH_WATER_BYTES:
                self._low.clear()
                await self._low.wait()
            self.channel.send(chunk)
        reply = await self._ask(b"E")
        elapsed = time.perf_counter() - started
        assert int(reply[1:]) == count * chunk_bytes, reply
        return count * chunk_bytes / elapsed

    async def close(self) -> None:
        await self.pc.close()
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(10)


# -- local ZeroMQ call --------------------------------------------------------------------


class LocalPair:
    """The node's local call path between two processes (as between two actors):
    ``RpcEndpoint.call`` here, an echoing ``RpcEndpoint`` in a child process."""

    def __init__(self, folder: Path) -> None:
        import zmq

        self.zctx = zmq.Context()
        self.server_ep = f"ipc://{folder}/srv.sock"
        self.child = subprocess.Popen(
            [sys.executable, __file__, "--local-echo", self.server_ep],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout is not None
        if self.child.stdout.readline().strip() != "ready":
            raise RuntimeError("the local echo process did not start")
        self.client = RpcEndpoint(
            self.zctx, f"ipc://{folder}/cli.sock", lambda e, r: None, hwm=10000, name="cli"
        )

    async def round_trips(self, count: int) -> list[float]:
        loop = asyncio.get_running_loop()
        times = []
        for i in range(count + 1):
            env = Envelope(
                REQUEST, "echo", bytes(PING_BYTES), request_id=self.client.next_request_id()
            )
            started = time.perf_counter()
            await self.client.call(self.server_ep, env, loop.time() + 5)
            if i:
                times.append(time.perf_counter() - started)
        return times

    def close(self) -> None:
        self.client.close()
        self.zctx.term()
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(10)


async def local_echo_main(endpoint: str) -> None:
    """The child of the local call baseline: a fake worker that echoes requests."""
    import zmq

    zctx = zmq.Context()

    def serve(env: Envelope, routing_id: bytes) -> None:
        server.reply(routing_id, Envelope(RESPONSE, payload=env.payload, request_id=env.request_id))

    server = RpcEndpoint(zctx, endpoint, serve, hwm=10000, name="srv")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    server.close()
    zctx.term()


# -- real nodes ------------------------------------------------------------------------

NODE_ACTORS = {
    "driver": 'type = "bench+Driver"\nhandler = "bench_actors:Driver"',
    "sink": 'type = "bench+Sink"\nhandler = "bench_actors:Sink"',
}


class NodePair:
    """Node A (a Driver) and node B (a Driver and the Sink), started with ``actrhost run``
    and connected through the signaling server at ``url``."""

    def __init__(self, folder: Path, url: str) -> None:
        self.a = BenchNode(folder / "node-a", self._config(folder / "node-a", url, ["driver"]))
        self.b = BenchNode(
            folder / "node-b", self._config(folder / "node-b", url, ["driver", "sink"])
        )

    @staticmethod
    def _config(folder: Path, url: str, actors: list[str]) -> str:
        text = (
            f'[node]\nname = "{folder.name}"\nrun_dir = "{folder / "run"}"\n'
            f'python_path = ["{ROOT / "scripts"}"]\nlog_level = "warning"\n'
            f'[signaling]\nurl = "{url}"\n[webrtc]\nice_host_addresses = ["127.0.0.1"]\n'
        )
        return text + "".join(f'[[actor]]\nname = "{n}"\n{NODE_ACTORS[n]}\n' for n in actors)

    async def start(self) -> None:
        self.a.spawn()
        self.b.spawn()
        await self.a.wait_running(1, poll_s=0.02)
        await self.b.wait_running(2, poll_s=0.02)

    @staticmethod
    async def _driver_calls(node: BenchNode, count: int) -> list[float]:
        import actrhost

        params = {"size": PING_BYTES, "warmup": 20, "count": count}
        async with actrhost.connect(node.config_path) as shell:
            reply = await shell.call(
                "driver", "bench.Driver.Calls", json.dumps(params).encode(), timeout=120
            )
        samples: list[float] = json.loads(reply)
        return samples

    async def remote_round_trips(self, count: int) -> list[float]:
        """Actor on A -> actor on B, through both gateways."""
        return await self._driver_calls(self.a, count)

    async def local_round_trips(self, count: int) -> list[float]:
        """Actor -> actor on node B."""
        return await self._driver_calls(self.b, count)

    async def remote_throughput(self, chunk_bytes: int, total_bytes: int) -> float:
        """Bytes/s of a reliable stream from the Driver on A to the Sink on B."""
        import actrhost

        params = {"size": chunk_bytes, "count": max(1, total_bytes // chunk_bytes)}
        async with actrhost.connect(self.a.config_path) as shell:
            reply = await shell.call(
                "driver", "bench.Driver.Stream", json.dumps(params).encode(), timeout=300
            )
        return params["count"] * chunk_bytes / float(json.loads(reply))

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


# -- gateways --------------------------------------------------------------------------


async def gateway_round_trips(a: HarnessNode, b: HarnessNode, count: int) -> list[float]:
    target = b.ids["sink"]
    await a.call("src", target, "echo", bytes(PING_BYTES))
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await a.call("src", target, "echo", bytes(PING_BYTES))
        times.append(time.perf_counter() - started)
    return times


async def gateway_concurrent(a: HarnessNode, b: HarnessNode, count: int, inflight: int) -> float:
    """Remote calls per second with ``inflight`` calls outstanding at all times."""
    target = b.ids["sink"]
    remaining = count

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await a.call("src", target, "echo", bytes(PING_BYTES))

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(inflight)))
    return count / (time.perf_counter() - started)


async def gateway_throughput(
    a: HarnessNode, b: HarnessNode, chunk_bytes: int, total_bytes: int, tag: str
) -> float:
    sink = b.workers["sink"].received
    count = total_bytes // chunk_bytes
    payload = bytes(chunk_bytes)
    started = time.perf_counter()
    for seq in range(count):
        await a.send_chunk("src", b.ids["sink"], tag, seq, payload)
    while len(sink.chunks[tag]) < count:
        sink.event.clear()
        await asyncio.wait_for(sink.event.wait(), 30)
    elapsed = time.perf_counter() - started
    got = sink.chunks.pop(tag)
    assert [s for s, _ in got] == list(range(count))
    return count * chunk_bytes / elapsed


def machine_state() -> dict[str, Any]:
    """What a report says of the machine it ran on."""
    return {
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "python": platform.python_version(),
        "aiortc": __import__("aiortc").__version__,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    use_host_addresses(["127.0.0.1"])
    folder = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    total = args.stream_mib * 1024 * 1024
    rows: list[dict[str, float]] = []
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    with ServerProcess() as server:
        tuning = {"max_message_bytes": args.max_message_bytes}
        pairs: dict[str, tuple[HarnessNode, HarnessNode]] = {}
        for name, env in variants.items():
            if name in SITECUSTOMIZE:
                (folder / name).mkdir()
                (folder / name / "sitecustomize.py").write_text(SITECUSTOMIZE[name])
                env = {"PYTHONPATH": str(folder / name)}
            a = HarnessNode(
                folder / f"a-{name}",
                server.url,
                [("src", "b+Src")],
                tuning=tuning,
                hwm=64,
                env=env,
            )
            b = HarnessNode(
                folder / f"b-{name}",
                server.url,
                [("sink", "b+Sink")],
                tuning=tuning,
                hwm=64,
                env=env,
            )
            pairs[name] = (a, b)
        await start_nodes(*(node for pair in pairs.values() for node in pair))
        raw = RawPair()
        await raw.start()
        local = LocalPair(folder)
        nodes = NodePair(folder, server.url) if args.nodes else None
        try:
            if nodes is not None:
                await nodes.start()
            for round_no in range(args.rounds):
                raw_rtt = await raw.round_trips(args.calls)
                local_rtt = await local.round_trips(args.calls)
                raw_bps = await raw.throughput(args.chunk_bytes, total)
                raw_cps = await raw.concurrent(args.calls * 4, args.inflight)
                row = {
                    "raw_rtt_p50_ms": percentile(raw_rtt, 0.5) * 1e3,
                    "local_rtt_p50_ms": percentile(local_rtt, 0.5) * 1e3,
                    "raw_mb_s": raw_bps / 1e6,
                    "raw_concurrent_per_s": raw_cps,
                }
                if nodes is not None:
                    node_local = await nodes.local_round_trips(args.calls)
                    node_remote = await nodes.remote_round_trips(args.calls)
                    row["nodes_local_p50_ms"] = percentile(node_local, 0.5) * 1e3
                    row["nodes_call_p50_ms"] = percentile(node_remote, 0.5) * 1e3
                    row["nodes_call_p99_ms"] = percentile(node_remote, 0.99) * 1e3
                    row["nodes_call_vs_budget"] = row["nodes_call_p50_ms"] / (
                        row["raw_rtt_p50_ms"] + 2 * row["nodes_local_p50_ms"]
                    )
                    nodes_bps = await nodes.remote_throughput(args.chunk_bytes, total)
                    row["nodes_stream_mb_s"] = nodes_bps / 1e6
                    row["nodes_stream_vs_raw"] = nodes_bps / raw_bps
                for name, (a, b) in pairs.items():
                    gw_rtt = await gateway_round_trips(a, b, args.calls)
                    row[f"{name}_call_p50_ms"] = percentile(gw_rtt, 0.5) * 1e3
                    row[f"{name}_call_p99_ms"] = percentile(gw_rtt, 0.99) * 1e3
                    gw_cps = await gateway_concurrent(a, b, args.calls * 4, args.inflight)
                    row[f"{name}_concurrent_per_s"] = gw_cps
                    row[f"{name}_concurrent_vs_raw"] = gw_cps / raw_cps
                    if name == "forward":
                        continue  # its patch only forwards calls
                    gw_bps = await gateway_throughput(a, b, args.chunk_bytes, total, f"r{round_no}")
                    row[f"{name}_stream_mb_s"] = gw_bps / 1e6
                    row[f"{name}_stream_vs_raw"] = gw_bps / raw_bps
                if "tuned_stream_mb_s" in row and "walk_stream_mb_s" in row:
                    row["tuned_stream_vs_walk"] = row["tuned_stream_mb_s"] / row["walk_stream_mb_s"]
                rows.append(row)
                shown = ", ".join(f"{key} {value:.3f}" for key, value in row.items())
                print(f"round {round_no + 1}: {shown}", flush=True)
        finally:
            if nodes is not None:
                nodes.stop()
            local.close()
            await raw.close()
            for a, b in pairs.values():
                await a.stop()
                await b.stop()
            shutil.rmtree(folder, ignore_errors=True)
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    budget = median["raw_rtt_p50_ms"] + 2 * median["local_rtt_p50_ms"]
    report = {
        "params": vars(args),
        "env": machine_state(),
        "median": median,
        "call_p50_budget_ms": budget,
        **{
            f"{name}_call_p50_vs_budget": median[f"{name}_call_p50_ms"] / budget
            for name in variants
        },
    }
    if args.nodes:
        # The nodes' own budget: an actor's local call between two of their workers.
        report["nodes_call_p50_budget_ms"] = (
            median["raw_rtt_p50_ms"] + 2 * median["nodes_local_p50_ms"]
        )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw-peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--local-echo", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants",
        default="tuned,plain,asyncio,forward",
        help="gateway pairs to measure, interleaved: "
        + "; ".join(f"{name}: {text}" for name, (text, _env) in VARIANT_HELP.items()),
    )
    parser.add_argument("--calls", type=int, default=500, help="round trips per variant and round")
    parser.add_argument(
        "--nodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure calls and a stream between two real nodes (actrhost run)",
    )
    parser.add_argument(
        "--inflight",
        type=int,
        default=32,
        help="calls outstanding in the concurrent measurement (4 x --calls of them)",
    )
    parser.add_argument("--chunk-bytes", type=int, default=16384)
    parser.add_argument(
        "--stream-mib", type=int, default=32, help="MiB streamed per variant and round"
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=65536,
        help="the gateways' data-channel message size",
    )
    cli = parser.parse_args()
    if cli.raw_peer:
        asyncio.run(raw_peer_main())
    elif cli.local_echo:
        asyncio.run(local_echo_main(cli.local_echo))
    else:
        asyncio.run(main(cli))
