"""The application side of a node: ``async with actrhost.connect(...) as shell``.

A Shell is a process that attaches to a running node: it calls and tells actors directly
over ZeroMQ (one hop, like a worker), follows the directory the supervisor pushes, and
can serve ``Dest.SHELL`` routes that actors call with ``shell.on_rpc(route_key)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import os
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import zmq

from . import _control as control
from ._config import DEFAULT_MAX_MESSAGE_BYTES
from ._context import DEFAULT_TIMEOUT_S, Answer, decode_answer, encode_message
from ._directory import LIVE_STATES, ActorState, Directory, discover_via, take_update
from ._envelope import REQUEST, TELL, Envelope, checked_key, checked_rpc_lane
from ._errors import (
    BadRequest,
    ClosedResourceError,
    DeadlineExceeded,
    NotFound,
    Unavailable,
    error_from_code,
)
from ._ids import ActrId, ActrType
from ._linux import process_gone
from ._payload_type import PayloadType
from ._rpc import RpcEndpoint, deadline_after
from ._rundir import PID_FILE, is_live, node_prefix, remove_if_dead
from ._shell_context import ShellContext
from ._shell_serving import ShellHandler, ShellServing
from ._shell_streams import ShellStreams, Target
from ._stream_sender import StreamSender
from ._streams import StreamReceiver
from ._zmqloop import LoopSocket

#: How long connecting waits for the supervisor to answer.
ATTACH_TIMEOUT_S = 5.0
#: How often an attached Shell checks that its node's supervisor still runs.
NODE_WATCH_S = 0.25
#: Queue bound of the Shell's sockets (messages), like a worker's default.
SHELL_HWM = 10000
#: How long closing a Shell waits for queued tells and frames to leave.
CLOSE_LINGER_MS = 2000
#: [shm] defaults, for a Shell given only a control endpoint (and [node]
#: max_message_bytes).
#: A type discovered beyond this node is kept this long for calls and tells by type: one
#: signaling round trip per call halved what a Shell's calls to another node could do
#: (QA: 10,007 discoveries for 10,000 calls). A call that finds it gone forgets it.
DISCOVERED_KEPT_S = 1.0
DEFAULT_THRESHOLD_BYTES = 65536
DEFAULT_RING_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ActorInfo:
    """One actor instance as ``shell.actors()`` reports it."""

    name: str
    type: ActrType
    actr_id: ActrId
    pid: int | None
    state: ActorState
    restarts: int


log = logging.getLogger(__name__)


def _refused(reply: dict[str, Any]) -> None:
    """Raise ``BadRequest`` for a control request the node refused (``op: error``)."""
    if reply.get("op") == "error":
        raise BadRequest(f"the node refused the attach: {reply.get('message')}")


def target_key(target: Target) -> ActrId | ActrType | str:
    """An ActrId, an ActrType or an actor name, from any form a Shell accepts."""
    if isinstance(target, ActrId | ActrType):
        return target
    if not isinstance(target, str):
        raise TypeError(f"target must be an ActrId, ActrType or str, not {type(target).__name__}")
    if "@" in target:
        return ActrId.parse(target)
    if "+" in target:
        return ActrType.parse(target)
    return target


class NodeSilent(Unavailable):
    """The node's supervisor runs, but did not answer within the time given."""


