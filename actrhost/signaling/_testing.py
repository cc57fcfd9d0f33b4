"""Helpers for tests and benchmarks: a signaling server in its own process, and a client
process that registers many actors.

``ServerProcess`` runs ``python -m actrhost.signaling`` (what ``actrhost signal`` runs)
and reads the bound port from its first stdout line. ``python -m
actrhost.signaling._testing register ...`` registers actors, prints their ids as one
JSON line, keeps them alive (heartbeats) until its stdin closes, then unregisters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from websockets.asyncio.client import ClientConnection, connect

from .._ids import ActrId, ActrType
from . import _wire as wire

__all__ = [
    "ClientProcess",
    "RawPeer",
    "ServerProcess",
    "package_root",
    "pick_port",
    "write_self_signed_certificate",
]

_READY_PREFIX = "signaling server listening on "


def package_root() -> Path:
    """The directory holding the ``actrhost`` package (put on PYTHONPATH of children)."""
    return Path(__file__).resolve().parents[2]


def pick_port() -> int:
    """A free loopback TCP port below the kernel's ephemeral range.

    For a server that must come back on the same port after a restart: a port from the
    ephemeral range (what binding port 0 gives) may meanwhile become the local port of
    some outgoing connection on a busy machine; ports below the range never do.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def write_self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write ``cert.pem`` (valid for ``host`` and ``localhost``, one day) and ``key.pem``
    into ``folder``: a self-signed certificate for a ``wss://`` server in tests. Returns
    their paths. The certificate is also what clients must trust (``ca_file``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "actrhost test signaling")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(package_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Children talk to loopback only; make sure no proxy setting redirects them.
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        env.pop(name, None)
    return env


def _read_line(stream: IO[str], deadline: float) -> str:
    """One line from a child's stdout, or TimeoutError at ``deadline`` (monotonic)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("child process did not answer in time")
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            return stream.readline()


class ServerProcess:
    """A signaling server subprocess. Use as a context manager, or start()/stop().

    ``options`` become command line flags: ``heartbeat_interval=0.2`` ->
    ``--heartbeat-interval 0.2``.
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        *,
        key_file: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.listen = listen
        self.key_file = key_file
        self.options = options
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._stderr: IO[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"ServerProcess({self.url or self.listen}, pid={pid})"

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.url.rsplit(":", 1)[1])

    def start(self, timeout_s: float = 15.0) -> ServerProcess:
        """Spawn the server and wait until it listens; raises RuntimeError on failure."""
        cmd = [sys.executable, "-m", "actrhost.signaling", "--listen", self.listen]
        if self.key_file is not None:
            cmd += ["--key-file", str(self.key_file)]
        for key, value in self.options.items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=_child_env()
        )
        assert self.proc.stdout is not None
        try:
            line = _read_line(self.proc.stdout, time.monotonic() + timeout_s)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self!r} did not start: {self.stderr_text()}") from None
        if not line.startswith(_READY_PREFIX):
            self.stop()
            raise RuntimeError(f"{self!r} did not start: {line!r} {self.stderr_text()}")
        self.url = line[len(_READY_PREFIX) :].strip()
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)

    def stderr_text(self) -> str:
        """What the server wrote on stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def rss_bytes(self) -> int:
        """The server's resident set size (Linux /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()


