"""The supervisor: starts one worker per actor instance, keeps the directory, restarts.

It is never on the data path: workers talk to each other directly. What passes through
here is the control protocol (``_control``): hellos, state changes, directory snapshots,
status requests from Shell clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import zmq

from . import _control as control
from . import _rundir as rundir
from ._config import Config
from ._directory import LIVE_STATES, ActorState
from ._directory_feed import DirectoryFeed
from ._errors import ConfigError
from ._gateway_process import GatewayProcess
from ._ids import ActrId, Realm
from ._linux import process_gone
from ._metrics import MetricsServer
from ._node_status import collect_status
from ._ring_readers import shell_gone
from ._rolling_restart import rolling_restart
from ._slot import KILL_AFTER_S, RestartRefused, Slot, describe_exit, stop_limit_s
from ._streams import rings_of_gone_writers, unlink_rings_of
from ._supervisor_control import ControlHandlers
from ._supervisor_servers import start_metrics, start_signaling
from ._worker_start import (
    ForkServer,
    ForkServerUnusable,
    WorkerProcess,
    become_subreaper,
    end_adopted_processes,
    end_what_a_crashed_node_left,
    end_what_an_actor_left,
    reap_orphans,
    spawn_worker,
    wait_or_kill,
)
from ._zmqloop import LoopSocket
from .shm import node_segment_prefix, unlink_prefix
from .workers._process import WorkerSpec

log = logging.getLogger(__name__)

#: How often the sockets of Shells that are gone, and rings whose writer is gone, are
#: looked for (``_sweep_after_gone_writers``).
SHELL_RING_SWEEP_S = 2.0
#: How often the process of ``STOP_WITH_ENV`` is looked at.
STOP_WITH_POLL_S = 0.5
#: How long a ring whose writer is gone is kept for a reader that runs and has not mapped
#: it: its descriptors may wait in that reader's socket behind a backlog.
WRITER_GONE_GRACE_S = 10.0
#: A second stop request this soon after the first is the same one delivered twice (a
#: wrapper such as `timeout` forwards the terminal's Ctrl-C to the process group that
#: got it already), not a second Ctrl-C: the workers kept no grace at all (QA).
SAME_REQUEST_S = 0.3
#: Instances started at once at node start (see Supervisor._spawn_all).
SPAWNS_AT_ONCE = 8


class Supervisor(ControlHandlers):
    """Runs one node until SIGINT/SIGTERM or a Shell's shutdown request."""

    def __init__(self, config: Config, run_dir: Path | None = None) -> None:
        self.config = config
        self.run_dir = run_dir or rundir.run_dir_for(config)
        self.shm_prefix = rundir.node_prefix(self.run_dir)
        self._slots: list[Slot] = []
        self._by_serial: dict[int, Slot] = {}
        self._shells: dict[bytes, dict[str, Any]] = {}
        self._stats_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_req = 0
        self._shutdown = asyncio.Event()
        self._hurry = asyncio.Event()  # a second SIGINT/SIGTERM while stopping: kill now
        self._shutdown_asked_at = 0.0  # time.monotonic() of the first stop request
        self._stopping = False
        self._ready_logged = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.segments_reclaimed = 0
        self.malformed_control = 0  # messages on the control socket that did not decode
        self.gateway: GatewayProcess | None = None
        self._forkserver: ForkServer | None = None
        self._metrics: MetricsServer | None = None
        self._subreaper = False  # we adopt orphaned descendants (and must reap them)
        self._spawning = 0  # worker processes started, not yet in their slots
        self._state_changed = asyncio.Event()  # set, then replaced, at every state change
        self._restarting = False  # a rolling restart is under way
        self._checking_config = False  # a rolling restart starts children the reaper must leave
        # Random serial base: ids from two nodes (or two runs) do not collide.
        base = secrets.randbits(40) << 8
        for actor in config.actors:
            for index in range(actor.instances):
                serial = base + len(self._slots) + 1
                slot = Slot(
                    actor,
                    index,
                    ActrId(Realm(config.node.realm), serial, actor.type),
                    f"ipc://{self.run_dir / f'a-{serial:x}.sock'}",
                )
                self._slots.append(slot)
                self._by_serial[serial] = slot

    # -- life cycle --------------------------------------------------------------------

    async def run(self) -> int:
        """Start every worker and serve until shutdown; return the exit code."""
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        if self.config.node.run_dir is None:
            # A node of this file whose [node] name was edited since runs in a run dir of
            # that name: refused as well (two nodes ran from one file: QA).
            other = rundir.live_run_dir_of_file(self.config.path)
            if other is not None and other != self.run_dir:
                raise rundir.NodeAlreadyRunning(
                    f"a node started from this config runs in {other} ([node] name edited "
                    "since it started?)"
                )
        # Before the run dir is made: a stop asked for at once (Ctrl-C, a test ending)
        # killed the supervisor outright, and left the run dir (QA).
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_shutdown)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # (as under nohup)
            # A closed terminal: an orderly stop, as Ctrl-C (it killed the supervisor
            # outright, and its workers took the orphan's way out: QA).
            loop.add_signal_handler(signal.SIGHUP, self.request_shutdown)
        # Locked for as long as this process lives: a second node of this config refused.
        self._run_dir_lock, left_by_a_crash = rundir.prepare(self.run_dir)
        if left_by_a_crash:
            await end_what_a_crashed_node_left(self.run_dir)
        rundir.write_config_snapshot(self.run_dir, self.config.text)
        leftovers = unlink_prefix(node_segment_prefix(self.shm_prefix))
        self.segments_reclaimed += leftovers
        if leftovers:
            log.warning("removed %d shared-memory segment(s) a crashed node left", leftovers)
        self._zctx = zmq.Context()
        sock = self._zctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind(rundir.control_endpoint(self.run_dir))
        self._control = LoopSocket(sock, self._on_control, "supervisor control")
        # A Shell's status asked before the servers below are up waits for them, rather
        # than hearing of no metrics endpoint (a test saw it once).
        self._control.pause_reading()
        self._feed = DirectoryFeed(self.snapshot, self._directory_recipients, self._send_frame)
        async with contextlib.AsyncExitStack() as stack:
            try:
                listen = self.config.node.metrics_listen
                if listen is not None:
                    # First: an address in use fails the node before any process starts.
                    self._metrics = await start_metrics(
                        stack, self.config, listen, self.collect_status, self._health_snapshot
                    )
                signaling_url = None
                if self.config.signaling is not None:
                    signaling_url = await start_signaling(stack, self.config)
                self._control.resume_reading()
                # In both start methods: what an actor leaves running in a session of its
                # own is adopted, reaped, and ended at the stop (with spawn, it outlived
                # the node: QA).
                self._subreaper = become_subreaper()
                if self._subreaper:
                    loop.add_signal_handler(signal.SIGCHLD, self._reap_orphans)
                forkserver_ready = self._start_forkserver()
                log.info(
                    "node %r: starting %d actor instance(s) in %s",
                    self.config.node.name,
                    len(self._slots),
                    self.run_dir,
                )
                if signaling_url is not None:
                    await self._start_gateway(signaling_url)
                await forkserver_ready
                self._spawn_task(self._sweep_after_gone_writers())
                self._spawn_task(self._stop_with(os.environ.get(rundir.STOP_WITH_ENV, "")))
                await self._spawn_all()
                await self._shutdown.wait()
                await self._stop_all()
            except RuntimeError as exc:
                log.error("node %r: %s", self.config.node.name, exc)
                await self._stop_all()
                return 1
            except ConfigError:  # the CLI says it as any config error (exit code 2)
                await self._stop_all()
                raise
            finally:
                self._cleanup(loop)
        log.info("node %r: stopped", self.config.node.name)
        return 0

    def _start_forkserver(self) -> asyncio.Future[None]:
        """Start the forkserver (beside the gateway's start); the future is done once it
        is ready, or has failed and workers will be spawned instead."""
        if self.config.node.start_method != "forkserver":
            return asyncio.ensure_future(asyncio.sleep(0))
        if not self._subreaper:
            log.info("this system cannot adopt forked workers: spawning them instead")
            return asyncio.ensure_future(asyncio.sleep(0))
        self._forkserver = ForkServer(
            self.config, self._reap_orphans, rundir.control_endpoint(self.run_dir)
        )

        async def start(forkserver: ForkServer) -> None:
            try:
                await forkserver.start()
            except OSError as exc:
                log.warning("%s: spawning workers instead", exc)
                self._forkserver = None

        return asyncio.ensure_future(start(self._forkserver))

    def _reap_orphans(self) -> None:
        """As a subreaper we inherit every orphaned descendant (say, a process an actor
        started and then left behind when it died): reap them, or they stay zombies."""
        forkserver = self._forkserver
        if (
            not self._subreaper
            or self._checking_config
            or self._spawning
            or (forkserver is not None and forkserver.forking)
        ):
            # A worker forked or spawned just now may not be known yet (its exit status
            # is its watcher's): the next pass reaps.
            return
        ours = {
            s.process.pid
            for s in self._slots
            if s.process is not None and s.process.returncode is None
        }
        if forkserver is not None:
            ours |= forkserver.pids
        if self.gateway is not None and self.gateway.live_pid is not None:
            ours.add(self.gateway.live_pid)
        reaped = reap_orphans(ours)
        if reaped:
            log.debug("reaped %d orphaned process(es)", reaped)

    async def _start_gateway(self, url: str) -> None:
        """The gateway, which registers every instance with signaling at ``url``; the ids
        signaling assigns become the instances' ActrIds."""
        self.gateway = GatewayProcess(
            self.config,
            self.run_dir,
            rundir.control_endpoint(self.run_dir),
            [(s.config.name, s.index, str(s.config.type)) for s in self._slots],
            self._send,
            self._broadcast,
        )
        ids = await self.gateway.start(url)
        self._by_serial.clear()
        for slot in self._slots:
            actr_id = ids.get((slot.config.name, slot.index))
            if actr_id is None:
                raise RuntimeError(f"signaling gave no id to {slot.label}")
            slot.actr_id = actr_id
            slot.endpoint = f"ipc://{self.run_dir / f'a-{actr_id.serial_number:x}.sock'}"
            self._by_serial[actr_id.serial_number] = slot

    def _cleanup(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            loop.remove_signal_handler(sig)
        self._control.close()
        self._zctx.term()
        unlink_prefix(node_segment_prefix(self.shm_prefix))
        rundir.remove(self.run_dir)
        os.close(self._run_dir_lock)  # after the removal: the next node starts afresh

    def request_shutdown(self, *, escalate: bool = True) -> None:
        """Begin a graceful shutdown; asked again by a signal (a second Ctrl-C), stop
        waiting for workers to finish and kill those still running. ``escalate=False``
        (``actrhost stop``, ``shell.shutdown_node()``): a request again only waits (a
        script's second ``stop`` killed the handlers in flight and skipped their
        ``on_stop``, QA)."""
        now = time.monotonic()
        if self.gateway is not None:
            self.gateway.node_stopping = True
        if not self._shutdown.is_set():
            log.info("node %r: shutting down", self.config.node.name)
            self._shutdown_asked_at = now
            # From now on: an exit is not restarted, nor a spawn started. The stop proper
            # (_stop_all) may come after the starts under way; a worker restarted
            # meanwhile was never told to stop, and killed after the grace (QA).
            self._stopping = True
        elif not escalate:
            log.info("node %r: asked to stop again: it is stopping", self.config.node.name)
        elif now - self._shutdown_asked_at < SAME_REQUEST_S:
            log.debug("node %r: the stop request came twice at once", self.config.node.name)
        elif not self._hurry.is_set():  # also before the stop began (still starting)
            log.warning(
                "node %r: asked again: killing workers still running", self.config.node.name
            )
            self._hurry.set()
        self._shutdown.set()

    async def _sweep_after_gone_writers(self) -> None:
        """Shells come and go unannounced (SIGKILL, SIGTERM): remove the socket files they
        left. Remove the rings of writers that are gone (Shells, workers) which their
        readers did not map: at once when the reader is gone too, else once
        WRITER_GONE_GRACE_S has passed (their descriptors may still wait in the reader's
        socket: it maps the ring, and removes the name, when it reads them)."""
        first_seen: dict[str, float] = {}
        while True:
            await asyncio.sleep(SHELL_RING_SWEEP_S)
            for path in self.run_dir.glob("s*.sock"):
                if shell_gone(path.stem):
                    path.unlink(missing_ok=True)
            for routing_id, shell in list(self._shells.items()):
                if shell_gone(Path(shell["endpoint"].removeprefix("ipc://")).stem):
                    self._forget_shell(routing_id)  # its routes too: callers get 404
            now = time.monotonic()
            gone = rings_of_gone_writers(self.shm_prefix)
            first_seen = {name: first_seen.get(name, now) for name in gone}
            for name, read_later in gone.items():
                if read_later and now - first_seen[name] < WRITER_GONE_GRACE_S:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/dev/shm/{name}")
                    self.segments_reclaimed += 1

    async def _stop_with(self, pid_text: str) -> None:
        """Stop the node as Ctrl-C would once process ``pid_text`` (``STOP_WITH_ENV``,
        when set) is gone: a test that started the node died without stopping it."""
        if not pid_text.isdigit():
            return
        pid = int(pid_text)
        while not process_gone(pid):
            await asyncio.sleep(STOP_WITH_POLL_S)
        log.warning("node %r: process %d, which it stops with, is gone", self.config.node.name, pid)
        self.request_shutdown(escalate=False)

    async def _spawn_all(self) -> None:
        """Start every instance, a few at a time, until a shutdown is asked for: a node of
        hundreds of instances told to stop while starting stops starting them."""
        starting = asyncio.Semaphore(SPAWNS_AT_ONCE)

        async def spawn(slot: Slot) -> None:
            async with starting:
                if not self._shutdown.is_set():
                    await self._spawn(slot)

        await asyncio.gather(*(spawn(slot) for slot in self._slots))

    async def _spawn(self, slot: Slot) -> None:
        if self._stopping:
            return
        spec = WorkerSpec(
            config_path=str(self.config.path),
            actor_name=slot.config.name,
            index=slot.index,
            serial=slot.actr_id.serial_number,
            endpoint=slot.endpoint,
            control_endpoint=rundir.control_endpoint(self.run_dir),
            supervisor_pid=os.getpid(),
            shm_prefix=self.shm_prefix,
            incarnation=slot.spawned,
        )
        slot.spawned += 1
        slot.routing_id = None
        slot.pid = None  # the predecessor's showed as `starting` while a fork waited (QA)
        slot.error = ""
        slot.given_up = False
        self._set_state(slot, ActorState.STARTING)
        self._spawning += 1  # until slot.process knows it (_reap_orphans; no await between)
        try:
            process = await self._start_process(spec)
        except Exception as exc:  # no process (fork or exec failed): as a crash at start
            why = f"could not start its process: {exc}"
            log.error("%s %s", slot.label, why)
            slot.process, slot.pid, slot.error = None, None, why
            self._set_state(slot, ActorState.DEAD)
            self._spawn_task(self._after_exit(slot, clean=False, exit_text=why))
            return
        finally:
            self._spawning -= 1
        slot.process = process
        slot.pid = process.pid
        self._spawn_task(self._watch(slot, process))

    async def _start_process(self, spec: WorkerSpec) -> WorkerProcess:
        forkserver = self._forkserver
        if forkserver is not None:
            try:
                return await forkserver.spawn(spec)
            except ForkServerUnusable as exc:
                # Several restarts may find it so at once: the first one retires it.
                if self._forkserver is forkserver:
                    log.warning("forkserver: %s; spawning workers instead", exc)
                    self._forkserver = None
                    await forkserver.close()
            except OSError as exc:  # this fork failed; the next is tried again
                log.warning("forkserver: %s; spawning %s#%d", exc, spec.actor_name, spec.index)
        return await spawn_worker(self.config, spec)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, slot: Slot, process: WorkerProcess) -> None:
        code = await process.wait()  # also reaps: no zombie looks alive
        self.segments_reclaimed += unlink_rings_of(self.shm_prefix, slot.actr_id.serial_number)
        if not self._stopping:  # at the node's stop, end_adopted_processes ends them all
            self._spawn_task(end_what_an_actor_left(process.pid, slot.label))
        # Exit code 0 is a normal exit (what "transient" does not restart), whether the
        # actor was told to stop or its code called sys.exit(0).
        clean = code == 0
        if clean or (self._stopping and code == -signal.SIGTERM):
            # SIGTERM while stopping is our stop of a worker that was still starting.
            if not self._stopping and not slot.restart_requested:
                # Nobody of ours asked: a SIGTERM from outside, or the actor's sys.exit(0).
                log.warning("%s (pid %s) stopped by itself (exit code 0)", slot.label, process.pid)
            self._set_state(slot, ActorState.STOPPED)
        elif code == -signal.SIGTERM and not slot.restart_requested:
            # Stopped gracefully, asked by someone outside the node (ours would be a STOP).
            log.warning("%s (pid %s) stopped by a SIGTERM from outside", slot.label, process.pid)
            self._set_state(slot, ActorState.DEAD)
        elif self._stopping and code == -signal.SIGKILL:
            # Ours, after the "did not stop in time" (or second Ctrl-C) warning above.
            log.warning("%s (pid %s) killed at stop", slot.label, process.pid)
            self._set_state(slot, ActorState.DEAD)
        elif slot.state is not ActorState.FAILED:
            log.error("%s (pid %s) died with %s", slot.label, process.pid, describe_exit(code))
            self._set_state(slot, ActorState.DEAD)
        else:
            self._broadcast()
        await self._after_exit(slot, clean=clean, exit_text=describe_exit(code))

    def _watch_start(self, slot: Slot) -> None:
        """Bound a start by ``start_timeout_s`` even where the worker cannot: it cancels an
        ``on_start`` that awaits, but one that blocks its loop (``time.sleep``, a
        socket read, a sync ``__init__`` that never returns) stays ``starting`` for ever.
        So the worker that has not run by the limit, plus the grace its own cancellation
        gets and a margin, is killed and its start failed (the restart policy applies).

        Armed at the worker's HELLO, which can come before ``_spawn`` knows the process
        (a forkserver's answer with the pid may be read after it): the watch is for the
        spawn (``slot.spawned``), and finds its process when it fires."""
        limit_s = slot.config.start_timeout_s
        if not limit_s:
            return
        after_s = limit_s + self.config.node.shutdown_grace_s + KILL_AFTER_S
        loop = asyncio.get_running_loop()
        loop.call_later(after_s, self._end_stuck_start, slot, slot.spawned)

    def _end_stuck_start(self, slot: Slot, spawned: int) -> None:
        process = slot.process
        if (
            self._stopping
            or slot.spawned != spawned
            or process is None
            or process.returncode is not None
            or slot.state is not ActorState.STARTING
        ):
            return
        slot.error = (
            f"on_start did not return within start_timeout_s = "
            f"{slot.config.start_timeout_s:g} s and its worker did not end it (a blocked "
            "event loop, or __init__ never returned); killed"
        )
        log.error("%s (pid %s): %s", slot.label, process.pid, slot.error)
        self._set_state(slot, ActorState.FAILED)
        process.kill()  # _watch reaps it, and the restart policy applies

    async def _after_exit(self, slot: Slot, *, clean: bool, exit_text: str) -> None:
        """What the restart policy says once an instance's process is gone (or could not
        be started): start it again (after its backoff), or give up on it."""
        if self._stopping:
            return
        if slot.restart_requested:
            slot.restart_requested = False
            slot.restarts += 1
            log.info("%s: restarting (rolling restart)", slot.label)
            slot.successor = True
            await self._spawn(slot)
            return
        if slot.successor and slot.should_restart(clean):
            # The rolling restart goes back to the code before (_rolling_restart): so
            # does this start, not counted as a crash.
            slot.successor = False
            slot.restarts += 1
            log.info("%s: restarting (the rolling restart failed)", slot.label)
            await self._spawn(slot)
            return
        slot.successor = False
        if not slot.should_restart(clean):
            log.info(
                "%s exited (%s); restart policy %r: not restarted",
                slot.label,
                exit_text,
                slot.config.restart,
            )
            if not clean and not slot.error:  # `status` says why it is not running
                slot.error = f"{exit_text}, not restarted ({slot.config.restart})"
            self._give_up(slot)
            return
        delay = slot.next_restart_delay(asyncio.get_running_loop().time())
        if delay is None:
            restarts = len(slot.restart_times)
            slot.error = (
                f"gave up after {restarts} restart{'s' if restarts != 1 else ''} within "
                f"{slot.config.restart_window_s:g}s (max_restarts={slot.config.max_restarts}); "
                f"last exit: {slot.error or exit_text}"
            )
            log.error("%s: %s", slot.label, slot.error)
            self._give_up(slot)
            return
        if delay:
            await asyncio.sleep(delay)
        if not self._stopping:
            log.info("%s: restarting (restart %d)", slot.label, slot.restarts)
            await self._spawn(slot)

    async def _stop_all(self) -> None:
        self._stopping = True
        for slot in self._slots:
            if slot.state in LIVE_STATES and slot.routing_id is not None:
                self._send(slot.routing_id, {"op": control.STOP})
            elif slot.process is not None and slot.process.returncode is None:
                slot.process.terminate()  # not yet talking to us: SIGTERM is its stop
        processes = [s.process for s in self._slots if s.process is not None]
        timeout = stop_limit_s(self.config.node.shutdown_grace_s)
        await wait_or_kill(processes, timeout, self._hurry, KILL_AFTER_S)
        if self._forkserver is not None:
            await self._forkserver.close()
        if self.gateway is not None:
            await self.gateway.stop(self.config.node.shutdown_grace_s + KILL_AFTER_S)
        if self._subreaper:
            await end_adopted_processes()
        for task in list(self._tasks):
            task.cancel()

    # -- rolling restart (_rolling_restart.py) -------------------------------------------

    async def restart(self, names: list[str], *, gateway_only: bool = False) -> list[str]:
        """Rolling restart of the actors ``names`` (all when empty), or of the gateway
        only; see ``_rolling_restart``. Returns the labels restarted. Raises
        ``RestartRefused``."""
        if self._restarting or self._stopping:
            raise RestartRefused(503, "a restart is under way, or the node is stopping")
        unknown = sorted(set(names) - {s.config.name for s in self._slots})
        if unknown:
            actors = ", ".join(a.name for a in self.config.actors)
            raise RestartRefused(
                404, f"no actor named {', '.join(map(repr, unknown))} (actors: {actors})"
            )
        self._restarting = True
        try:
            return await rolling_restart(self, names, gateway_only=gateway_only)
        finally:
            self._restarting = False

    # -- state and directory -----------------------------------------------------------

    def _give_up(self, slot: Slot) -> None:
        """The instance will not be started again: say so (``actrhost wait`` stops waiting)."""
        slot.given_up = True
        if slot.state is ActorState.DEAD:
            self._set_state(slot, ActorState.FAILED)  # broadcasts
        else:  # stopped, or failed: a worker that failed in on_start said so itself
            self._broadcast()

    def _set_state(self, slot: Slot, state: ActorState) -> None:
        if slot.state is state:
            return
        log.debug("%s: %s -> %s", slot.label, slot.state.value, state.value)
        slot.state = state
        if state is ActorState.RUNNING:
            slot.successor = False
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        # An end (dead, stopped, failed) goes out at once, on its own: coalesced with the
        # restart that follows it, processes could not tell a crash (fail its pending
        # calls now) from a graceful stop (let its last answers arrive first).
        self._broadcast(now=state not in LIVE_STATES)
        if (
            not self._ready_logged
            and state is ActorState.RUNNING
            and all(s.state is ActorState.RUNNING for s in self._slots)
        ):
            self._ready_logged = True
            elapsed_ms = (asyncio.get_running_loop().time() - self._started_at) * 1000
            log.info(
                "node %r: ready, %d instance(s) of %d actor(s) running after %.0f ms",
                self.config.node.name,
                len(self._slots),
                len(self.config.actors),
                elapsed_ms,
            )

    def _health_snapshot(self) -> dict[str, Any]:
        """The directory, and whether the node is stopping (``/readyz``)."""
        return {**self.snapshot(), "stopping": self._shutdown.is_set()}

    def snapshot(self) -> dict[str, Any]:
        """The directory as the control protocol carries it."""
        return {
            "op": control.DIRECTORY,
            "node": self.config.node.name,
            "actors": [slot.entry().to_json() for slot in self._slots],
            "shells": [
                {"endpoint": s["endpoint"], "routes": s["routes"]}
                for s in self._shells.values()
                if s["routes"]
            ],
            "gateway": self.gateway.endpoint if self.gateway is not None else None,
            # Senders of large stream payloads to other nodes write them into a ring for
            # this process (docs/gateway.md): only while it runs.
            "gateway_pid": (
                self.gateway.pid
                if self.gateway is not None and self.gateway.state is ActorState.RUNNING
                else None
            ),
        }

    def _broadcast(self, *, now: bool = False) -> None:
        if not hasattr(self, "_control"):
            return
        if now:
            self._feed.publish()
        else:
            self._feed.changed()

    def _directory_recipients(self) -> list[bytes]:
        live = [
            s.routing_id for s in self._slots if s.routing_id is not None and s.state in LIVE_STATES
        ]
        gateway = self.gateway.routing_id if self.gateway is not None else None
        return [*live, *self._shells, *([gateway] if gateway is not None else [])]

    def _forget_shell(self, routing_id: bytes) -> None:
        shell = self._shells.pop(routing_id, None)
        self._feed.forget(routing_id)
        if shell is not None and shell["routes"]:
            self._broadcast()  # processes must stop sending it Dest.SHELL calls

    def _send(self, routing_id: bytes, message: dict[str, Any]) -> None:
        self._send_frame(routing_id, control.encode(message))

    def _send_frame(self, routing_id: bytes, frame: bytes) -> bool:
        try:
            self._control.send_multipart_nowait([routing_id, frame])
            return True
        except zmq.ZMQError as exc:
            if routing_id in self._shells:
                self._forget_shell(routing_id)  # it went away without detaching
            log.debug("control message to %r not delivered: %s", routing_id, exc)
            return False

    async def collect_status(self) -> dict[str, Any]:
        """The node's status (``actrhost status``, ``/metrics``): see ``_node_status``."""
        return await collect_status(self)
