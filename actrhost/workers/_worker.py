"""One worker process: hosts one actor instance, its mailbox and its sockets.

Phases (as pykka's actor loop): setup (load the actor, meet the supervisor, bind),
``on_start``, serve until told to stop, teardown (stop accepting, let in-flight handlers
finish within the grace period, answer the rest with 503, ``on_stop``, close).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from .. import _control as control
from .._actor import Actor, Route, collect_routes
from .._config import Config
from .._context import Context, decode_message
from .._directory import ActorState, Directory, gateway_feed_endpoint, take_update
from .._envelope import REQUEST, RESPONSE, Envelope, StreamFrame
from .._errors import (
    ActrError,
    ErrorCode,
    HandlerError,
    Unavailable,
    cancelled_from_outside,
    handler_failure,
    wire_code,
)
from .._ids import ActrId, Realm
from .._linux import supervisor_gone
from .._loop_watch import LoopWatch
from .._rpc import RpcEndpoint
from .._rundir import remove_orphaned_run_dir
from .._settings import build_settings
from .._stream_sender import StreamSender
from .._streams import StreamReceiver
from .._zmqloop import LoopSocket
from ._inbound import Inbound
from ._mailbox import Mailbox
from ._orphan_guard import end_what_the_actor_left
from ._outbound import Outbound
from ._route_stats import RouteStats

if TYPE_CHECKING:
    from ._process import WorkerSpec

log = logging.getLogger(__name__)

#: How long a worker waits for its supervisor's first directory before giving up.
HELLO_TIMEOUT_S = 10.0
#: How often a running worker checks that its supervisor is still alive (a fallback for
#: PR_SET_PDEATHSIG, which cannot cover the instant between fork and prctl), and how
#: often a stopping one does (it then shortens its grace).
PARENT_WATCH_S = 1.0
PARENT_CHECK_S = 0.25
#: Grace period when the supervisor vanished: nobody waits for an orderly stop.
ORPHAN_GRACE_S = 0.5
#: How long a stopping worker reads what senders still queued for it, to count it.
STOP_DRAIN_S = 0.05


def _is_request(item: Any) -> bool:
    """A queued mailbox item (envelope, routing id, …) that is a request."""
    return bool(item[0].direction == REQUEST)


@dataclass
class WorkerCounters:
    """Per-actor counters reported to ``actrhost status``."""

    calls_served: int = 0
    tells_served: int = 0
    errors: int = 0
    expired_skipped: int = 0
    denied: int = 0
    unknown_routes: int = 0
    #: Tells that arrived while the actor was stopping, or beyond what a starting actor
    #: holds until its on_start returns (mailbox_capacity).
    tells_dropped: int = 0


class Worker(Inbound, Outbound):
    """The runtime of one actor instance (also the ``_Runtime`` its contexts call; what
    reaches it goes through :class:`~._inbound.Inbound`, what they send through
    :class:`~._outbound.Outbound`)."""

    def __init__(self, spec: WorkerSpec, config: Config, actor_class: type[Actor]) -> None:
        self.spec = spec
        self.config = config
        self.actor_config = config.actor(spec.actor_name)
        self.self_id = ActrId(Realm(config.node.realm), spec.serial, self.actor_config.type)
        self.label = f"{spec.actor_name}#{spec.index}"
        # Class() in two steps, so that __init__ can read its name and settings already;
        # __init__ runs in _start, where its failure is told to the supervisor (status).
        self.actor = actor_class.__new__(actor_class)
        self.actor.actr_type = self.actor_config.type
        self.actor.name = spec.actor_name
        # Checked already when the config was loaded (resolve_handler): this cannot fail.
        self.actor.settings = build_settings(actor_class, self.actor_config.settings)
        self.routes: dict[str, Route] = collect_routes(self.actor)
        self.directory = Directory()
        self.counters = WorkerCounters()
        self.route_stats: dict[str, RouteStats] = {}
        self._route_timings = config.node.route_timings
        threshold_s = config.node.blocked_loop_warning_s
        self.loop_watch = LoopWatch(threshold_s) if threshold_s else None
        self.state = ActorState.STARTING
        self._accepting = False
        # Tells and stream frames that came while on_start ran (ones the actor sent
        # itself, say): they are handled once it returns. Calls get 503 meanwhile (a call
        # to itself would wait for its own on_start).
        self._early_tells: list[tuple[Envelope, bytes]] = []
        self._early_frames: list[StreamFrame] = []
        self._stop = asyncio.Event()
        self._orphaned = False
        self._got_directory = asyncio.Event()
        # Set, then replaced, on every directory update: what a wait for a peer holds.
        self._directory_changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._zctx = zmq.Context()
        ctl = self._zctx.socket(zmq.DEALER)
        ctl.setsockopt(zmq.LINGER, 1000)
        ctl.setsockopt(zmq.ROUTING_ID, control.worker_routing_id(spec.serial, os.getpid()))
        # Never again once the supervisor is gone: a new node's at the same path is not ours.
        ctl.setsockopt(zmq.RECONNECT_IVL, -1)
        ctl.connect(spec.control_endpoint)
        self._control = LoopSocket(ctl, self._on_control, f"{self.label} control")
        self.rpc = RpcEndpoint(
            self._zctx,
            spec.endpoint,
            self._on_request,
            hwm=config.node.hwm_messages,
            name=self.label,
            max_message_bytes=config.node.max_message_bytes,
            on_stream=self._on_stream,
            first_of_instance=spec.incarnation == 0,
        )
        # Either backlog being full stops reading the socket; both must have room again.
        self._pressure: set[str] = set()
        self.mailbox = Mailbox(
            self._serve,
            capacity=self.actor_config.mailbox_capacity,
            max_concurrency=self.actor_config.max_concurrency,
            on_full=lambda: self._set_pressure("mailbox", True),
            on_space=lambda: self._set_pressure("mailbox", False),
            poll=self._read_sockets_now,
        )
        self.streams_out = StreamSender(
            self.rpc,
            node_prefix=spec.shm_prefix,
            self_tag=f"{spec.serial:x}.{os.getpid():x}",
            threshold_bytes=config.shm.threshold_bytes,
            ring_bytes=config.shm.ring_bytes,
        )
        self.streams_in = StreamReceiver(
            node_prefix=spec.shm_prefix,
            capacity=self.actor_config.mailbox_capacity,
            on_full=lambda: self._set_pressure("streams", True),
            on_space=lambda: self._set_pressure("streams", False),
        )

    def __repr__(self) -> str:
        return f"Worker({self.label} {self.self_id})"

    def _set_pressure(self, source: str, full: bool) -> None:
        if full:
            self._pressure.add(source)
            self.rpc.pause_reading()
        else:
            self._pressure.discard(source)
            if not self._pressure:
                self.rpc.resume_reading()

    # -- life cycle --------------------------------------------------------------------

    async def run(self) -> int:
        """Run the actor until stopped; return the process exit code."""
        if self.loop_watch is not None:
            self.loop_watch.start()
        self._send_control({"op": control.HELLO, "serial": self.spec.serial, "pid": os.getpid()})
        watchdog = asyncio.ensure_future(self._watch_parent())
        try:
            # A supervisor killed before it answered leaves us a stop (its death signal),
            # not a directory: either ends the wait, and the clean-up below runs (the
            # socket files and the run dir stayed behind: seen under load).
            greeted = asyncio.ensure_future(self._got_directory.wait())
            stopped = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait(
                    {greeted, stopped}, timeout=HELLO_TIMEOUT_S, return_when=FIRST_COMPLETED
                )
            finally:
                greeted.cancel()
                stopped.cancel()
            if not self._got_directory.is_set():
                if self._stop.is_set():
                    return 0  # stopped while starting: a stop, not a failure (QA: "died")
                log.error("%r: no directory from the supervisor within %ss", self, HELLO_TIMEOUT_S)
                return 1
            if not await self._start():
                self._drop_early_frames()
                return 1 if self.state is ActorState.FAILED else 0
            self._accepting = True
            self._set_state(ActorState.RUNNING)
            early, self._early_tells = self._early_tells, []
            for env, routing_id in early:
                self._on_request(env, routing_id)
            frames, self._early_frames = self._early_frames, []
            for frame in frames:
                self._on_stream(frame)
            await self._stop.wait()
            await self._teardown()
            return 0
        finally:
            watchdog.cancel()
            if self.loop_watch is not None:
                self.loop_watch.stop()
            self._close()

    async def _start(self) -> bool:
        """Run ``__init__`` and ``on_start``; False if either failed (raised, or on_start
        did not return within the actor's ``start_timeout_s``), or if a stop came first
        and cancelled it.

        A stop (Ctrl-C at the node) must not wait for a slow ``on_start``: it is cancelled
        like a running handler, its ``finally`` blocks run, and ``on_stop`` is skipped,
        as the actor never started. Until 2026-12-02 the node waited out the grace period
        and then killed such workers, logging each as died.
        """
        try:
            self.actor.__init__()  # type: ignore[misc]
        except Exception as exc:  # status said only "exit code 1" (the reason was in the log)
            log.exception("%r: __init__ failed", self)
            self._set_state(ActorState.FAILED, f"__init__ failed: {type(exc).__name__}: {exc}")
            return False
        starting = asyncio.ensure_future(self.actor.on_start(Context(self)))
        stop = asyncio.ensure_future(self._stop.wait())
        limit_s = self.actor_config.start_timeout_s or None
        try:
            await asyncio.wait({starting, stop}, timeout=limit_s, return_when=FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not starting.done():
            stopped = self._stop.is_set()
            why = f"on_start did not return within start_timeout_s = {limit_s or 0:g} s"
            if stopped:
                log.info("%r: stopped while starting; on_start cancelled", self)
            else:  # a failed start: the restart policy decides what follows
                log.error("%r: %s; cancelled", self, why)
            starting.cancel()
            await asyncio.wait({starting}, timeout=self.config.node.shutdown_grace_s)
            if stopped:
                self._set_state(ActorState.STOPPED)
            else:
                self._set_state(ActorState.FAILED, why)
            if not starting.done():
                # It swallows its cancellation: asyncio.run would wait for it for ever.
                log.error("%r: on_start ignores its cancellation; the worker exits", self)
                self._close()
                logging.shutdown()
                os._exit(0 if stopped else 1)
            return False
        try:
            starting.result()
            return True
        except (Exception, asyncio.CancelledError) as exc:
            log.exception("%r: on_start failed", self)
            self._set_state(ActorState.FAILED, f"on_start failed: {type(exc).__name__}: {exc}")
            return False

    async def _teardown(self) -> None:
        if self._accepting:  # (else request_stop began it)
            self._begin_stop()
        grace = self.config.node.shutdown_grace_s
        if self._orphaned:
            # Stopping because the supervisor died (it took the whole grace until
            # 2026-12-03: the check below only caught a death during the stop, QA).
            grace = min(grace, ORPHAN_GRACE_S)
        deadline = self._loop.time() + grace
        while True:
            idle = await self.mailbox.wait_idle(
                min(PARENT_CHECK_S, max(0.0, deadline - self._loop.time()))
            )
            if idle and not self.streams_in.backlog and not self.streams_in.in_callback:
                break  # the last chunk's callback has returned too
            if not self._orphaned and self._parent_gone():
                # Nobody waits for an orderly stop any more: keep it short.
                self._orphaned = True
                grace = ORPHAN_GRACE_S
                deadline = min(deadline, self._loop.time() + grace)
            if self._loop.time() >= deadline:
                self._drop_at_stop(grace)
                if self.mailbox.running:
                    log.warning(
                        "%r: handlers still running after %.1fs; cancelling them", self, grace
                    )
                    self.mailbox.cancel_running()
                    await self.mailbox.wait_idle(1.0)
                break
            if idle:
                await asyncio.sleep(0.02)  # stream callbacks still at work
        try:
            await asyncio.wait_for(self.actor.on_stop(Context(self)), grace)
        except TimeoutError:
            log.warning("%r: on_stop still running after %.1fs: cancelled", self, grace)
        except asyncio.CancelledError:
            if cancelled_from_outside():
                raise
            # Its own code's: most often `task.cancel(); await task` without suppressing
            # the task's CancelledError. It skipped the rest of the stop, and every stop
            # and restart ended as "worker failed ... died with exit code 1" (QA).
            log.warning(
                "%r: on_stop raised CancelledError (awaited a task it cancelled?); the stop "
                "goes on",
                self,
            )
        except Exception:
            log.exception("%r: on_stop failed", self)
        # What senders queued for us meanwhile is read (and dropped, counted) rather than
        # left in the socket to vanish with the process: a paused socket (a full mailbox)
        # held thousands of a flood's tells, uncounted (QA).
        self.rpc.resume_reading()
        await asyncio.sleep(STOP_DRAIN_S)
        if self.counters.tells_dropped or self.streams_in.counters.not_running:
            log.info(
                "%r: stopped; dropped %d tell(s) and %d stream chunk(s) that came while it "
                "stopped (or were still queued)",
                self,
                self.counters.tells_dropped,
                self.streams_in.counters.not_running,
            )
        self._set_state(ActorState.STOPPED)

    def _drop_at_stop(self, grace: float) -> None:
        """The grace is over: what is still queued is dropped, counted and said (the
        worker's counters go with its process; the log line stays)."""
        tells = len(self.mailbox.drop_queued())
        chunks = self.streams_in.backlog + self.streams_in.in_callback
        self.counters.tells_dropped += tells
        self.streams_in.counters.not_running += chunks
        if tells or chunks:
            log.warning(
                "%r: stopping after %.1fs with %d tell(s) and %d stream chunk(s) still "
                "queued: dropped",
                self,
                grace,
                tells,
                chunks,
            )

    def _read_sockets_now(self) -> None:
        """The mailbox's poll, while handlers that never await hold the loop: the
        messages waiting for this actor, and the supervisor's (a stop waited behind
        thousands of such handlers, and the queued calls it should refuse ran, QA)."""
        self.rpc.read_now()
        self._control.read_now()

    def request_stop(self, *, orphaned: bool = False) -> None:
        """Begin a graceful stop (from the supervisor, SIGTERM, or the parent's death)."""
        self._orphaned = self._orphaned or orphaned
        self._stop.set()
        if self._accepting:
            # At once, not when the loop gets to _teardown: behind a backlog of handlers
            # that never await, that was after the whole backlog (QA).
            self._begin_stop()

    def _begin_stop(self) -> None:
        """Accept nothing more, say so, and refuse the queued requests (callers by type
        find another instance, or retry); queued tells and stream chunks are handled
        within the grace: a graceful stop handles what it accepted (a rolling restart
        dropped them uncounted, QA)."""
        self._accepting = False
        self._set_state(ActorState.STOPPING)
        for env, routing_id, *_rest in self.mailbox.drop_queued(_is_request):
            self._reply_error(env, routing_id, Unavailable(f"actor {self.self_id} is stopping"))

    def _parent_gone(self) -> bool:
        return supervisor_gone(self.spec.supervisor_pid)

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(PARENT_WATCH_S)  # (an idle worker's only wake-up)
            if self._parent_gone():
                log.warning("%r: supervisor %d is gone; stopping", self, self.spec.supervisor_pid)
                self.request_stop(orphaned=True)
                return

    def _close(self) -> None:
        # PR_SET_PDEATHSIG's SIGTERM may arrive before getppid() shows the reparenting,
        # so look again now.
        self._orphaned = self._orphaned or self._parent_gone()
        self.streams_in.close()
        self.streams_out.close()
        # A graceful stop answered every request: let those answers leave the socket.
        self.rpc.close(linger_ms=0 if self._orphaned else 1000)
        if self._orphaned:
            self._control.close(linger_ms=0)
        else:
            self._control.close(linger_ms=1000)
        self._zctx.term()
        if self._orphaned:
            log.info(
                "%r: supervisor %d is gone; removing what it left", self, self.spec.supervisor_pid
            )
            end_what_the_actor_left(self.spec.supervisor_pid)
            remove_orphaned_run_dir(self.spec.control_endpoint, self.spec.supervisor_pid)

    def _set_state(self, state: ActorState, error: str = "") -> None:
        if state == self.state:
            return
        log.debug("%r: %s -> %s", self, self.state.value, state.value)
        self.state = state
        message: dict[str, Any] = {"op": control.STATE, "state": state.value}
        if error:
            message["error"] = error
        self._send_control(message)

    # -- control -----------------------------------------------------------------------

    def _send_control(self, message: dict[str, Any]) -> None:
        try:
            self._control.send_nowait(control.encode(message))
        except zmq.ZMQError as exc:
            log.debug("%r: control message %s not sent: %s", self, message["op"], exc)

    def _on_control(self, parts: list[bytes]) -> None:
        message = control.decode(parts[-1]) if len(parts) == 1 else None
        if message is None:
            self.rpc.dropped_malformed("a malformed control message")
            return
        op = message["op"]
        if op == control.DIRECTORY:
            take_update(self.directory, message, self.rpc, self.streams_out, self.streams_in)
            if self.directory.gateway is not None:
                self.rpc.open_feed(gateway_feed_endpoint(self.spec.endpoint))
            self._got_directory.set()
            self._directory_changed.set()
            self._directory_changed = asyncio.Event()
        elif op == control.STOP:
            self.request_stop()
        elif op == control.STATS_REQUEST:
            self._send_control(
                {"op": control.STATS, "req": message.get("req"), "stats": self.stats()}
            )

    def stats(self) -> dict[str, Any]:
        """Counters for ``actrhost status``."""
        return {
            "state": self.state.value,
            "mailbox_depth": self.mailbox.depth,
            "mailbox_peak": self.mailbox.peak_depth,
            "running_handlers": self.mailbox.running,
            "pending_calls": self.rpc.pending_count,
            **vars(self.counters),
            **self.rpc.counters.as_dict(),
            "stream_backlog": self.streams_in.backlog,
            # Not there when the watch is off ([node] blocked_loop_warning_s = 0): a 0
            # would claim that nothing blocked.
            **(self.loop_watch.stats() if self.loop_watch else {}),
            "streams_in": self.streams_in.counters.as_dict(),
            "streams_out": self.streams_out.counters.as_dict(),
            "routes": {key: stats.to_dict() for key, stats in self.route_stats.items()},
        }

    # -- serving (what Inbound queued in the mailbox) ----------------------------------

    async def _serve(self, item: tuple[Envelope, bytes, Route, int]) -> None:
        env, routing_id, route, arrived_ns = item
        is_request = env.direction == REQUEST
        deadline = env.deadline_ns / 1e9 if env.deadline_ns else None
        stats = self.route_stats.get(env.route_key)
        if stats is None:
            stats = self.route_stats[env.route_key] = RouteStats(self._route_timings)
        if deadline is not None and self._loop.time() >= deadline:
            # The caller has already given up: doing the work would only waste it.
            self.counters.expired_skipped += 1
            stats.expired += 1
            return
        started_ns = time.monotonic_ns() if self._route_timings else 0
        error_code = 0
        ctx = Context(
            self,
            caller_id=env.source,
            request_id=env.request_id,
            deadline=deadline,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            metadata=env.metadata,
        )
        try:
            request = decode_message(env.payload, route.request_type)
            result = await route.handler(ctx, request)
            if is_request:
                try:
                    payload = route.encode_answer(result)
                except HandlerError as exc:  # the handler's bug: say so here too
                    log.warning("%r: handler for %r: %s", self, env.route_key, exc.message)
                    raise
                self.counters.calls_served += 1
                self.rpc.reply(
                    routing_id, Envelope(RESPONSE, payload=payload, request_id=env.request_id)
                )
            else:
                self.counters.tells_served += 1
        except asyncio.CancelledError as exc:
            if cancelled_from_outside():  # we are stopping: cancelled by us
                if is_request:
                    stopping = Unavailable(f"actor {self.self_id} is stopping")
                    self._reply_error(env, routing_id, stopping)
                raise
            # Raised by the handler's own code (a future it awaited was cancelled).
            self.counters.errors += 1
            failure = handler_failure(exc)
            error_code = int(failure.code)
            self._reply_or_log(env, routing_id, failure)
        except ActrError as exc:
            self.counters.errors += 1
            error_code = wire_code(exc) or ErrorCode.HANDLER_ERROR  # (as error_response)
            self._reply_or_log(env, routing_id, exc)
        except Exception as exc:
            self.counters.errors += 1
            log.exception("%r: handler for %r raised", self, env.route_key)
            error = handler_failure(exc)
            error_code = int(error.code)
            self._reply_or_log(env, routing_id, error)
        except (SystemExit, KeyboardInterrupt) as exc:
            # asyncio hands these to the loop's caller: the worker ends. Answered here:
            # sys.exit(0) ends it cleanly, and the caller gives the answers of a clean
            # stop half a second to come before it fails the call (QA).
            if is_request:
                ended = Unavailable(f"actor {self.self_id} ended ({exc!r}) before answering")
                self._reply_error(env, routing_id, ended)
            raise
        except BaseException as exc:
            # GeneratorExit and other BaseExceptions asyncio keeps in the task ("exception
            # was never retrieved"), and the caller waited for its deadline: they end the
            # worker as SystemExit does (docs/node.md), so its callers get 503 at once.
            log.critical("%r: handler for %r raised %r: ending", self, env.route_key, exc)
            raise SystemExit(1) from exc
        if self._route_timings:
            stats.record(
                started_ns - arrived_ns, time.monotonic_ns() - started_ns, is_request, error_code
            )
        else:
            stats.count(is_request, error_code)

    def _reply_or_log(self, env: Envelope, routing_id: bytes, error: ActrError) -> None:
        if env.direction == REQUEST:
            self._reply_error(env, routing_id, error)
        else:
            log.warning("%r: tell %r failed: %s", self, env.route_key, error)
