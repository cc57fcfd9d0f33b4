#!/usr/bin/env python
"""Streams between two "hosts" (two network namespaces joined by a veth), through two
gateways and through raw aiortc, in the same run. Needs root and iproute2's ``ip``.

Setup: namespaces A and B, a veth pair between them with an MTU of ``--mtu`` (1,500 as
most LANs, by default), addresses 10.232.0.1 and .2.

* **raw aiortc** (the baseline): one process in each namespace, one RTCPeerConnection
  each, one data channel, no actrhost. The one in A sends ``--stream-mib`` of
  ``--chunk-bytes`` messages with ``bufferedamountlow`` flow control (as
  ``bench_remote.py``'s raw baseline); aiortc's 1,189-byte SCTP packets.
* **gateways**: a signaling server in A, and per variant two gateway processes, one in
  each namespace (``actrhost.gateway._testing.HarnessNode``, this process playing both
  nodes' workers): a reliable stream of the same size from A's worker to B's. ``large``
  is as shipped: 16 KiB SCTP packets once a probe came back, cut into IP fragments by the
  kernel (``gateway/_sctp_path.py``); ``small`` has ``[webrtc] large_packets = false``
  (aiortc's 1,189 bytes, as between two hosts before session 47).

Rounds interleave the variants; the report gives medians over rounds, and each stream's
ratio to raw aiortc measured in the same round.

    python scripts/bench_hosts.py                    # 5 rounds, MTU 1,500, 32 MiB
    python scripts/bench_hosts.py --mtu 9000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
sys.path.insert(0, str(ROOT / "scripts"))

from bench_remote import HIGH_WATER_BYTES, gateway_throughput, machine_state  # noqa: E402

from actrhost.gateway._testing import HarnessNode, start_nodes  # noqa: E402

ADDR_A, ADDR_B = "10.232.0.1", "10.232.0.2"
#: Gateway pairs measured side by side: name -> their [webrtc] table's extra keys.
VARIANTS = {"large": "", "small": "large_packets = false"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def make_hosts(mtu: int) -> tuple[str, str]:
    """Two namespaces and a veth pair between them; returns their names."""
    tag = os.urandom(3).hex()
    ns_a, ns_b, veth_a, veth_b = f"bhA{tag}", f"bhB{tag}", f"vbA{tag}", f"vbB{tag}"
    _ip("netns", "add", ns_a)
    _ip("netns", "add", ns_b)
    _ip("link", "add", veth_a, "netns", ns_a, "type", "veth", "peer", "name", veth_b, "netns", ns_b)
    for ns, veth, addr in ((ns_a, veth_a, ADDR_A), (ns_b, veth_b, ADDR_B)):
        _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", veth)
        _ip("-n", ns, "link", "set", veth, "mtu", str(mtu), "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    return ns_a, ns_b


def remove_hosts(*namespaces: str) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_namespace(ns: str, *args: str) -> subprocess.Popen[str]:
    """This script run with ``args`` inside namespace ``ns``, talking on stdin/stdout."""
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


# -- raw aiortc, one process per namespace ---------------------------------------------


async def raw_peer_main(role: str, address: str, chunk_bytes: int, total_bytes: int) -> None:
    """One end of the raw baseline: the ``sender`` offers and streams, then prints its
    throughput; the ``receiver`` answers and counts. Descriptions go through stdio."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from actrhost._config import WebrtcConfig
    from actrhost.gateway._ice import rtc_configuration, use_host_addresses

    use_host_addresses([address])
    loop = asyncio.get_running_loop()

    async def read_line() -> str:
        return await loop.run_in_executor(None, sys.stdin.readline)

    def write(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    pc = RTCPeerConnection(rtc_configuration(WebrtcConfig()))
    channel = pc.createDataChannel("bench", negotiated=True, id=0)
    if role == "receiver":
        received = 0

        def on_message(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if data[:1] == b"E":
                channel.send(b"%d" % received)

        channel.on("message", on_message)
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(await read_line())))
        await pc.setLocalDescription(await pc.createAnswer())
        write({"sdp": pc.localDescription.sdp, "type": "answer"})
        await read_line()  # the parent closes stdin: done
        await pc.close()
        return
    opened, low = asyncio.Event(), asyncio.Event()
    answered: asyncio.Future[bytes] = loop.create_future()
    channel.on("open", opened.set)
    channel.bufferedAmountLowThreshold = HIGH_WATER_BYTES // 4
    channel.on("bufferedamountlow", low.set)
    channel.on("message", lambda data: answered.done() or answered.set_result(data))
    await pc.setLocalDescription(await pc.createOffer())
    write({"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.setRemoteDescription(RTCSessionDescription(**json.loads(await read_line())))
    await asyncio.wait_for(opened.wait(), 10)
    chunk = b"D" + bytes(chunk_bytes - 1)
    count = total_bytes // chunk_bytes
    started = time.perf_counter()
    for _ in range(count):
        while channel.bufferedAmount > HIGH_WATER_BYTES:
            low.clear()
            await low.wait()
        channel.send(chunk)
    channel.send(b"E")
    received = int(await asyncio.wait_for(answered, 60))
    elapsed = time.perf_counter() - started
    assert received == count * chunk_bytes + 1, received
    write({"bytes_per_s": count * chunk_bytes / elapsed})
    await pc.close()


def raw_throughput(ns_a: str, ns_b: str, chunk_bytes: int, total_bytes: int) -> float:
    """A raw aiortc stream from namespace A to B: bytes per second."""
    sizes = (str(chunk_bytes), str(total_bytes))
    sender = in_namespace(ns_a, "--raw", "sender", ADDR_A, *sizes)
    receiver = in_namespace(ns_b, "--raw", "receiver", ADDR_B, *sizes)
    try:
        assert sender.stdin and sender.stdout and receiver.stdin and receiver.stdout
        receiver.stdin.write(sender.stdout.readline())
        receiver.stdin.flush()
        sender.stdin.write(receiver.stdout.readline())
        sender.stdin.flush()
        result = json.loads(sender.stdout.readline())
        return float(result["bytes_per_s"])
    finally:
        for process in (sender, receiver):
            if process.stdin:
                process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


# -- gateways ---------------------------------------------------------------------------


def signaling_server(ns: str) -> tuple[subprocess.Popen[str], str]:
    """A signaling server in namespace ``ns``; returns it and its URL."""
    command = ["ip", "netns", "exec", ns, sys.executable, "-m", "actrhost.signaling"]
    process = subprocess.Popen(
        [*command, "--listen", f"{ADDR_A}:0"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on " not in line:
        process.kill()
        raise RuntimeError(f"the signaling server did not start: {line!r}")
    return process, line.rsplit(" ", 1)[1].strip()


def gateway_pair(
    folder: Path, url: str, ns_a: str, ns_b: str, extra: str
) -> tuple[HarnessNode, HarnessNode]:
    """Node A (worker ``src``) in namespace A and node B (``sink``) in B."""

    def node(name: str, ns: str, address: str, actor: tuple[str, str]) -> HarnessNode:
        webrtc = f'ice_host_addresses = ["{address}"]\nconnect_timeout_s = 4.0\n{extra}'
        return HarnessNode(
            folder / name, url, [actor], netns=ns, webrtc_toml=webrtc, tuning={}, hwm=64
        )

    return node("a", ns_a, ADDR_A, ("src", "b+Src")), node("b", ns_b, ADDR_B, ("sink", "b+Sink"))


async def packet_bytes(a: HarnessNode) -> int:
    """The SCTP packet size node A's link sends."""
    (remote,) = (await a.stats())["remote_nodes"].values()
    return int(remote["connection"]["sctp_packet_bytes"])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    total = args.stream_mib * 1024 * 1024
    ns_a, ns_b = make_hosts(args.mtu)
    server, url = signaling_server(ns_a)
    pairs = {
        name: gateway_pair(folder / name, url, ns_a, ns_b, extra)
        for name, extra in VARIANTS.items()
    }
    rows: list[dict[str, float]] = []
    try:
        await start_nodes(*(node for pair in pairs.values() for node in pair))
        for a, b in pairs.values():  # connected, and the probe's answer in
            await a.call("src", b.ids["sink"], "echo", b"up", timeout_s=20)
        await asyncio.sleep(1)
        sizes = {name: await packet_bytes(a) for name, (a, _b) in pairs.items()}
        print(f"SCTP packet bytes: {sizes}", flush=True)
        for round_no in range(args.rounds):
            raw_bps = await asyncio.to_thread(raw_throughput, ns_a, ns_b, args.chunk_bytes, total)
            row = {"raw_mb_s": raw_bps / 1e6}
            for name, (a, b) in pairs.items():
                bps = await gateway_throughput(a, b, args.chunk_bytes, total, f"r{round_no}")
                row[f"{name}_mb_s"] = bps / 1e6
                row[f"{name}_vs_raw"] = bps / raw_bps
            row["large_vs_small"] = row["large_mb_s"] / row["small_mb_s"]
            rows.append(row)
            shown = ", ".join(f"{key} {value:.2f}" for key, value in row.items())
            print(f"round {round_no + 1}: {shown}", flush=True)
    finally:
        for a, b in pairs.values():
            await a.stop()
            await b.stop()
        server.terminate()
        server.wait(10)
        remove_hosts(ns_a, ns_b)
        shutil.rmtree(folder, ignore_errors=True)
    report = {
        "params": vars(args),
        "env": machine_state(),
        "sctp_packet_bytes": sizes,
        "median": {key: statistics.median(r[key] for r in rows) for key in rows[0]},
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raw", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mtu", type=int, default=1500, help="the veth pair's MTU")
    parser.add_argument("--chunk-bytes", type=int, default=65536)
    parser.add_argument(
        "--stream-mib", type=int, default=32, help="MiB streamed per variant and round"
    )
    cli = parser.parse_args()
    if cli.raw:
        role, address, chunk, total = cli.raw
        asyncio.run(raw_peer_main(role, address, int(chunk), int(total)))
    elif os.geteuid() != 0 or shutil.which("ip") is None:
        sys.exit("bench_hosts.py needs root and iproute2's ip (network namespaces)")
    else:
        asyncio.run(main(cli))