class ClientProcess:
    """A child that registers ``count`` actors and holds them until :meth:`stop`."""

    def __init__(self, url: str, *, count: int, realm: int, actr_type: str, **options: Any) -> None:
        cmd = [
            sys.executable, "-m", "actrhost.signaling._testing", "register",
            "--url", url, "--count", str(count), "--realm", str(realm), "--type", actr_type,
        ]  # fmt: skip
        for key, value in options.items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )

    def result(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The JSON line the child prints once every actor is registered."""
        assert self.proc.stdout is not None
        try:
            line = _read_line(self.proc.stdout, time.monotonic() + timeout_s)
        except TimeoutError:
            self.proc.kill()
            raise
        if not line:
            _, err = self.proc.communicate(timeout=5)
            raise RuntimeError(f"client process failed: {err}")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self, timeout_s: float = 10.0) -> int:
        """Close its stdin (it unregisters and exits) and reap it."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


class RawPeer:
    """A bare protocol peer: no reconnect, no heartbeats, sends exactly what it is given.

    For tests of what the server does with forged, expired, malformed or unread traffic.
    Pushes (relayed messages) that arrive while waiting for a reply go to ``pushes``.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.pushes: list[wire.Envelope] = []

    @classmethod
    async def open(cls, url: str, **options: Any) -> RawPeer:
        """Connect (no proxy, no compression); ``options`` go to websockets' connect."""
        options.setdefault("max_size", 4 * 1024 * 1024)
        ws = await connect(url, proxy=None, compression=None, open_timeout=5, **options)
        return cls(ws)

    async def close(self) -> None:
        """Close the WebSocket (bounded by websockets' close timeout)."""
        await self.ws.close()

    async def recv(self, timeout_s: float = 5.0) -> wire.Envelope:
        """The next envelope from the server; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            return wire.decode(await self.ws.recv())

    async def ask(self, env: wire.Envelope, timeout_s: float = 5.0) -> wire.Envelope:
        """Send ``env`` with a fresh envelope id and return the reply to it (also errors)."""
        env.envelope_id = f"raw{next(self._ids)}"
        await self.ws.send(env.SerializeToString())
        async with asyncio.timeout(timeout_s):
            while True:
                reply = wire.decode(await self.ws.recv())
                if reply.reply_for == env.envelope_id:
                    return reply
                self.pushes.append(reply)

    async def register(
        self, actr_type: str, realm: int, **fields: Any
    ) -> tuple[ActrId, bytes, int]:
        """Register; returns (id, credential token, key id). ``fields`` set RegisterRequest
        fields: ``fingerprint``/``schema_text`` (service spec), ``previous`` = (id, token,
        key id) of an earlier registration."""
        env = wire.new_envelope()
        req = env.register_request
        wire.set_actr_type(req.actr_type, ActrType.parse(actr_type))
        req.realm.realm_id = realm
        req.service_spec.fingerprint = fields.get("fingerprint", "")
        req.service_spec.schema_text = fields.get("schema_text", "")
        if "previous" in fields:
            prev_id, token, key_id = fields["previous"]
            wire.set_actr_id(req.previous_id, prev_id)
            req.previous_credential.encrypted_token = token
            req.previous_credential.token_key_id = key_id
        reply = await self.ask(env)
        wire.raise_if_error(reply)
        ok = reply.register_ok
        return (
            wire.actr_id_from_pb(ok.actr_id),
            ok.credential.encrypted_token,
            ok.credential.token_key_id,
        )

    @staticmethod
    def authed(kind: str, actr_id: ActrId, token: bytes, key_id: int) -> wire.Envelope:
        """An envelope whose ``kind`` message (ping, relay, ...) carries this identity."""
        env = wire.new_envelope()
        msg = getattr(env, kind)
        wire.set_actr_id(msg.source, actr_id)
        msg.credential.encrypted_token = token
        msg.credential.token_key_id = key_id
        return env


async def _register_main(args: argparse.Namespace) -> None:
    from ._client import SignalingClient

    loop = asyncio.get_running_loop()
    async with SignalingClient(args.url) as client:
        started = time.perf_counter()
        regs = await asyncio.gather(
            *(
                client.register(args.type, args.realm, fingerprint=args.fingerprint)
                for _ in range(args.count)
            )
        )
        elapsed = time.perf_counter() - started
        print(
            json.dumps({"ids": [str(r.actr_id) for r in regs], "seconds": elapsed}),
            flush=True,
        )
        # Hold the registrations until the parent closes our stdin.
        eof = asyncio.Event()
        fd = sys.stdin.fileno()
        loop.add_reader(fd, lambda: None if os.read(fd, 4096) else eof.set())
        await eof.wait()
        loop.remove_reader(fd)


def main(argv: list[str] | None = None) -> None:
    """Entry of the helper client process."""
    parser = argparse.ArgumentParser(prog="python -m actrhost.signaling._testing")
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register")
    reg.add_argument("--url", required=True)
    reg.add_argument("--count", type=int, required=True)
    reg.add_argument("--realm", type=int, required=True)
    reg.add_argument("--type", required=True)
    reg.add_argument("--fingerprint", default="")
    args = parser.parse_args(argv)
    asyncio.run(_register_main(args))


if __name__ == "__main__":
    main()
