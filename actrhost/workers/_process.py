"""The worker process around a :class:`~._worker.Worker`: what the supervisor tells it at
spawn (:class:`WorkerSpec`), its logging, and its entry point (:func:`main`), run by
``python -m actrhost.workers`` or in a child of the forkserver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import zmq
from setproctitle import setproctitle

from .. import _control as control
from .._config import load_node_config, resolve_handler
from .._directory import ActorState
from .._errors import ConfigError
from .._linux import set_parent_death_signal, supervisor_gone
from .._loop_watch import watched_event_loop
from ._orphan_guard import guard_against_a_blocked_loop
from ._worker import Worker

log = logging.getLogger(__name__)

#: The environment variable carrying the JSON :class:`WorkerSpec`.
SPEC_ENV = "ACTRHOST_WORKER_SPEC"


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells a worker at spawn (JSON in an environment variable)."""

    config_path: str
    actor_name: str
    index: int
    serial: int
    endpoint: str
    control_endpoint: str
    supervisor_pid: int
    shm_prefix: str
    #: How many processes of this instance (this ActrId) the supervisor started before
    #: this one: 0 for the first, which no earlier process can have read anything for.
    incarnation: int = 0


def configure_logging(spec: WorkerSpec, level: str) -> None:
    """Log to stderr, each line naming the instance and its pid."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)-7s {spec.actor_name}#{spec.index}[%(process)d] "
        "%(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # a forked worker drops the forkserver's configuration
    )


def lead_a_process_group() -> None:
    """Put this worker in a process group of its own, which what its actor starts joins:
    when the worker ends, they are found and end too (``end_group_members``; they
    outlived it, piling up across restarts and outliving a killed supervisor: QA).

    A group other than the terminal's foreground one may not write to the terminal under
    ``stty tostop`` (SIGTTOU stopped a worker at its first log line, QA): ignored, the
    write goes through, for the actor's children too (exec keeps an ignored signal).
    """
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # (a session leader cannot; then they stay)
        os.setpgid(0, 0)


def tell_the_supervisor_the_start_failed(spec: WorkerSpec, why: str) -> None:
    """Say ``why`` to the supervisor as a failed start, before there is a Worker to say
    it: a worker restarted after its handler module broke showed "exit code 1" in
    ``status`` (QA), the SyntaxError only in the log."""
    with zmq.Context() as zctx, zctx.socket(zmq.DEALER) as control_socket:
        control_socket.setsockopt(zmq.LINGER, 1000)  # sent before the process exits
        control_socket.setsockopt(
            zmq.ROUTING_ID, control.worker_routing_id(spec.serial, os.getpid())
        )
        control_socket.connect(spec.control_endpoint)
        control_socket.send(
            control.encode({"op": control.HELLO, "serial": spec.serial, "pid": os.getpid()})
        )
        failed = {"op": control.STATE, "state": ActorState.FAILED.value, "error": why}
        control_socket.send(control.encode(failed))


def _end_what_the_actor_left() -> None:
    """SIGTERM the rest of this worker's process group: what its actor started and left
    running. The supervisor does so too once it has seen the exit (and SIGKILLs what
    stays); a supervisor killed at that moment (one SIGKILLed during its stop, QA) never
    would, and they ran on for good."""
    if os.getpgrp() != os.getpid():
        return  # not leading a group of its own (it could not make one): not ours to end
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpid(), signal.SIGTERM)


def _ignore(signum: int, frame: object) -> None:
    """A signal handler that does nothing (see main)."""


def main(spec: WorkerSpec) -> int:
    """Entry of a worker process; returns its exit code."""
    # Ctrl-C reaches the whole process group; only the supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Leading a group of its own, a worker gets SIGHUP from the kernel alone: when its
    # supervisor died while a process of the group was stopped (SIGCONT follows). Its
    # default killed the worker before the parent-death SIGTERM could stop it cleanly:
    # sockets, run dir and its actor's processes were left (QA). A handler, not SIG_IGN:
    # the actor's own child processes must not inherit an ignored SIGHUP.
    signal.signal(signal.SIGHUP, _ignore)
    lead_a_process_group()  # (done already when forked or spawned: no harm again)
    set_parent_death_signal(signal.SIGTERM)
    if supervisor_gone(spec.supervisor_pid):
        return 1  # the supervisor died before we could ask to be told
    guard_against_a_blocked_loop(
        spec.supervisor_pid, spec.endpoint, spec.control_endpoint, spec.shm_prefix
    )
    started = time.monotonic()
    try:
        config = load_node_config(spec.config_path)
        setproctitle(f"actrhost worker {spec.actor_name}#{spec.index} ({config.node.name})")
        actor_class = resolve_handler(config, config.actor(spec.actor_name))
    except ConfigError as exc:  # the config or handler module was edited since the start
        log.error("cannot start: %s", exc)
        tell_the_supervisor_the_start_failed(spec, f"cannot start: {exc}")
        return 1

    # A SIGTERM while the supervisor lives came from outside the node (it stops workers
    # with a control message): stop gracefully, then exit by that signal, so that the
    # restart policy sees a signal, not a clean exit ("transient" restarts it).
    terminated = False

    def on_sigterm(worker: Worker) -> None:
        nonlocal terminated
        orphaned = supervisor_gone(spec.supervisor_pid)
        terminated = terminated or not orphaned
        worker.request_stop(orphaned=orphaned)

    async def amain() -> int:
        worker = Worker(spec, config, actor_class)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, on_sigterm, worker)
        log.debug("%r: set up in %.0f ms", worker, (time.monotonic() - started) * 1000)
        return await worker.run()

    # A loop whose watch needs no ticks: an idle worker sleeps (_loop_watch.py).
    with asyncio.Runner(loop_factory=watched_event_loop) as runner:
        code = runner.run(amain())
    _end_what_the_actor_left()
    if terminated and code == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    return code
