#!/usr/bin/env python
"""Stream throughput of aiortc's SCTP over a path that reorders packets, with and
without the gateway's loss detection (``actrhost.gateway._sctp_loss``).

Setup: two ``RTCPeerConnection``s in one child process, on loopback, one reliable
ordered data channel; every packet each side sends goes through an impairment: a link
of ``--rate-mbyte-s`` that holds each packet ``--delay-ms`` ± ``--jitter-ms`` (uniform,
seeded: packets overtake each other, as on a jittery path). The sender keeps 256 KiB
in the channel's buffer (``bufferedamountlow``), as the gateway does, and sends
``--mib`` MiB in 16 KiB messages.

Variants, each in a fresh child process (the fix is installed process-wide):

* ``aiortc``: aiortc as it comes (the baseline);
* ``fixed``: with ``_sctp_loss.install()``, as every gateway runs.

Each round measures both variants on the path without jitter and with it, interleaved;
the report gives medians over rounds, and per round the ratio of ``fixed`` to
``aiortc`` on the same path. Both ends share one process and CPU, so the absolute
figures are lower than between two gateways; the ratios are what this measures.

    python scripts/bench_reorder.py                     # 3 rounds, 30 ± 15 ms, 4 MiB
    python scripts/bench_reorder.py --rounds 5 --delay-ms 50 --jitter-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MESSAGE_BYTES = 16 * 1024
HIGH_WATER_BYTES = 256 * 1024
VARIANTS = ("aiortc", "fixed")


def impair(
    pc: Any, *, delay_s: float, jitter_s: float, rate: float, seed: int
) -> set[asyncio.TimerHandle]:
    """Send ``pc``'s packets through the impaired link described above; the packets it
    holds are the timers returned (cancelled at the end)."""
    dtls = pc.sctp.transport
    send = dtls._send_data
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    link_free_at = 0.0
    held: set[asyncio.TimerHandle] = set()
    sending: set[asyncio.Future[None]] = set()

    async def deliver(data: bytes) -> None:
        try:
            await send(data)
        except ConnectionError:
            pass  # closed at the end of the run

    async def impaired_send(data: bytes) -> None:
        nonlocal link_free_at
        now = loop.time()
        link_free_at = max(link_free_at, now) + len(data) / rate
        hold_s = link_free_at - now + delay_s + rng.uniform(-jitter_s, jitter_s)
        timer = loop.call_later(max(0.0, hold_s), lambda: release(timer, data))
        held.add(timer)

    def release(timer: asyncio.TimerHandle, data: bytes) -> None:
        held.discard(timer)
        task = asyncio.ensure_future(deliver(data))
        sending.add(task)
        task.add_done_callback(sending.discard)

    dtls._send_data = impaired_send
    return held


def count_retransmissions(sctp: Any) -> dict[str, int]:
    """Count the DATA chunks ``sctp`` sends again, and its retransmission timeouts."""
    counts = {"retransmitted": 0, "timeouts": 0}
    send_chunk, t3_expired = sctp._send_chunk, sctp._t3_expired

    async def counting_send_chunk(chunk: Any) -> None:
        counts["retransmitted"] += getattr(chunk, "_sent_count", 0) > 1
        await send_chunk(chunk)

    def counting_t3_expired() -> None:
        counts["timeouts"] += 1
        t3_expired()

    sctp._send_chunk, sctp._t3_expired = counting_send_chunk, counting_t3_expired
    return counts


async def child_main(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement: connect, impair, stream, report MB/s."""
    from aiortc import RTCPeerConnection

    from actrhost.gateway import _sctp_loss
    from actrhost.gateway._ice import use_host_addresses

    use_host_addresses(["127.0.0.1"])
    if args.variant == "fixed":
        _sctp_loss.install()
    a, b = RTCPeerConnection(), RTCPeerConnection()
    channel = a.createDataChannel("stream")
    received = 0
    done = asyncio.Event()
    total = int(args.mib * 1024 * 1024)

    @b.on("datachannel")
    def on_channel(remote: Any) -> None:
        @remote.on("message")
        def on_message(message: bytes) -> None:
            nonlocal received
            received += len(message)
            if received >= total:
                done.set()

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    async with asyncio.timeout(10):
        await opened.wait()
    held = set()
    for seed, pc in enumerate((a, b), start=args.seed):
        held |= impair(
            pc,
            delay_s=args.delay_ms / 1000,
            jitter_s=args.jitter_ms / 1000,
            rate=args.rate_mbyte_s * 1e6,
            seed=seed,
        )
    sender = count_retransmissions(a.sctp)
    room = asyncio.Event()
    channel.bufferedAmountLowThreshold = HIGH_WATER_BYTES // 4
    channel.on("bufferedamountlow", room.set)
    message = b"x" * MESSAGE_BYTES
    started = time.monotonic()
    async with asyncio.timeout(args.timeout_s):
        for _ in range(total // MESSAGE_BYTES):
            while channel.bufferedAmount > HIGH_WATER_BYTES:
                room.clear()
                await room.wait()
            channel.send(message)
        await done.wait()
    seconds = time.monotonic() - started
    for timer in held:
        timer.cancel()
    await a.close()
    await b.close()
    return {"mb_s": total / seconds / 1e6, "seconds": seconds, **sender}


def measure(
    args: argparse.Namespace, variant: str, jitter_ms: float, seed: int
) -> tuple[float, str]:
    """MB/s of one child run (0.0 when it did not finish within --timeout-s), and how
    many chunks the sender sent again."""
    command = [
        sys.executable, __file__, "--child", "--variant", variant,
        "--jitter-ms", str(jitter_ms), "--delay-ms", str(args.delay_ms),
        "--rate-mbyte-s", str(args.rate_mbyte_s), "--mib", str(args.mib),
        "--timeout-s", str(args.timeout_s), "--seed", str(seed),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s + 30)
    if done.returncode:
        print(f"  {variant}, jitter {jitter_ms} ms: failed ({done.stderr.strip()[-200:]})")
        return 0.0, "failed"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["mb_s"]), f"{result['retransmitted']} sent again, {result['timeouts']} T3"


def main(args: argparse.Namespace) -> None:
    paths = {"no jitter": 0.0, f"± {args.jitter_ms:g} ms": args.jitter_ms}
    results: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        for path, jitter_ms in paths.items():
            for variant in VARIANTS:
                mb_s, detail = measure(args, variant, jitter_ms, seed=1 + 2 * round_index)
                results.setdefault((path, variant), []).append(mb_s)
                print(
                    f"round {round_index + 1}: {path:>10}, {variant:>6}: {mb_s:6.2f} MB/s"
                    f" ({detail})"
                )
    print(f"\n{args.delay_ms:g} ms each way, {args.rate_mbyte_s:g} MB/s link, {args.mib:g} MiB")
    print("median MB/s over rounds; fixed ÷ aiortc, per-round median")
    for path in paths:
        aiortc, fixed = results[(path, "aiortc")], results[(path, "fixed")]
        ratios = [f / r for f, r in zip(fixed, aiortc, strict=True) if r]
        ratio = f"{statistics.median(ratios):.2f} x" if ratios else "-"
        print(
            f"{path:>10}: aiortc {statistics.median(aiortc):5.2f}, "
            f"fixed {statistics.median(fixed):5.2f}, fixed ÷ aiortc {ratio}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--jitter-ms", type=float, default=15.0)
    parser.add_argument("--rate-mbyte-s", type=float, default=2.0)
    parser.add_argument("--mib", type=float, default=4.0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(asyncio.run(child_main(arguments))))
    else:
        main(arguments)
