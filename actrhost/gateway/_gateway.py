"""The gateway process: the node's one endpoint for actors on other nodes.

To local workers the gateway is one more ZeroMQ endpoint (a ROUTER, same frames as a
worker's): every frame whose target is not on this node goes there. The gateway finds
the node hosting the target through the signaling relay, forwards the frame on the data
channel of its lane, and routes the answer back to the caller. Frames arriving from
other nodes go to the local worker through a DEALER, like any caller's. See
docs/gateway.md for the contract with the supervisor and the wire details.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import OrderedDict, deque
from functools import partial
from pathlib import Path
from typing import Any

import zmq
from aiortc import RTCCertificate

from .. import _control as control
from .._config import Config
from .._directory import (
    ActorState,
    Directory,
    gateway_feed_endpoint,
    gateway_media_endpoint,
    gateway_streams_endpoint,
)
from .._envelope import StreamFrame
from .._errors import ActrError, ClosedResourceError, Unavailable
from .._gateway_credit import ReadCounts
from .._ids import ActrId
from .._linux import supervisor_gone
from .._loop_watch import LoopWatch
from .._replies import Replies
from .._ring_readers import RingReaders
from .._rpc import configure_socket
from .._rundir import remove_orphaned_run_dir, taken_over
from .._undeliverable import NoticeLimiter
from .._zmqloop import LoopSocket
from ..signaling import Availability, SignalingClient
from ._call_hold import CallHold
from ._counters import GatewayCounters
from ._expiry import ExpiryWheel
from ._feed_reads import FeedReads
from ._ice import use_host_addresses
from ._identity import load_identity, node_id_of
from ._inbound import Inbound, _InCall
from ._locates import Locates, _Locate
from ._nodes import Nodes
from ._notices import ShellTellers
from ._outbound import Outbound, _OutCall
from ._peer import Callbacks, PeerConnection, wait_for_closing_connections
from ._remote import RemoteNode
from ._sender_waits import SenderWaits
from ._spec import GatewaySpec, acl_rules, credential_hex, register
from ._stream_hold import StreamHold
from ._tells_received import TellsReceived
from ._to_nodes import ToNodes
from ._to_workers import Backlog
from ._trust import Parked
from ._types import CALLS, MEDIA, STREAMS, LinkState, Tuning

log = logging.getLogger(__name__)

#: Messages read from the workers' socket per loop turn (see Gateway.__init__).
ROUTER_BATCH = 64
#: Messages ZeroMQ may take in for the gateway from each worker while it reads none.
ROUTER_RECEIVE_HWM = 256
#: How often changed credentials (renewals) are reported to the supervisor.
CREDENTIAL_REPORT_S = 60.0
#: How long a stopping gateway waits for failed connections still closing.
CLOSE_WAIT_S = 2.0
#: How often the gateway checks that its supervisor is alive: a fallback for
#: PR_SET_PDEATHSIG (its SIGTERM comes at once), as in workers; 4 times a second until
#: 2026-12-07, a quarter of an idle gateway's wake-ups.
SUPERVISOR_WATCH_S = 1.0


class Gateway(Nodes, Outbound, Locates, ToNodes, Inbound):
    """The gateway of one node (one per process)."""

    def __init__(self, spec: GatewaySpec, config: Config) -> None:
        self.spec = spec
        self.config = config
        # What ICE offers as host candidates (stats): the config's, else picked once
        # signaling is reached (_pick_host_address).
        self.ice_host_addresses = list(config.webrtc.ice_host_addresses)
        # Our peer connections' certificate, and the node id it proves (_identity.py).
        key, cert = load_identity(Path(spec.identity_path))
        self.certificate = RTCCertificate(key, cert)
        self.node_id = node_id_of(cert)
        webrtc = config.webrtc
        overrides: dict[str, Any] = {
            "connect_timeout_s": webrtc.connect_timeout_s,
            "keepalive_interval_s": webrtc.keepalive_interval_s,
            "keepalive_timeout_s": webrtc.keepalive_timeout_s,
            "media_tracks": webrtc.media_tracks,
            "large_packets": webrtc.large_packets,
        }
        overrides.update(spec.tuning)
        self.tuning = Tuning(**overrides)
        self.counters = GatewayCounters()
        self.directory = Directory()
        self._actor_configs = {actor.name: actor for actor in config.actors}
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._restarting = False  # the supervisor stops us to start a new gateway
        self._zctx = zmq.Context()
        self._hwm = config.node.hwm_messages
        threshold_s = config.node.blocked_loop_warning_s
        waits = "every call, tell and stream to or from another node waits"
        self.loop_watch = LoopWatch(threshold_s, "gateway", waits) if threshold_s else None
        # Workers send calls and tells to one socket, stream frames to another and media
        # samples to a third: a stream that backs up (a slow receiver on another node)
        # stops the reading of streams only; calls and media to any node still go through.
        self._router = self._bind_router(spec.endpoint, "gateway in")
        streams = gateway_streams_endpoint(spec.endpoint)
        media = gateway_media_endpoint(spec.endpoint)
        self._routers = {
            CALLS: self._router,
            STREAMS: self._bind_router(streams, "gateway streams in", STREAMS),
            MEDIA: self._bind_router(media, "gateway media in", MEDIA),
        }
        # Answers for local callers whose queue is full wait for room (never dropped).
        self._replies = {
            name: Replies(router, self._count_undelivered_answers)
            for name, router in self._routers.items()
        }
        self._pressure: dict[str, set[object]] = {CALLS: set(), STREAMS: set()}
        #: Reconnect attempts whose RPC lane is full: they do not stop the calls socket;
        #: past a bound, calls and tells for their node are refused (Outbound._to_node).
        self._refusing: set[PeerConnection] = set()
        ctl = self._zctx.socket(zmq.DEALER)
        ctl.setsockopt(zmq.LINGER, 1000)
        ctl.setsockopt(zmq.ROUTING_ID, b"g:" + self.node_id.encode())
        # Never again once the supervisor is gone: a new node's at the same path is not ours.
        ctl.setsockopt(zmq.RECONNECT_IVL, -1)
        ctl.connect(spec.control_endpoint)
        self._control = LoopSocket(ctl, self._on_control, "gateway control")
        self._dealers: dict[str, LoopSocket] = {}
        self._feeds: dict[str, FeedReads] = {}  # what each worker read of its feed
        self._syncs: dict[str, str] = {}
        self._sync_ids = itertools.count(1)
        self._overflow: dict[str, Backlog] = {}
        self._signaling: SignalingClient | None = None
        self._signaling_connects = 0
        self._signaling_back_at: float | None = None  # a reconnect (Outbound, 404 vs 503)
        self._discoverer = self._new_discoverer()
        self._regs: dict[ActrId, Any] = {}
        # Where signaling knows an actor by another id than its worker has (see
        # _refresh_aliases): the two directions of the translation, usually empty.
        self._to_worker: dict[ActrId, ActrId] = {}
        self._to_signaling: dict[ActrId, ActrId] = {}
        self._instances: list[tuple[Any, Any]] = []
        self._last_report: dict[str, str] = {}
        self._nodes: dict[str, RemoteNode] = {}
        self._node_of: dict[ActrId, str] = {}
        self._locating: dict[ActrId, _Locate] = {}
        self._not_found: dict[ActrId, tuple[float, ActrError]] = {}
        self._missing_drops = 0  # times frames for an actor nobody hosts were dropped
        self._notices = NoticeLimiter(self._loop.time)  # senders told of dropped frames
        self._shell_tellers = ShellTellers()  # whom to tell of a Shell's frames dropped
        self._failed_call_reports = 0  # connections that failed with calls pending
        self._pending_out: dict[str, _OutCall] = {}
        self._pending_in: dict[str, _InCall] = {}
        #: Calls from other nodes whose link failed before our actor answered (oldest
        #: first, at most CALLERS_LOST_KEPT): their answers are undeliverable, not late.
        self._callers_lost: OrderedDict[str, None] = OrderedDict()
        #: Nodes given up on, and why, until they connect again (_nodes, _to_nodes).
        self._given_up: dict[str, str] = {}
        self._out_expiry = ExpiryWheel(self._loop, self._pending_out)
        self._in_expiry = ExpiryWheel(self._loop, self._pending_in)
        self._parked: dict[ActrId, deque[Parked]] = {}
        self._held_for_restart: dict[ActrId, int] = {}
        # Frames from other nodes' actors not introduced yet (Inbound._from_node).
        self._unintroduced: dict[tuple[str, ActrId], deque[Parked]] = {}
        self._introductions_asked: dict[tuple[str, ActrId], float] = {}
        self._introducing: set[tuple[ActrId, ActrId]] = set()
        # Frames for the links made while draining a worker socket go out as batches
        # when the drain ends (_send_link, _flush_links).
        self._in_drain = False
        self._holding: set[PeerConnection] = set()
        self._lossy: dict[ActrId, deque[StreamFrame]] = {}  # see Outbound._defer_lossy
        # Reliable stream frames for a node whose link is full (one slow node stops only
        # the streams to it, not the streams socket).
        self._stream_hold = StreamHold(
            lambda frame, data: self._stream_out(frame, data, released=True),
            lambda full: self._on_pressure("held streams", full, (STREAMS,)),
            self.tuning.queue_high_bytes,
        )
        # The senders of frames for a target being located, told to wait past
        # LOCATE_WAIT_BYTES (_outbound), as for a full link:
        self._locate_waits = SenderWaits(self._tell_sender_to_wait)
        self._reads = ReadCounts()  # (each sender's credit of unread bytes)
        # Calls and tells for a node whose link is full, likewise (their senders told to
        # wait: actrhost/_held_targets.py).
        self._call_hold = CallHold(
            self._send_held_call,
            lambda full: self._on_pressure("held calls", full, (CALLS,)),
            self._tell_sender_to_wait,
            # Kept before the socket pauses, beyond what each sender told to wait may
            # still have on its way (SenderWaits.room_bytes).
            2 * self.tuning.queue_high_bytes,
        )
        self._in_ids = itertools.count(1)
        self._out_ids = itertools.count(1)
        self._rings = RingReaders(spec.shm_prefix)
        # The first gateway of its node saw every tell and chunk its workers got.
        self._tells_received = TellsReceived(complete=spec.incarnation == 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callbacks = Callbacks(
            on_frame=self._on_link_frame,
            on_control=self._on_link_control,
            on_state=lambda pc, state, reason: None,  # RemoteNode reports instead
            on_pressure=self._on_link_pressure,
            on_media=self._deliver_media,
            parse_id=ActrId.parse,
            received_before=self._tells_received.judge,
        )

    def __repr__(self) -> str:
        return f"Gateway({self.node_id})"

    def _bind_router(self, endpoint: str, name: str, socket: str = CALLS) -> LoopSocket:
        router = self._zctx.socket(zmq.ROUTER)
        configure_socket(router, self._hwm)
        router.setsockopt(zmq.RCVHWM, min(self._hwm, ROUTER_RECEIVE_HWM))
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.bind(endpoint)
        # Few messages per turn: one may hold 64 stream frames (a sender's batch), and the
        # loop must get back to the links' receive path often (a flood of latency-first
        # frames once starved it past the keepalive timeout).
        on_message = self._on_router if socket == CALLS else partial(self._on_router, via=socket)
        return LoopSocket(router, on_message, name, self._flush_links, batch=ROUTER_BATCH)

    def _on_link_pressure(self, pc: PeerConnection, socket: str, full: bool) -> None:
        """A link's lane that ``socket`` feeds is full, or has room again: a stream lane
        holds back that node's stream frames only, an RPC lane its calls and tells
        (``_call_hold``); unless its link failed and has not come back: then they queue
        up to ``Tuning.reconnect_queue_bytes`` and the rest is refused
        (Outbound._to_node). Before, a full RPC lane stopped the calls socket, and every
        call to any node waited: through a partition until the node was given up (60 s)."""
        if socket == STREAMS:
            connected = pc.state is LinkState.CONNECTED
            self._stream_hold.link_full(pc.remote_node, pc, full, connected)
            return
        node = self._nodes.get(pc.remote_node)
        if full and node is not None and node.reconnecting_because():
            self._refusing.add(pc)
            return
        self._refusing.discard(pc)
        self._call_hold.link_full(pc.remote_node, pc, full)

    def _refusing_link_up(self, pc: PeerConnection) -> None:
        """``pc`` connected with its RPC lane still full: from now on it drains, and new
        calls and tells for its node wait for it as for any full lane."""
        if pc in self._refusing:
            self._refusing.discard(pc)
            self._call_hold.link_full(pc.remote_node, pc, True)

    def _send_link(self, pc: PeerConnection, lane: int, frame: bytes) -> None:
        """Send a frame to another node: kept for a batch during a drain of a worker
        socket, else (or when it can't be batched) queued now, behind what is kept."""
        if self._in_drain and pc.hold(lane, frame):
            self._holding.add(pc)
            return
        if pc in self._holding:
            self._holding.discard(pc)
            pc.flush_held()
        pc.enqueue(lane, frame)

    def _flush_links(self) -> None:
        """End of a drain: what the frames of this loop turn kept goes out (on_drained)."""
        self._in_drain = False
        self._flush_lossy()
        if self._holding:
            holding, self._holding = self._holding, set()
            for pc in holding:
                pc.flush_held()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%r: background task failed", self, exc_info=task.exception())

    # -- life cycle --------------------------------------------------------------------

    async def run(self) -> int:
        """Register, serve until stopped, close. Returns the exit code."""
        if self.loop_watch is not None:
            self.loop_watch.start()
        try:
            return await self._serve()
        finally:
            if self.loop_watch is not None:
                self.loop_watch.stop()

    async def _serve(self) -> int:
        self._send_control({"op": control.HELLO, "pid": os.getpid()})
        client = SignalingClient(
            self.spec.signaling_url,
            on_relay=self._on_relay,
            on_reregistered=self._on_reregistered,
            on_actors_left=self._on_actors_left,
            on_connected=lambda: self._on_signaling_connected(client),
            ca_file=self.config.signaling.ca_file if self.config.signaling else None,
        )
        self._signaling = client
        try:
            await client.connect()
            await self._register_all(client)
        except (ActrError, OSError) as exc:
            reason = exc.message if isinstance(exc, ActrError) else str(exc)
            log.error("%r: registration with %s failed: %s", self, self.spec.signaling_url, reason)
            # The supervisor puts the reason in its own last line (the node does not start).
            self._send_control({"op": "registration_failed", "error": reason})
            await client.aclose(unregister=False)
            self._close()
            return 1
        self._send_control({"op": control.STATE, "state": ActorState.RUNNING.value})
        watch = asyncio.ensure_future(self._watch_parent())
        report = asyncio.ensure_future(self._report_credentials())
        try:
            await self._stop.wait()
        finally:
            watch.cancel()
            report.cancel()
            await self._shutdown(client)
        return 0

    async def _register_all(self, client: SignalingClient) -> None:
        realm = self.config.node.realm
        timeout_s = client.request_timeout_s

        async def register_one(inst: Any) -> Any:
            reg = await register(
                client,
                inst,
                realm,
                acl_rules(self.config.actor(inst.name).acl),
                timeout_s,
                schema_text=_schema_text(self.config.actor(inst.name).service_schema),
            )
            # Known at once, not when all are: another node may relay to this actor (a
            # role negotiation) before the others are registered; dropping that relay
            # left the other node waiting for an offer (seen after a gateway restart).
            if reg.actr_id is not None:
                self._regs[reg.actr_id] = reg
            return reg

        regs = await asyncio.gather(*(register_one(inst) for inst in self.spec.instances))
        self._instances = list(zip(self.spec.instances, regs, strict=True))
        self._refresh_aliases()
        self._report_registered()

    def _report_registered(self) -> None:
        items = [
            {
                "name": inst.name,
                "index": inst.index,
                "id": str(reg.actr_id),
                "credential_hex": credential_hex(reg),
            }
            for inst, reg in self._instances
        ]
        self._last_report = {item["id"]: item["credential_hex"] for item in items}
        self._send_control({"op": "registered", "ids": items})

    async def _report_credentials(self) -> None:
        """Renewed credentials go to the supervisor, so a restarted gateway keeps the ids."""
        while True:
            await asyncio.sleep(CREDENTIAL_REPORT_S)
            now = {str(r.actr_id): credential_hex(r) for r in self._regs.values()}
            if now != self._last_report:
                self._report_registered()

    def _on_reregistered(self, reg: Any, old_id: ActrId) -> None:
        log.warning(
            "%r: signaling gave %s the new id %s (a restarted server without its keys); "
            "the gateway translates between the two",
            self,
            old_id,
            reg.actr_id,
        )
        self._regs.pop(old_id, None)
        self._regs[reg.actr_id] = reg
        self._refresh_aliases()
        self._report_registered()

    def _refresh_aliases(self) -> None:
        """Pair each actor's signaling id with its worker's id where they differ.

        A signaling server restarted without its keys gives re-registering actors new
        ids, while their workers keep the ones they started with (restarting them would
        lose their state). Other nodes discover the new id; the gateway is the node's
        edge, so it translates: a frame from another node for a new id goes to the
        worker, and a worker's frames leave with its new id as the source, so that
        answers and calls back find it through signaling.
        """
        # Only ids a worker process was started with: before registration the directory
        # holds the supervisor's provisional ids (no pid yet), which no worker ever uses.
        workers = {
            (e.name, e.index): e.actr_id for e in self.directory.entries() if e.pid is not None
        }
        to_worker = {}
        for inst, reg in self._instances:
            worker_id = workers.get((inst.name, inst.index))
            if worker_id is not None and reg.actr_id is not None and reg.actr_id != worker_id:
                to_worker[reg.actr_id] = worker_id
        self._to_worker = to_worker
        to_signaling = {worker: known for known, worker in to_worker.items()}
        if to_signaling != self._to_signaling:
            self._to_signaling = to_signaling
            self._say_hello_to_all()  # other nodes count each actor once (_nodes)

    def _report_availability(self) -> None:
        """Tell signaling which instances its discovery may offer other nodes: not one
        whose process is gone or stopping (a crash restart's backoff, a rolling restart,
        a temporary actor that ended), whose callers would only get 503."""
        states = {(e.name, e.index): e.state for e in self.directory.entries()}
        for inst, reg in self._instances:
            state = states.get((inst.name, inst.index))
            if state is None or reg.actr_id is None:
                continue
            live = state in (ActorState.STARTING, ActorState.RUNNING)
            wanted = Availability.AVAILABLE if live else Availability.DRAINING
            if reg.availability is not wanted:
                reg.set_load(availability=wanted)
                self._spawn(self._heartbeat_now(reg))

    @staticmethod
    async def _heartbeat_now(reg: Any) -> None:
        # Not at the next interval (seconds away): discovery should know at once. Without
        # a connection the next heartbeat after reconnecting carries it.
        with contextlib.suppress(ActrError, ClosedResourceError):  # the latter: stopping
            await reg.heartbeat()

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM, the supervisor's stop, or its death)."""
        self._stop.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISOR_WATCH_S)
            if supervisor_gone(self.spec.supervisor_pid):
                log.warning("%r: supervisor %d is gone; stopping", self, self.spec.supervisor_pid)
                self.request_stop()
                return

    async def _shutdown(self, client: SignalingClient) -> None:
        self._send_control({"op": control.STATE, "state": ActorState.STOPPING.value})
        self._rings.stop_sweeping()  # what waits in our sockets still goes out
        for request_id in list(self._pending_out):
            self._fail_out(request_id, Unavailable(f"gateway of node {self.node_id} is stopping"))
        # Answers the workers gave before they stopped leave before the connections
        # close (within the node's grace; the supervisor kills us 2 s after it).
        grace_s = self.config.node.shutdown_grace_s
        await asyncio.gather(*(node.drain(grace_s) for node in self._nodes.values()))
        held = self._stream_hold.frames + sum(len(x.chunks) for x in self._locating.values())
        if held:  # (their senders were told they went)
            self.counters.undeliverable += held
            log.warning(
                "%r: %d stream frame(s) held for full links, slow actors or locates are dropped",
                self,
                held,
            )
        if not self._restarting:  # a new gateway comes: let the other nodes reconnect
            await asyncio.gather(*(node.say_bye() for node in self._nodes.values()))
        await asyncio.gather(
            *(node.close() for node in self._nodes.values()), return_exceptions=True
        )
        await wait_for_closing_connections(CLOSE_WAIT_S)
        await client.aclose()
        for task in list(self._tasks):
            task.cancel()
        self._send_control({"op": control.STATE, "state": ActorState.STOPPED.value})
        self._close()

    def _close(self) -> None:
        orphaned = supervisor_gone(self.spec.supervisor_pid)
        # A graceful stop lets answers already queued leave; an orphan just goes.
        linger_ms = 0 if orphaned else 500
        self._rings.close()
        for dealer in self._dealers.values():
            dealer.close(linger_ms)
        for replies in self._replies.values():
            replies.close()
        for router in self._routers.values():
            router.close(linger_ms)
        self._control.close(linger_ms=linger_ms)
        self._zctx.term()
        endpoint = self.spec.endpoint
        path = Path(endpoint.removeprefix("ipc://"))
        if endpoint.startswith("ipc://") and not taken_over(path.parent, self.spec.supervisor_pid):
            path.unlink(missing_ok=True)
            feeds = [gateway_feed_endpoint(worker) for worker in self._dealers]
            for beside in (
                gateway_streams_endpoint(endpoint),
                gateway_media_endpoint(endpoint),
                *feeds,
            ):
                Path(beside.removeprefix("ipc://")).unlink(missing_ok=True)
        if orphaned:
            # Like an orphaned worker: the last process out removes the run dir.
            remove_orphaned_run_dir(self.spec.control_endpoint, self.spec.supervisor_pid)

    # -- control -----------------------------------------------------------------------

    def _send_control(self, message: dict[str, Any]) -> None:
        try:
            self._control.send_nowait(control.encode(message))
        except zmq.ZMQError as exc:
            log.debug("%r: control message %s not sent: %s", self, message["op"], exc)

    def _on_control(self, parts: list[bytes]) -> None:
        message = control.decode(parts[-1]) if len(parts) == 1 else None
        if message is None:
            self.counters.malformed_local += 1
            return
        op = message["op"]
        if op == control.DIRECTORY:
            gone = self.directory.update(message)
            self._refresh_aliases()
            self._workers_changed()
            self._report_availability()
            if gone:
                for entry in gone:
                    self._rings.forget_writer(f"{entry.actr_id.serial_number:x}")
                self._targets_gone(gone)
            self._unpark_started()
        elif op == control.STOP:
            self._restarting = message.get("restart") is True
            self.request_stop()
        elif op == control.STATS_REQUEST:
            self._send_control(
                {"op": control.STATS, "req": message.get("req"), "stats": self.stats()}
            )

    def stats(self) -> dict[str, Any]:
        """Gateway counters and one entry per remote node (``actrhost status``)."""
        client = self._signaling
        return {
            "node_id": self.node_id,
            "signaling": client.state.value if client is not None else "new",
            "registered": len(self._regs),
            "pending_out": len(self._pending_out),
            "pending_in": len(self._pending_in),
            "ice_host_addresses": self.ice_host_addresses,
            "streams_held": self._stream_hold.frames,
            "calls_held": self._call_hold.frames,
            **self.waiting_for_workers(),
            **vars(self.counters),
            # Not there when the watch is off (a 0 would claim that nothing blocked).
            **(self.loop_watch.stats() if self.loop_watch else {}),
            "remote_nodes": {
                node_id: {**node.stats(), "refusing": self._refuses(node.pc)}
                for node_id, node in self._nodes.items()
            },
        }

    def _on_signaling_connected(self, client: SignalingClient) -> None:
        self._signaling_connects += 1
        if self._signaling_connects > 1:
            self._signaling_back_at = self._loop.time()
        self._pick_host_address(client)

    def _pick_host_address(self, client: SignalingClient) -> None:
        """Without ``[webrtc] ice_host_addresses``, offer the address this host reaches the
        signaling server from: other nodes reach that server too, so they likely reach
        us there (127.0.0.1 when it runs on loopback). Read again at every connection to
        signaling: a host that moved to another network offers its new address to the
        connections made after."""
        if self.config.webrtc.ice_host_addresses:
            return
        address = client.local_address
        if address is None or [address] == self.ice_host_addresses:
            return
        use_host_addresses([address])
        self.ice_host_addresses = [address]
        log.info(
            "%r: ICE host address %s, the one that reaches signaling (set [webrtc] "
            "ice_host_addresses to choose)",
            self,
            address,
        )


def _schema_text(path: Path | None) -> str:
    """The service schema an actor registers with (read once per registration)."""
    return path.read_text() if path is not None else ""