class Shell(ShellServing, ShellStreams):
    """A client attached to one node. Create it with :func:`connect`. The routes it
    serves for actors: :class:`~._shell_serving.ShellServing`; its data streams and
    media: :class:`~._shell_streams.ShellStreams`."""

    def __init__(
        self,
        control_endpoint: str,
        *,
        threshold_bytes: int = DEFAULT_THRESHOLD_BYTES,
        ring_bytes: int = DEFAULT_RING_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.control_endpoint = control_endpoint
        self.threshold_bytes = threshold_bytes
        self.ring_bytes = ring_bytes
        self.max_message_bytes = max_message_bytes
        self._stream_keys: set[str] = set()
        self.run_dir = Path(control_endpoint.removeprefix("ipc://")).parent
        self.directory = Directory()
        self._directory_changed = asyncio.Event()
        self._discovered: dict[ActrType, tuple[ActrId, float]] = {}  # type -> (id, until)
        self.node_name = ""
        self._handlers: dict[str, tuple[ShellHandler, type | None]] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._req = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = False
        self._opening: asyncio.Future[None] | None = None
        self._closed = False
        self._node_gone: Unavailable | None = None  # see _watch_node
        self._supervisor_pid = 0  # read at attach
        #: How long ``open()`` waits for the node to answer its attach (the CLI sets its
        #: ``--timeout`` when shorter).
        self.attach_timeout_s = ATTACH_TIMEOUT_S
        self._attaching: asyncio.Task[None] | None = None  # see _send_attach

    def __repr__(self) -> str:
        return f"Shell({self.control_endpoint})"

    async def __aenter__(self) -> Shell:
        """``async with actrhost.connect(...) as shell``: :meth:`open`, closed on exit."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Attach to the node; raises ``Unavailable`` if none answers in time. Opened
        already, or being opened by another task: waits for that open, as it ends."""
        if self._closed:
            raise ClosedResourceError(f"{self!r} is closed")
        if self._opening is not None:
            # One open: a second (`async with` a Shell opened already) made a second set
            # of sockets, leaked; one while the first attached went on with an empty
            # directory (QA).
            await asyncio.shield(self._opening)
            return
        self._opening = asyncio.ensure_future(self._open_once())
        try:
            await self._opening  # (cancelled with its caller: it cleans up after itself)
        except BaseException:
            self._opening = None  # a later open() tries again (unless the Shell closed)
            raise

    async def _open_once(self) -> None:
        self._refuse_a_dead_node()
        self._loop = asyncio.get_running_loop()
        self._context = ShellContext(self)
        self._zctx = self._context.zctx
        ctl = self._zctx.socket(zmq.DEALER)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.setsockopt(zmq.ROUTING_ID, b"s:" + secrets.token_hex(6).encode())
        ctl.connect(self.control_endpoint)
        self._control = LoopSocket(ctl, self._on_control, "shell control")
        tag = f"s{os.getpid():x}.{secrets.token_hex(3)}"
        # Absolute: the workers and the supervisor resolve a relative ipc:// path from
        # their own folders, not ours (QA: `call ipc://actrhost-0/…` from /tmp).
        endpoint = f"ipc://{self.run_dir.absolute() / f'{tag}.sock'}"
        try:
            self._rpc = RpcEndpoint(
                self._zctx,
                endpoint,
                self._on_request,
                hwm=SHELL_HWM,
                name="shell",
                max_message_bytes=self.max_message_bytes,
                on_stream=self._on_stream,
            )
        except zmq.ZMQError as exc:
            self._control.close()
            self._zctx.destroy(linger=0)
            self._context.release()
            # Mostly: the node never ran (or stopped and removed its run directory).
            if self.run_dir.is_dir():
                why = str(exc)
            elif self.run_dir.exists():
                why = f"{self.run_dir} is not a folder"
            else:
                why = f"{self.run_dir} does not exist"
            raise self._no_node(why) from None
        prefix = node_prefix(self.run_dir)
        self._streams_in = StreamReceiver(
            node_prefix=prefix,
            capacity=SHELL_HWM,
            on_full=self._rpc.inbound.pause_reading,
            on_space=self._rpc.inbound.resume_reading,
        )
        self._streams_out = StreamSender(
            self._rpc,
            node_prefix=prefix,
            self_tag=tag,
            threshold_bytes=self.threshold_bytes,
            ring_bytes=self.ring_bytes,
        )
        self._open = True
        # Watched from before the attach (the pid file is written before the control
        # socket listens): a supervisor killed meanwhile fails the attach at once, not
        # after ATTACH_TIMEOUT_S, and our close removes what its node left (our socket
        # file kept its last process from removing the run dir).
        self._watch_supervisor()
        try:
            reply = await self._request(
                control.ATTACH, self.attach_timeout_s, **self._attach_fields()
            )
            _refused(reply)
        except BaseException:
            await self.aclose()
            raise
        self.node_name = reply.get("node", "")
        self._take_limits(reply.get("limits"))
        if not self._supervisor_pid:
            self._watch_supervisor()

    def _take_limits(self, limits: object) -> None:
        """Go by the node's ``max_message_bytes`` and ``[shm]`` sizes, as it started (the
        attach answer has them), whatever this Shell was made with."""
        if not isinstance(limits, dict):
            return  # (a node of an older version)
        # (threshold_bytes may be 0: every payload through a ring)
        sizes = {k: v for k, v in limits.items() if type(v) is int and v >= 0}
        if "max_message_bytes" in sizes:
            self.max_message_bytes = self._rpc.max_message_bytes = sizes["max_message_bytes"]
        if "threshold_bytes" in sizes:
            self.threshold_bytes = self._streams_out.threshold_bytes = sizes["threshold_bytes"]
        if "ring_bytes" in sizes:
            self.ring_bytes = self._streams_out.ring_bytes = sizes["ring_bytes"]

    def _watch_supervisor(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._supervisor_pid = int((self.run_dir / PID_FILE).read_text())
            self._spawn(self._watch_node(self._supervisor_pid))

    @property
    def node_gone(self) -> Unavailable | None:
        """Set once the attached node's supervisor is gone (every later send fails)."""
        return self._node_gone

    @property
    def supervisor_pid(self) -> int:
        """Process id of the attached node's supervisor (0 if its pid file was unreadable)."""
        return self._supervisor_pid

    def _refuse_a_dead_node(self) -> None:
        """Fail at once, not after ATTACH_TIMEOUT_S, in the run dir of a node that was
        killed: nobody listens, and the pid file names a dead supervisor (all killed at
        once) or is gone (its workers removed it, other Shells' sockets keep the dir)."""
        if not self.run_dir.is_dir():
            return  # the attach says so
        try:
            pid = int((self.run_dir / PID_FILE).read_text())
        except ValueError:
            return  # being written: a node is starting
        except OSError:
            pid = 0
        if (pid == 0 or process_gone(pid)) and not is_live(self.run_dir):
            why = f"its supervisor, pid {pid}, died" if pid else "nothing listens there"
            raise self._no_node(why)

    def _no_node(self, why: str) -> Unavailable:
        return Unavailable(
            f"no node running at {self.control_endpoint} ({why}); start one with "
            "`actrhost run CONFIG` (or wait for it: `actrhost wait CONFIG`)"
        )

    async def _watch_node(self, supervisor_pid: int) -> None:
        """A supervisor killed outright takes its workers with it and tells nobody: fail
        what waits on the node at once, not at each deadline, and every later send."""
        while not process_gone(supervisor_pid):
            await asyncio.sleep(NODE_WATCH_S)
        node = repr(self.node_name) if self.node_name else f"at {self.run_dir}"
        error = Unavailable(f"node {node} is gone: its supervisor (pid {supervisor_pid}) exited")
        self._node_gone = error
        # Closed, so that it never reaches a node started since in the same run dir:
        # ZeroMQ reconnected it, and a stale Shell restarted and stopped that node (QA).
        self._control.close()
        self._rpc.peers_down(error)
        # Calls and discoveries waiting for an instance to start: woken to fail (a
        # killed node sends no update; they waited for their deadlines, QA).
        self._directory_changed.set()
        self._directory_changed = asyncio.Event()
        for future in self._replies.values():  # a restart, a status request…
            if not future.done():
                future.set_exception(copy.copy(error))
        for entry in self.directory.entries():
            self._streams_out.forget_target(entry.actr_id.serial_number)

    def _attach_fields(self) -> dict[str, Any]:
        return {
            "endpoint": self._rpc.endpoint,
            "routes": sorted(self._handlers) + sorted(self._stream_keys),
        }

    def _send_attach(self) -> None:
        """Tell the node the routes and streams this Shell serves now.

        Calls, tells and streams sent meanwhile wait for its answer (see :meth:`_route`),
        which the supervisor sends after passing the routes on to the workers: an actor
        that such a call reaches can call ``Dest.SHELL`` back at once, not get 404.
        """
        self._attaching = self._spawn(self._attach_again())

    async def _attach_again(self) -> None:
        # Nobody to tell if the node is gone: the next call says so itself.
        with contextlib.suppress(Unavailable):
            reply = await self._request(control.ATTACH, ATTACH_TIMEOUT_S, **self._attach_fields())
            try:
                _refused(reply)  # (it was taken for an attach, QA)
            except BadRequest as exc:
                log.error("%r: %s: its routes are not served", self, exc.message)

    async def aclose(self) -> None:
        """Detach and close every socket. Idempotent; pending calls fail with Unavailable."""
        if self._closed:
            return
        self._closed = True
        if not self._open:
            return
        for task in list(self._tasks):
            task.cancel()
        try:
            self._control.send_nowait(control.encode({"op": control.DETACH, "req": 0}))
        except zmq.ZMQError:
            pass
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ClosedResourceError(f"{self!r} was closed"))
        self._streams_in.close()
        # Unread rings of a node that died are ours to remove; else their readers do.
        self._streams_out.close(unlink=self._node_gone is not None)
        # Tells and stream frames the caller already handed over must not be lost at close.
        self._rpc.close(linger_ms=CLOSE_LINGER_MS)
        self._control.close(linger_ms=100)
        # That wait (a worker that stopped reading) is the context's term(): not on the
        # caller's event loop, which it stopped for up to CLOSE_LINGER_MS (QA).
        await asyncio.to_thread(self._zctx.term)
        self._context.release()
        if self._supervisor_pid:
            # The node died while we were attached: its last process out could not remove
            # the run dir (our socket file was in it), or all died at once (SIGKILL).
            remove_if_dead(self.run_dir, self._supervisor_pid)

    def _check_open(self) -> None:
        if self._closed or not self._open:
            raise ClosedResourceError(f"{self!r} is not open")
        running = asyncio._get_running_loop()
        if running is not None and running is not self._loop:
            # asyncio's own errors said nothing of it ("Event loop is closed", "attached
            # to a different loop", QA).
            raise RuntimeError(f"{self!r} belongs to the event loop that opened it")

    def _next_directory_change(self) -> asyncio.Event:
        """What the next directory update sets, for a wait on an instance that starts;
        raises once the node is gone (what wakes such waits)."""
        self._refuse_if_gone()
        return self._directory_changed

    def _refuse_if_gone(self) -> None:
        """Every send and request fails at once once the node is gone (a call said "no
        running actor … (instances are stopped)", which the node's last update said)."""
        if self._node_gone is not None:
            raise copy.copy(self._node_gone)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # cancelled by aclose()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- control -----------------------------------------------------------------------

    async def _request(self, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        self._refuse_if_gone()  # (a status waited 5 s for it, a restart 600 s: QA)
        req = next(self._req)
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[req] = future
        try:
            self._control.send_nowait(control.encode({"op": op, "req": req, **fields}))
            async with asyncio.timeout(timeout_s):
                return await future
        except (TimeoutError, zmq.ZMQError):
            if self._supervisor_pid and not process_gone(self._supervisor_pid):
                # Alive, yet silent: say so (QA: "no node answered" sent users looking
                # for a node that was there, stopped with SIGSTOP or busy).
                raise NodeSilent(
                    f"no node answered at {self.control_endpoint} within {timeout_s:g} s: "
                    f"its supervisor (pid {self._supervisor_pid}) runs but does not answer "
                    "(stopped, or too busy?)"
                ) from None
            raise Unavailable(f"no node answered at {self.control_endpoint}") from None
        finally:
            self._replies.pop(req, None)

    def _on_control(self, parts: list[bytes]) -> None:
        message = control.decode(parts[-1]) if len(parts) == 1 else None
        if message is None:
            self._rpc.dropped_malformed("a malformed control message")
            return
        if message["op"] == control.DIRECTORY:
            take_update(self.directory, message, self._rpc, self._streams_out, self._streams_in)
            self._directory_changed.set()  # wakes _route; the next change gets a new event
            self._directory_changed = asyncio.Event()
        future = self._replies.get(message.get("req"))  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    # -- calling actors ----------------------------------------------------------------

    def resolve(self, target: Target) -> ActrId:
        """The ActrId for a target: an ActrId, an ActrType, id or type text, or a name."""
        key = target_key(target)
        if isinstance(key, ActrId):
            return key
        if isinstance(key, ActrType):
            return self.directory.pick(key).actr_id
        return self.directory.pick_by_name(key).actr_id

    async def _route(self, target: Target, deadline: float) -> tuple[ActrId, str]:
        """The target's id and where to send to it. A target that is still starting is
        waited for until ``deadline`` (then Unavailable), as between actors (docs/node.md):
        a script may attach while the node is starting its actors."""
        self._refuse_if_gone()
        if self._attaching is not None and not self._attaching.done():
            await asyncio.wait({self._attaching})  # our new routes reach the workers first
        while True:
            try:
                actr_id = await self._resolve(target, deadline)
                return actr_id, self.directory.endpoint_of(actr_id)
            except Unavailable:
                remaining = deadline - self._loop.time()
                if remaining <= 0 or not self.directory.starting(target_key(target)):
                    # Once through the loop first: a caller retrying at once on 503 never
                    # let the directory update in that brings the instance back (QA).
                    await asyncio.sleep(0)
                    raise
                changed = self._next_directory_change()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await changed.wait()

    async def _resolve(self, target: Target, deadline: float) -> ActrId:
        """:meth:`resolve`, and for a type no local instance has, discovery beyond this
        node (through the gateway and signaling) when the node has a gateway."""
        try:
            return self.resolve(target)
        except NotFound:
            if self.directory.gateway is None or isinstance(target, ActrId):
                raise
            if isinstance(target, str) and "+" not in target:
                raise  # an actor name is a local thing
            actr_type = target if isinstance(target, ActrType) else ActrType.parse(target)
            kept = self._discovered.get(actr_type)
            if kept is not None and kept[1] > self._loop.time():
                return kept[0]
            actr_id = await discover_via(self.directory, self._rpc, actr_type, None, deadline)
            self._discovered[actr_type] = (actr_id, self._loop.time() + DISCOVERED_KEPT_S)
            return actr_id

    def _forget_discovered(self, actr_id: ActrId) -> None:
        """``actr_id`` failed a call as gone or unknown: discover its type again."""
        kept = self._discovered.get(actr_id.type)
        if kept is not None and kept[0] == actr_id:
            del self._discovered[actr_id.type]

    @overload
    async def call(
        self,
        target: Target,
        route_key: str,
        payload: Any = ...,
        *,
        timeout: float = ...,
        payload_type: PayloadType = ...,
        response_type: None = ...,
        traceparent: str = ...,
        tracestate: str = ...,
    ) -> bytes: ...

    @overload
    async def call(
        self,
        target: Target,
        route_key: str,
        payload: Any = ...,
        *,
        timeout: float = ...,
        payload_type: PayloadType = ...,
        response_type: type[Answer],
        traceparent: str = ...,
        tracestate: str = ...,
    ) -> Answer: ...

    async def call(
        self,
        target: Target,
        route_key: str,
        payload: Any = b"",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        payload_type: PayloadType = PayloadType.RPC_RELIABLE,
        response_type: type[Answer] | None = None,
        traceparent: str = "",
        tracestate: str = "",
    ) -> bytes | Answer:
        """Call an actor and wait at most ``timeout`` s for the answer.

        Returns bytes (or a ``response_type`` message). Raises the ``ActrError`` subclass
        for the failure: NotFound, Unavailable, DeadlineExceeded, HandlerError, ...
        """
        self._check_open()
        checked_key("route_key", route_key)
        lane = checked_rpc_lane(payload_type)
        deadline = deadline_after(self._loop.time(), timeout)
        actr_id, endpoint = await self._route(target, deadline)
        env = Envelope(
            REQUEST,
            route_key,
            encode_message(payload),
            request_id=self._rpc.next_request_id(),
            target=actr_id,
            payload_type=lane,
            deadline_ns=int(deadline * 1e9),
            timeout_ms=int(timeout * 1000),
            traceparent=traceparent,
            tracestate=tracestate,
        )
        try:
            response = await self._rpc.call(endpoint, env, deadline)
        except (NotFound, Unavailable):
            self._forget_discovered(actr_id)
            raise
        return decode_answer(response.payload, response_type, route_key)

    async def tell(
        self,
        target: Target,
        route_key: str,
        payload: Any = b"",
        *,
        payload_type: PayloadType = PayloadType.RPC_RELIABLE,
        timeout: float = 5.0,
    ) -> None:
        """Send a message that is never answered; returns once the transport took it."""
        self._check_open()
        checked_key("route_key", route_key)
        lane = checked_rpc_lane(payload_type)
        deadline = deadline_after(self._loop.time(), timeout)
        actr_id, endpoint = await self._route(target, deadline)
        env = Envelope(
            TELL,
            route_key,
            encode_message(payload),
            request_id=self._rpc.next_request_id(),
            target=actr_id,
            payload_type=lane,
        )
        await self._rpc.tell(endpoint, env, deadline)

    async def discover(self, actr_type: ActrType | str) -> ActrId:
        """A running instance of ``actr_type``: on the node first (round-robin; one starting
        is waited for, at most 10 s), else, on a node with ``[signaling]``, one on another
        node that signaling names (as ``ctx.discover``). NotFound if there is none,
        Unavailable if none runs."""
        self._check_open()
        self._refuse_if_gone()
        if isinstance(actr_type, str):
            actr_type = ActrType.parse(actr_type)
        return await discover_via(
            self.directory, self._rpc, actr_type, None, changed=self._next_directory_change
        )

    async def actors(self) -> list[ActorInfo]:
        """What runs on the node: one entry per actor instance, in config order."""
        self._check_open()
        return [
            ActorInfo(
                e.name,
                e.actr_id.type,
                e.actr_id,
                e.pid if e.state in LIVE_STATES else None,  # not a gone process's pid
                e.state,
                e.restarts,
            )
            for e in self.directory.entries()
        ]

    async def status(self) -> dict[str, Any]:
        """The node's status: every instance with its counters (what ``actrhost status`` shows)."""
        self._check_open()
        return await self._request(control.STATUS, ATTACH_TIMEOUT_S)

    async def shutdown_node(self) -> None:
        """Ask the supervisor to stop the node gracefully (as SIGTERM does)."""
        self._check_open()
        await self._request(control.SHUTDOWN, ATTACH_TIMEOUT_S)

    async def restart_actors(self, *names: str, timeout: float = 600.0) -> list[str]:
        """Rolling restart of the actors ``names`` (every actor when none is given): a
        fresh import of the handler modules, then each instance in turn stopped gracefully
        and started again, the next one once it runs. Returns the instances restarted
        (``["echo#0", "echo#1"]``). The node's config file is read again first: the
        restarted actors' own tables may have changed (docs/node.md, "Supervision"); an
        edit that the gateway was built from (``[webrtc]``, an actor's ``acl``) restarts
        it too, last (``"gateway"`` ends the list).
        Raises ``NotFound`` for an unknown name, ``Unavailable`` while another restart
        runs, ``BadRequest`` for a config that does not check or an edit a restart cannot
        apply, ``HandlerError`` when the modules do not import (in each case nothing is
        restarted) or an instance does not come back (the rest not restarted)."""
        return await self._restart(timeout, actors=list(names))

    async def restart_gateway(self, timeout: float = 600.0) -> None:
        """Restart the node's gateway only: a graceful stop and a new gateway that reads
        the node's config file again, to apply edited ``[webrtc]`` settings (new TURN
        credentials, say) or ``[signaling] ca_file``, and the ``.proto`` files again. Its
        actors keep running and keep their ids; calls to and from other nodes fail with
        ``Unavailable`` until it has registered again and the links are made again.
        Raises ``BadRequest`` on a node without a gateway or for a config edit that only a
        restart of actors (or of the node) applies, ``Unavailable`` while another
        restart runs, ``ActrError`` (500) when the new gateway does not register."""
        await self._restart(timeout, gateway_only=True)

    async def _restart(self, timeout: float, **fields: Any) -> list[str]:
        self._check_open()
        try:
            answer = await self._request(control.RESTART, timeout, **fields)
        except Unavailable:
            if self._node_gone is not None:
                raise
            # The node is there (it answered the attach): the restart takes longer.
            raise DeadlineExceeded(
                f"the restart did not finish within {timeout:g} s; it goes on in the node "
                "(`actrhost status` shows where it is, the node's log what it did)"
            ) from None
        if "error" in answer:
            raise error_from_code(int(answer.get("code", 500)), str(answer["error"]))
        return [str(label) for label in answer.get("restarted", [])]
