"""The forkserver: one process per node that has imported everything a worker needs, and
forks a worker on each request from the supervisor.

A worker started with ``python -m actrhost.workers`` spends ≈ 0.2 s of CPU importing
actrhost, ZeroMQ, protobuf and its handler module before it runs any actor code; forked
from here it starts in a few milliseconds with all of that in place (docs/node.md,
"Starting workers"). The supervisor talks to it over one ``SOCK_SEQPACKET`` socket, one
JSON message per request and per answer (``_worker_start.py`` is the other end).

Each worker is forked twice, and the middle process exits at once: the worker is then
orphaned and becomes the child of the supervisor, which is a child subreaper. So the
supervisor reaps its workers and reads their exit codes as if it had started them, a
worker's ``getppid()`` is the supervisor (its watchdog and ``PR_SET_PDEATHSIG`` work as
with spawned workers), and a forkserver that dies takes no worker with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from setproctitle import setproctitle

from .._config import load_node_config, resolve_handler
from .._linux import set_parent_death_signal, supervisor_gone
from .._rundir import remove_orphaned_run_dir
from ._process import WorkerSpec, configure_logging, lead_a_process_group, main

log = logging.getLogger(__name__)

#: Largest request (a WorkerSpec as JSON is a few hundred bytes).
MAX_MESSAGE_BYTES = 65536
#: How long a forked worker waits to be reparented to the supervisor.
REPARENT_TIMEOUT_S = 5.0


def serve_from_argv(args: list[str]) -> int:
    """``python -m actrhost.workers forkserver FD CONFIG SUPERVISOR_PID [CONTROL]``.

    With CONTROL (the supervisor's control endpoint), a forkserver whose supervisor died
    removes what it left in the run dir, as its workers do: before any worker runs
    (a supervisor killed while starting the node) nobody else would.
    """
    fd, config_path, supervisor_pid = int(args[0]), args[1], int(args[2])
    control = args[3] if len(args) > 3 else ""
    # Ctrl-C (and a closed terminal's SIGHUP) reaches the whole process group; the
    # supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    forkserver = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        # The supervisor's death ends us through `finally`; so did a SIGTERM to the
        # node's group, which the supervisor takes as its stop, and which killed us in
        # the middle of a fork at start (QA): while it lives, it decides. A process just
        # forked, not yet in a group of its own, has this handler too: not its own.
        if os.getpid() == forkserver and supervisor_gone(supervisor_pid):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise SystemExit(1)

    signal.signal(signal.SIGTERM, on_sigterm)
    set_parent_death_signal(signal.SIGTERM)
    try:
        return _start(fd, config_path, supervisor_pid)
    finally:
        # Once: a second SIGTERM (the group's, then the death signal) must not interrupt
        # this, nor the interpreter's exit ("Exception ignored in atexit callback").
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if control and supervisor_gone(supervisor_pid):
            remove_orphaned_run_dir(control, supervisor_pid)


def _start(fd: int, config_path: str, supervisor_pid: int) -> int:
    logging.basicConfig(
        level=os.environ.get("ACTRHOST_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-7s forkserver[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    channel = socket.socket(fileno=fd)
    if supervisor_gone(supervisor_pid):
        return 1
    try:
        config = load_node_config(config_path)
        setproctitle(f"actrhost forkserver ({config.node.name})")
        for actor in config.actors:
            resolve_handler(config, actor)
    except Exception as exc:  # the supervisor falls back to spawning, and says why
        _send(channel, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _warn_about_threads()
    try:
        _send(channel, {"ready": True})
    except OSError:
        return 1  # the supervisor gave up on starting the node meanwhile: nothing to serve
    return _serve(channel, supervisor_pid)


def _warn_about_threads() -> None:
    """A thread started by a module's top-level code exists in the forkserver only: a
    fork copies the calling thread alone. Say so once, naming the threads."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        log.warning(
            "handler modules started %d thread(s) when imported (%s): forked workers do not "
            'have them; start them in on_start, or set [node] start_method = "spawn"',
            len(others),
            ", ".join(others),
        )


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.send(json.dumps(message).encode())


def _serve(channel: socket.socket, supervisor_pid: int) -> int:
    while True:
        try:
            data = channel.recv(MAX_MESSAGE_BYTES)
        except InterruptedError:
            continue
        if not data:
            return 0  # the supervisor closed its end: the node is stopping
        request = json.loads(data)
        spec = WorkerSpec(**request["spec"])
        try:
            pid = _fork_worker(channel, spec, request["log_level"], supervisor_pid)
        except OSError as exc:
            _send(channel, {"error": f"fork failed: {exc}"})
            continue
        _send(channel, {"pid": pid})


def _fork_worker(channel: socket.socket, spec: WorkerSpec, level: str, supervisor: int) -> int:
    """Fork a worker through a middle process; return the worker's pid once the middle
    process is reaped (by then the worker is the supervisor's child)."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            os.close(read_end)
            worker = os.fork()
            if worker == 0:
                lead_a_process_group()  # first: the node's group's signals are not its own
                os.close(write_end)
                channel.close()
                _run_worker(spec, level, supervisor)  # never returns
            with contextlib.suppress(OSError):  # and here too, whichever runs first
                os.setpgid(worker, worker)
            os.write(write_end, str(worker).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
    finally:
        os.waitpid(middle, 0)
    if not answer:
        raise OSError("the middle process could not fork the worker")
    return int(answer)


def _run_worker(spec: WorkerSpec, level: str, supervisor: int) -> None:
    code = 1
    sys.argv[1:] = []  # the forkserver's arguments mean nothing to an actor
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver's are not ours
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        configure_logging(spec, level)
        # PR_SET_PDEATHSIG is relative to the parent: set it (in main) once the
        # supervisor is the parent, not the middle process, whose exit would fire it.
        deadline = time.monotonic() + REPARENT_TIMEOUT_S
        while os.getppid() != supervisor:
            if supervisor_gone_or_late(supervisor, deadline):
                log.error("%s#%d: not reparented to the supervisor", spec.actor_name, spec.index)
                return
            time.sleep(0.0002)
        code = main(spec)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("%s#%d: worker failed", spec.actor_name, spec.index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def supervisor_gone_or_late(supervisor: int, deadline: float) -> bool:
    """True if waiting for reparenting is pointless: the supervisor is gone, or the
    middle process has not exited in time."""
    return not os.path.exists(f"/proc/{supervisor}") or time.monotonic() > deadline


def spec_message(spec: WorkerSpec, level: str) -> bytes:
    """The request that asks the forkserver for one worker."""
    return json.dumps({"spec": asdict(spec), "log_level": level}).encode()
