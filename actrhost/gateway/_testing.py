"""A stand-in for a node around a real gateway process, for tests and benchmarks.

:class:`HarnessNode` plays the supervisor (binds the control ROUTER, answers ``hello``
with a directory, collects ``registered`` and ``stats``) and the workers (one real
ROUTER per actor instance, answering requests, recording tells, stream chunks and
media samples; one DEALER per actor sending to the gateway), with real ZeroMQ sockets
and the node's frame protocol. It spawns ``python -m actrhost.gateway`` exactly as the
supervisor does (docs/gateway.md), optionally inside a network namespace.

The routes the fake workers serve, and what they record: ``_testing_workers``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import zmq

from .. import _control as control
from .. import _envelope as wire
from .._directory import gateway_media_endpoint, gateway_streams_endpoint
from .._envelope import MEDIA, REQUEST, TELL, Envelope, StreamFrame
from .._errors import DeadlineExceeded
from .._ids import ActrId
from .._payload_type import PayloadType
from .._rundir import node_prefix
from .._zmqloop import LoopSocket
from ..shm import encode_array_meta
from ._identity import create_identity
from ._spec import SPEC_ENV
from ._testing_workers import OWN_ID, FakeWorker, OwnId, chunk_frame

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: A state for ``HarnessNode.states``: leave the actor out of the directory (as a
#: supervisor does before it lists a worker it is starting).
UNLISTED = "unlisted"

#: Short timeouts so failure tests finish quickly.
FAST_TUNING = {
    "connect_timeout_s": 4.0,
    "keepalive_interval_s": 0.2,
    "keepalive_timeout_s": 1.5,
}


class HarnessNode:
    """A fake node (supervisor + workers) around one real gateway process."""

    def __init__(
        self,
        folder: Path,
        signaling_url: str,
        actors: list[tuple[str, ...]],
        *,
        name: str = "node",
        realm: int = 1,
        webrtc_toml: str = 'ice_host_addresses = ["127.0.0.1"]\nconnect_timeout_s = 4.0',
        tuning: dict[str, float] | None = None,
        netns: str | None = None,
        hwm: int = 10000,
        log_level: str = "warning",
        env: dict[str, str] | None = None,
        restarted_workers: bool = False,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        # ipc paths must stay short (108 bytes): keep sockets in a private temp dir.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="gw-"))
        self.signaling_url = signaling_url
        self.actor_specs = actors
        self.name = name
        self.realm = realm
        self.tuning = dict(FAST_TUNING if tuning is None else tuning)
        self.netns = netns
        self.hwm = hwm
        self.log_level = log_level
        self.extra_env = dict(env or {})
        self.identity_path = self._sock_dir / "node-identity.pem"
        self.node_id = create_identity(self.identity_path)
        self.config_path = folder / "node.toml"
        # An actor is (name, type) or (name, type, extra TOML for its table, e.g. ACL rules).
        actor_toml = "".join(
            f'[[actor]]\nname = "{a[0]}"\ntype = "{a[1]}"\nhandler = "fake.module:Fake"\n'
            + (textwrap.dedent(a[2]) if len(a) > 2 else "")
            + "\n"
            for a in actors
        )
        self.config_path.write_text(
            f'[node]\nname = "{name}"\nrealm = {realm}\nhwm_messages = {hwm}\n\n'
            f'[signaling]\nurl = "{signaling_url}"\n\n'
            f"[webrtc]\n{textwrap.dedent(webrtc_toml)}\n\n{actor_toml}"
        )
        self.gateway_endpoint = f"ipc://{self._sock_dir}/gw.sock"
        #: Where the workers send stream frames and media samples (as real workers do).
        self.gateway_streams_endpoint = gateway_streams_endpoint(self.gateway_endpoint)
        self.gateway_media_endpoint = gateway_media_endpoint(self.gateway_endpoint)
        self.control_endpoint = f"ipc://{self._sock_dir}/control.sock"
        self.log_path = folder / "gateway.log"
        self.ids: dict[str, ActrId] = {}
        self.credentials: dict[str, str] = {}
        self.workers: dict[str, FakeWorker] = {}
        #: Directory states other than "running", by actor name, or UNLISTED.
        self.states: dict[str, str] = {}
        #: More directory fields by actor name (``given_up``, ``restart_requested``).
        self.entry_fields: dict[str, dict[str, Any]] = {}
        self.process: subprocess.Popen[bytes] | None = None
        #: Gateway processes started so far (the next one's ``incarnation``).
        self.gateways_spawned = 0
        #: Its workers play restarted processes of their actors, which know nothing of
        #: what their predecessors read (they drop a tell in doubt from a new sender).
        self.restarted_workers = restarted_workers
        self.gateway_state = ""
        self.registered = 0
        self._stats: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._req = 0
        self._zctx: zmq.Context | None = None
        self._control: LoopSocket | None = None
        self._gateway_routing_id: bytes | None = None
        self._registered_event: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"HarnessNode({self.name} {self.node_id})"

    # -- life cycle --------------------------------------------------------------------

    async def start(self, timeout_s: float = 20.0) -> HarnessNode:
        """Bind the fake supervisor, spawn the gateway, wait until it is running."""
        self._zctx = zmq.Context()
        sock = self._zctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.control_endpoint)
        self._control = LoopSocket(sock, self._on_control, f"{self.name} control")
        self._registered_event = asyncio.Event()
        self.spawn()
        async with asyncio.timeout(timeout_s):
            while self.gateway_state != "running":
                await self._registered_event.wait()
                self._registered_event.clear()
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"{self!r}: gateway exited: {self.log_text()[-2000:]}")
        for index, (actor_name, *_rest) in enumerate(self.actor_specs):
            endpoint = f"ipc://{self._sock_dir}/a{index}.sock"
            worker = FakeWorker(
                self._zctx, endpoint, actor_name, self.hwm, not self.restarted_workers
            )
            worker.actr_id = self.ids[actor_name]
            self.workers[actor_name] = worker
        self.send_directory()
        self._gateway_is_running()
        return self

    def spawn(self) -> None:
        """Start (or restart) the gateway process with the previous ids, if any."""
        spec = {
            "config_path": str(self.config_path),
            "signaling_url": self.signaling_url,
            "endpoint": self.gateway_endpoint,
            "control_endpoint": self.control_endpoint,
            "supervisor_pid": os.getpid(),
            "identity_path": str(self.identity_path),
            "shm_prefix": node_prefix(self._sock_dir),
            "incarnation": self.gateways_spawned,
            "instances": [
                {
                    "name": n,
                    "index": 0,
                    "type": t,
                    "previous_id": str(self.ids[n]) if n in self.ids else None,
                    "previous_credential_hex": self.credentials.get(n),
                }
                for n, t, *_extra in self.actor_specs
            ],
            "tuning": self.tuning,
        }
        env = dict(os.environ)
        env[SPEC_ENV] = json.dumps(spec)
        env["ACTRHOST_LOG_LEVEL"] = self.log_level
        env.update(self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")])
        )
        for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(proxy, None)
        cmd = [sys.executable, "-m", "actrhost.gateway"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.gateway_state = ""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        self.gateways_spawned += 1
        log.close()

    def send_directory(self) -> None:
        """Send the fake supervisor's directory snapshot to the gateway."""
        actors = [
            {
                "id": str(w.actr_id),
                "name": name,
                "index": 0,
                "endpoint": w.endpoint,
                "state": self.states.get(name, "running"),
                "pid": os.getpid(),
                "restarts": 0,
                **self.entry_fields.get(name, {}),
            }
            for name, w in self.workers.items()
            if self.states.get(name) != UNLISTED
        ]
        self._send(
            {"op": "directory", "actors": actors, "shells": [], "gateway": self.gateway_endpoint}
        )

    def _send(self, message: dict[str, Any]) -> None:
        if self._control is not None and self._gateway_routing_id is not None:
            self._control.send_multipart_nowait([self._gateway_routing_id, control.encode(message)])

    def _on_control(self, parts: list[bytes]) -> None:
        message = control.decode(parts[-1])
        if message is None:
            return
        op = message["op"]
        if op == "hello":
            self._gateway_routing_id = parts[0]
            self.send_directory()
        elif op == "registered":
            for item in message["ids"]:
                self.ids[item["name"]] = ActrId.parse(item["id"])
                self.credentials[item["name"]] = item["credential_hex"]
            self.registered += 1
        elif op == "state":
            self.gateway_state = message["state"]
        elif op == "stats":
            future = self._stats.pop(int(message.get("req") or 0), None)
            if future is not None and not future.done():
                future.set_result(message["stats"])
        if self._registered_event is not None:
            self._registered_event.set()

    async def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The gateway's ``stats`` answer."""
        self._req += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stats[self._req] = future
        self._send({"op": "stats_request", "req": self._req})
        async with asyncio.timeout(timeout_s):
            return await future

    async def wait_running(self, timeout_s: float = 20.0) -> None:
        """Wait for the (re)spawned gateway to report running again, then tell the
        workers, as a directory update would."""
        assert self._registered_event is not None
        async with asyncio.timeout(timeout_s):
            while self.gateway_state != "running":
                await self._registered_event.wait()
                self._registered_event.clear()
        self._gateway_is_running()

    def _gateway_is_running(self) -> None:
        pid = self.process.pid if self.process is not None else None
        for worker in self.workers.values():
            worker.rpc.to_other_nodes.gateway_is(self.gateway_endpoint, pid)

    def kill_gateway(self) -> None:
        """SIGKILL the gateway process (a crash) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the gateway to stop (as the supervisor does), wait, close everything.

        Idempotent."""
        code = None
        proc = self.process
        if proc is not None and proc.poll() is None:
            self._send({"op": "stop"})
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        if proc is not None:
            code = proc.returncode
        for worker in self.workers.values():
            worker.rpc.close()
        self.workers.clear()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._zctx is not None:
            self._zctx.term()
            self._zctx = None
        shutil.rmtree(self._sock_dir, ignore_errors=True)  # stop may be called twice
        return code

    def log_text(self) -> str:
        """What the gateway wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- acting as the node's workers ------------------------------------------------------

    def _deadline(self, timeout_s: float) -> float:
        return asyncio.get_running_loop().time() + timeout_s

    async def call(
        self,
        sender: str,
        target: ActrId,
        route: str,
        payload: bytes = b"",
        *,
        timeout_s: float = 10.0,
        lane: PayloadType = PayloadType.RPC_RELIABLE,
        source: ActrId | OwnId | None = OWN_ID,
        deadline_ns: int | None = None,
    ) -> bytes:
        """A request from actor ``sender`` through the gateway; raises the ActrError.

        ``source`` puts another id (or none, as a Shell's call) on the request: a worker
        that lies about who it is, or a Shell's; ``deadline_ns`` another deadline than
        ``timeout_s`` from now (the caller still waits ``timeout_s``)."""
        worker = self.workers[sender]
        deadline = self._deadline(timeout_s)
        env = Envelope(
            REQUEST,
            route,
            payload,
            request_id=worker.rpc.next_request_id(),
            source=worker.actr_id if isinstance(source, OwnId) else source,
            target=target,
            payload_type=lane,
            deadline_ns=int(deadline * 1e9) if deadline_ns is None else deadline_ns,
            timeout_ms=int(timeout_s * 1000),
        )
        response = await worker.rpc.call(self.gateway_endpoint, env, deadline)
        return bytes(response.payload)

    async def discover(self, sender: str, actr_type: str, timeout_s: float = 10.0) -> ActrId:
        """``actrhost.gateway.Discover`` as a worker's ``ctx.discover`` sends it."""
        worker = self.workers[sender]
        deadline = self._deadline(timeout_s)
        env = Envelope(
            REQUEST,
            "actrhost.gateway.Discover",
            actr_type.encode(),
            request_id=worker.rpc.next_request_id(),
            source=worker.actr_id,
            deadline_ns=int(deadline * 1e9),
            timeout_ms=int(timeout_s * 1000),
        )
        response = await worker.rpc.call(self.gateway_endpoint, env, deadline)
        return ActrId.parse(bytes(response.payload).decode())

    async def tell(
        self,
        sender: str,
        target: ActrId,
        route: str,
        payload: bytes = b"",
        *,
        source: ActrId | OwnId | None = OWN_ID,
        timeout_s: float = 5.0,
    ) -> None:
        """A tell from actor ``sender`` through the gateway (``source`` as for ``call``);
        ``DeadlineExceeded`` if the gateway's socket takes it not within ``timeout_s``."""
        worker = self.workers[sender]
        env = Envelope(
            TELL,
            route,
            payload,
            request_id=worker.rpc.next_request_id(),
            source=worker.actr_id if isinstance(source, OwnId) else source,
            target=target,
        )
        await worker.rpc.tell(self.gateway_endpoint, env, self._deadline(timeout_s))

    async def send_chunk(
        self,
        sender: str,
        target: ActrId,
        stream_id: str,
        sequence: int,
        payload: bytes,
        *,
        lane: PayloadType = PayloadType.STREAM_RELIABLE,
        source: ActrId | OwnId | None = OWN_ID,
        timeout_s: float = 30.0,
    ) -> None:
        """One data-stream chunk (inline) from ``sender`` through the gateway (``source``
        as for ``call``)."""
        worker = self.workers[sender]
        data = chunk_frame(worker, target, stream_id, sequence, payload, lane, source)
        await self._send_blocking(worker, data, self._deadline(timeout_s))

    async def _send_blocking(self, worker: FakeWorker, data: bytes, deadline: float) -> None:
        """Send to the gateway, waiting while it pushes back (until ``deadline``).

        Unlike ``RpcEndpoint.send`` (which waits at most 1 s, for a peer that is
        connecting): a reliable stream must wait as long as the gateway's backpressure.
        """
        link = worker.rpc.link(self.gateway_streams_endpoint)
        while True:
            try:
                link.send_nowait(data)
                return
            except zmq.Again:
                if not await link.wait_writable(deadline):
                    raise DeadlineExceeded(
                        "the gateway took no stream frame before the deadline"
                    ) from None

    def send_chunk_nowait(
        self,
        sender: str,
        target: ActrId,
        stream_id: str,
        sequence: int,
        payload: bytes,
        lane: PayloadType,
    ) -> bool:
        """Like :meth:`send_chunk` but gives up (False) if ZeroMQ can't take it now."""
        worker = self.workers[sender]
        data = chunk_frame(worker, target, stream_id, sequence, payload, lane)
        try:
            worker.rpc.link(self.gateway_streams_endpoint).send_nowait(data)
        except zmq.Again:
            return False
        return True

    async def send_media(
        self,
        sender: str,
        target: ActrId,
        track_id: str,
        array: Any,
        timestamp: int,
        *,
        media_type: str = "video",
        codec: str = "",
    ) -> None:
        """A raw media sample (a numpy array) from ``sender`` through the gateway."""
        worker = self.workers[sender]
        frame = StreamFrame(
            MEDIA,
            track_id,
            source=worker.actr_id,
            target=target,
            payload_type=PayloadType.MEDIA_RTP,
            timestamp=timestamp,
            payload=array.tobytes(),
            array_meta=encode_array_meta(array.dtype, array.shape),
            codec=codec,
            media_type=media_type,
        )
        data = wire.encode_stream(frame)
        await worker.rpc.send(self.gateway_media_endpoint, data, self._deadline(5.0))

    async def wait_for(self, predicate: Any, timeout_s: float, what: str) -> None:
        """Poll ``predicate()`` every 10 ms until true; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self!r}: timed out after {timeout_s}s waiting for {what}")
            await asyncio.sleep(0.01)


class LoopRunner:
    """One event loop kept across several tests (nodes live in it between tests).

    ``run(coro, timeout_s)`` runs a coroutine to completion on it, bounded in time.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any, timeout_s: float = 30.0) -> Any:
        """Run ``coro`` on the loop; TimeoutError after ``timeout_s``."""

        async def bounded() -> Any:
            async with asyncio.timeout(timeout_s):
                return await coro

        return self.loop.run_until_complete(bounded())

    def close(self) -> None:
        """Cancel what is left and close the loop."""
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


async def start_nodes(*nodes: HarnessNode) -> None:
    """Start several nodes concurrently (their gateways import aiortc in parallel)."""
    await asyncio.gather(*(node.start() for node in nodes))
