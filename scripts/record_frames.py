#!/usr/bin/env python
"""Record real frames off running nodes, for the replay tests (``tests/frames/``).

Runs what a user runs, on loopback: a signaling server (``actrhost signal``), the camera
example on two nodes (``configs/camera-a.toml`` + ``camera-b.toml``, pointed at that
server) with one ``actrhost call`` of a route the viewer does not serve, the echo example
on two nodes under ``actrhost load`` (calls 16 at a time, tells, a stream of small
chunks), and the camera example on one node (``configs/camera.toml``). Every one of
these processes imports a tap first (a ``sitecustomize`` module put first on
``PYTHONPATH``) that logs each message as the process *receives* it:

* ``frame``: a protobuf ``Frame`` (docs/protocol.md) as a worker, a gateway or the CLI
  decodes it (``actrhost._envelope.decode``);
* ``link``: a gateway data-channel message as the receiving gateway's reassembler takes
  it (``actrhost.gateway._framing.Reassembler.feed``);
* ``signaling``: a signaling envelope as the server or a client decodes it
  (``actrhost.signaling._wire.decode``).

The script then sorts what was logged into kinds (a request, an answer, an error answer,
a stream chunk in a ring, a media sample sent inline, a data-channel part, a relayed SDP
offer, ...), keeps one message of each kind (the largest up to 16 KiB) and writes it to
``tests/frames/<kind>.bin``. Kinds only seen larger than 64 KiB (a video frame decoded
from the track is 225 KiB) are listed, not written. The tests decode each file, re-encode
it to the same bytes, and corrupt it on purpose (``tests/test_recorded_frames.py``), as
aiortc's tests replay captured packets.

    python scripts/record_frames.py                 # rewrites tests/frames/*.bin
    python scripts/record_frames.py --out /tmp/f    # somewhere else
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actrhost import _envelope as wire  # noqa: E402
from actrhost._errors import BadRequest  # noqa: E402
from actrhost.gateway import _framing as framing  # noqa: E402
from actrhost.signaling import _wire as signaling_wire  # noqa: E402

#: Sources of a log record (the tap's first byte).
FRAME, LINK, SIGNALING = 1, 2, 3
_RECORD = struct.Struct("!BI")
#: Of each kind the largest message up to this size is kept (the one with the most
#: fields set); a kind whose messages are all larger keeps its smallest.
RICH_FIXTURE_BYTES = 16 * 1024
#: Kinds whose smallest message is larger are not written (the repository stays small).
MAX_FIXTURE_BYTES = 64 * 1024

TAP = '''
"""Logs every message this process receives (scripts/record_frames.py)."""
import os, struct

_DIR = os.environ["ACTRHOST_RECORD_DIR"]
_RECORD = struct.Struct("!BI")
_MAX_BYTES = 256 * 1024  # larger messages are not fixture material
_log = None
_log_pid = None


def _write(source, data):
    global _log, _log_pid
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > _MAX_BYTES:
        return
    if _log_pid != os.getpid():  # first record, or a forked child
        _log = open(os.path.join(_DIR, f"{os.getpid()}.log"), "ab", buffering=0)
        _log_pid = os.getpid()
    _log.write(_RECORD.pack(source, len(data)) + bytes(data))


def _tap(module, name, source, method_of=None):
    owner = getattr(module, method_of) if method_of else module
    real = getattr(owner, name)
    if method_of:
        def tapped(self, data, *args, **kwargs):
            _write(source, data)
            return real(self, data, *args, **kwargs)
    else:
        def tapped(data, *args, **kwargs):
            _write(source, data)
            return real(data, *args, **kwargs)
    setattr(owner, name, tapped)


from actrhost import _envelope
_tap(_envelope, "decode", 1)
from actrhost.signaling import _wire
_tap(_wire, "decode", 3)
try:
    from actrhost.gateway import _framing
except ImportError:  # no aiortc in this environment: no gateway either
    pass
else:
    _tap(_framing, "feed", 2, method_of="Reassembler")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_config(name: str, folder: Path, url: str) -> Path:
    """A copy of ``configs/<name>.toml`` that runs from ``folder`` against ``url``."""
    text = (ROOT / "configs" / f"{name}.toml").read_text()
    text = text.replace('python_path = [".."]', f"python_path = [{str(ROOT)!r}]")
    text = text.replace('url = "ws://127.0.0.1:8765"', f"url = {url!r}")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def actrhost(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "actrhost", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def cli(args: list[str], env: dict[str, str], folder: Path) -> None:
    """Run one ``actrhost`` command to its end (its exit status does not matter here)."""
    subprocess.run(
        [sys.executable, "-m", "actrhost", *args],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=folder,
    )


def wait_for_text(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"{log.name} never printed {text!r}:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def record(folder: Path) -> Path:
    """Run the scenario with the tap; return the folder of the per-process logs."""
    logs = folder / "logs"
    logs.mkdir()
    (folder / "tap").mkdir()
    (folder / "tap" / "sitecustomize.py").write_text(TAP)
    env = dict(os.environ)
    env["ACTRHOST_RECORD_DIR"] = str(logs)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "tap"), str(ROOT)])
    url = f"ws://127.0.0.1:{free_port()}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        server = actrhost(
            ["signal", "--listen", url.removeprefix("ws://")], env, folder / "signal.out"
        )
        started.append(server)
        wait_for_text(folder / "signal.out", "listening", 30)
        a = node_config("camera-a", folder, url)
        started.append(actrhost(["run", str(a)], env, folder / "camera-a.out"))
        started.append(
            actrhost(["run", str(node_config("camera-b", folder, url))], env, folder / "b.out")
        )
        wait_for_text(folder / "b.out", "camera: viewer got", 90)
        # An error answer from a real worker: a route the viewer does not serve.
        cli(["call", str(a), "viewer", "demo.Nope", "--data", "x"], env, folder)
        for process in reversed(started[1:]):
            stop(process)
        del started[1:]
        # Small messages between two nodes: calls outstanding at once (batches on the
        # link), tells, and stream chunks small enough to travel inline.
        echo_a = node_config("echo-a", folder, url)
        echo_b = node_config("echo-b", folder, url)
        started.append(actrhost(["run", str(echo_a)], env, folder / "echo-a.out"))
        started.append(actrhost(["run", str(echo_b)], env, folder / "echo-b.out"))
        wait_for_text(folder / "echo-b.out", "client got", 60)
        load = ["load", str(echo_b), "--target", "demo+Echo", "--payload", "hello"]
        load += ["--duration", "1s", "--warmup", "0s", "--quiet"]
        route = ["--route", "demo.Echo.Say"]
        cli([*load, *route, "--concurrency", "16"], env, folder)
        cli([*load, *route, "--tell"], env, folder)
        cli([*load, "--stream"], env, folder)
        for process in reversed(started[1:]):
            stop(process)
        del started[1:]
        one = actrhost(["run", str(node_config("camera", folder, url))], env, folder / "one.out")
        started.append(one)
        wait_for_text(folder / "one.out", "camera: viewer got", 60)
    finally:
        for process in reversed(started):
            stop(process)
    return logs


def read_logs(logs: Path) -> Iterator[tuple[int, bytes]]:
    for path in sorted(logs.glob("*.log")):
        data = path.read_bytes()
        at = 0
        while at + _RECORD.size <= len(data):
            source, size = _RECORD.unpack_from(data, at)
            at += _RECORD.size
            yield source, data[at : at + size]
            at += size


def kind_of(source: int, data: bytes) -> str | None:
    """The fixture name of a logged message, or None for a kind not kept."""
    if source == FRAME:
        try:
            item = wire.decode(data)
        except BadRequest:
            return None
        if isinstance(item, wire.StreamFrame):
            where = "shm" if item.shm else "inline"
            return f"frame-{item.kind}-{where}"
        if item.direction == wire.RESPONSE:
            return "frame-error" if item.error_code else "frame-response"
        return "frame-request" if item.direction == wire.REQUEST else "frame-tell"
    if source == LINK:
        try:
            taken = framing.Reassembler(1).feed(data)
        except framing.MalformedMessage:
            return None
        if taken is not None and taken[0] == "control":
            return f"link-control-{taken[1]['op']}"
        names = {framing.KIND_FRAME: "frame", framing.KIND_PART: "part"}
        names[framing.KIND_BATCH] = "batch"
        return f"link-{names[data[0]]}"
    if source == SIGNALING:
        try:
            env = signaling_wire.decode(data)
        except BadRequest:
            return None
        flow = env.WhichOneof("flow")
        if flow == "relay":
            return f"signaling-relay-{env.relay.WhichOneof('payload')}"
        return f"signaling-{flow}"
    return None


def better(data: bytes, kept: bytes) -> bool:
    """Whether ``data`` makes a better fixture than ``kept`` (RICH_FIXTURE_BYTES)."""
    if len(kept) > RICH_FIXTURE_BYTES:
        return len(data) < len(kept)
    return len(kept) < len(data) <= RICH_FIXTURE_BYTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "frames")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="record-frames-"))
    try:
        logs = record(folder)
        kept: dict[str, bytes] = {}
        for source, data in read_logs(logs):
            kind = kind_of(source, data)
            if kind is not None and (kind not in kept or better(data, kept[kind])):
                kept[kind] = data
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.bin"):  # kinds not seen this time must not linger
        stale.unlink()
    written = 0
    for kind, data in sorted(kept.items()):
        if len(data) > MAX_FIXTURE_BYTES:
            print(f"{kind:36s} {len(data):7,d} bytes: too large, not written")
            continue
        (args.out / f"{kind}.bin").write_bytes(data)
        print(f"{kind:36s} {len(data):7,d} bytes")
        written += 1
    print(f"{written} kinds written to {args.out}")


if __name__ == "__main__":
    main()
