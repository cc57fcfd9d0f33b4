#!/usr/bin/env python3
"""Benchmark: shared-memory ring throughput against a memcpy baseline.

Setup: this process writes chunks into an ``actrhost.shm`` ring (one copy per chunk, from
a pre-touched numpy array), a reader *process* gets each descriptor through a pipe (as it
would through ZeroMQ), touches the payload's first and last byte and releases it. One
timed run sends ~``--run-mib`` MiB per chunk size and ends when the reader acknowledges
the last record. The baseline, ``np.copyto`` of 64 MiB between pre-touched arrays, is
measured in the same round, so the ratio survives the machine drifting between fast and
slow phases (DESIGN §10). Rounds are interleaved; figures are medians over the rounds.

Metric: MB/s (10^6 bytes/s) of payload, chunks/s, and ratio = ring MB/s / memcpy MB/s of
the same round (median of the per-round ratios).

    python scripts/bench_ring.py               # 5 rounds, 64 KiB / 1 MiB / 16 MiB
    python scripts/bench_ring.py --rounds 9 --run-mib 2048
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from actrhost.shm import (
    Descriptor,
    RingReader,
    RingWriter,
    WouldBlock,
    node_segment_prefix,
    segment_name,
    unlink_prefix,
)

MiB = 1 << 20
BASELINE_BYTES = 64 * MiB
_LEN = struct.Struct("<I")


def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def reader_main() -> None:
    """Child: read descriptors from stdin; an empty frame ends a run and is acked on stdout."""
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    reader: RingReader | None = None
    sink = 0
    while True:
        try:
            (n,) = _LEN.unpack(_read_exact(fd_in, 4))
        except EOFError:
            break
        if n == 0:
            os.write(fd_out, b"D")
            continue
        desc = Descriptor.from_bytes(_read_exact(fd_in, n))
        if reader is None or reader.name != desc.ring:
            if reader is not None:
                reader.close()
            reader = RingReader.attach(desc.ring)
        view = reader.read(desc)
        if desc.length:
            sink ^= view[0] ^ view[-1]  # touch the first and the last byte
        reader.release(desc)
    if reader is not None:
        reader.close()


def bench_memcpy(src: np.ndarray, dst: np.ndarray, repeat: int) -> float:
    """MB/s of np.copyto over `repeat` copies of the whole array."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        np.copyto(dst, src)
    return repeat * src.nbytes / (time.perf_counter() - t0) / 1e6


def bench_ring(
    proc: subprocess.Popen[bytes], name: str, capacity: int, chunk: np.ndarray, count: int
) -> tuple[float, float, int]:
    """(MB/s, chunks/s, WouldBlock count) for `count` chunks through a fresh ring."""
    assert proc.stdin is not None and proc.stdout is not None
    fd_out, fd_in = proc.stdin.fileno(), proc.stdout.fileno()
    with RingWriter.create(name, capacity) as writer:
        # Warm-up: the reader attaches and every page of the ring gets mapped once.
        for _ in range(max(1, 2 * capacity // max(chunk.nbytes, 1))):
            _send(writer, fd_out, chunk)
        os.write(fd_out, _LEN.pack(0))
        assert _read_exact(fd_in, 1) == b"D"
        t0 = time.perf_counter()
        for _ in range(count):
            _send(writer, fd_out, chunk)
        os.write(fd_out, _LEN.pack(0))
        assert _read_exact(fd_in, 1) == b"D"
        elapsed = time.perf_counter() - t0
        blocked = writer.statistics().would_block_count
        writer.unlink()
    return count * chunk.nbytes / elapsed / 1e6, count / elapsed, blocked


def _send(writer: RingWriter, fd: int, chunk: np.ndarray) -> None:
    while True:
        try:
            desc = writer.write_nowait(chunk)
            break
        except WouldBlock:
            time.sleep(0)
    raw = desc.to_bytes()
    os.write(fd, _LEN.pack(len(raw)) + raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--run-mib", type=int, default=1024, help="MiB per timed run")
    parser.add_argument("--ring-mib", type=int, default=64, help="ring capacity in MiB")
    parser.add_argument(
        "--sizes-kib", type=int, nargs="+", default=[64, 1024, 16384], help="chunk sizes"
    )
    args = parser.parse_args()
    if args.reader:
        reader_main()
        return

    node = "bench" + uuid.uuid4().hex[:8]
    capacity = args.ring_mib * MiB
    sizes = [k * 1024 for k in args.sizes_kib]
    src = np.ones(BASELINE_BYTES, dtype=np.uint8)
    dst = np.zeros_like(src)
    np.copyto(dst, src)  # touch every page of both
    chunks = {size: np.full(size, 7, dtype=np.uint8) for size in sizes}
    copy_repeat = max(1, args.run_mib * MiB // BASELINE_BYTES)

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, ring {args.ring_mib} MiB, {args.run_mib} MiB per run, "
        f"{args.rounds} rounds, pinned: no"
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, "--reader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    memcpy: list[float] = []
    ring: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
    try:
        for rnd in range(args.rounds):
            base = bench_memcpy(src, dst, copy_repeat)
            memcpy.append(base)
            for size in sizes:
                count = max(8, args.run_mib * MiB // size)
                name = segment_name(node, rnd, size)
                mbs, cps, _ = bench_ring(proc, name, capacity, chunks[size], count)
                ring[size].append((mbs, cps, mbs / base))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        unlink_prefix(node_segment_prefix(node))

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"{'case':<26}{'MB/s':>10}{'chunks/s':>12}{'ratio':>8}")
    print(f"{'np.copyto 64 MiB':<26}{med(memcpy):>10.0f}{'':>12}{1.0:>8.2f}")
    for size in sizes:
        rows = ring[size]
        label = f"ring {size // 1024} KiB" if size < MiB else f"ring {size // MiB} MiB"
        print(
            f"{label:<26}{med([r[0] for r in rows]):>10.0f}"
            f"{med([r[1] for r in rows]):>12.0f}{med([r[2] for r in rows]):>8.2f}"
        )


if __name__ == "__main__":
    main()
