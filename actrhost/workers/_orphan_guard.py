"""A worker whose supervisor died: what it ends on its way out, and the last resort when
its event loop is blocked.

Nobody else is left to end what its actor started and left running (its process group,
``workers/_process.py``): :func:`end_what_the_actor_left` does, as the worker exits.

A worker stops by itself when its supervisor dies: ``PR_SET_PDEATHSIG`` sends it a
SIGTERM and its loop polls ``getppid()`` (``Worker._watch_parent``). Both need the loop
to turn. A handler that blocks it (``time.sleep(3000)``, a socket read without a
timeout) kept the worker, its socket file and the run dir for as long as it blocked,
with nothing left to end it: a live supervisor would have killed it after the grace.

So a thread of the worker waits for the supervisor's death (a pidfd, no wake-ups
meanwhile) and gives the loop :data:`STUCK_AFTER_S` to finish its own orderly exit.
Should the process still run then, the thread removes what the loop would have removed
(the actor's processes, the rings this process wrote or read, its socket file, and the
run dir if it is the last one out) and ends the process.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from pathlib import Path

from .._linux import end_group_members, process_gone
from .._rundir import remove_orphaned_run_dir, taken_over
from .._streams import unlink_rings_of_process

log = logging.getLogger(__name__)

#: From the supervisor's death to the end of a worker whose loop did not exit meanwhile.
#: The orderly exit of an orphan takes ≈ 1 s at the most: its running handlers and
#: ``on_stop`` get 0.5 s each (``ORPHAN_GRACE_S``).
STUCK_AFTER_S = 3.0
#: From SIGTERM to SIGKILL of the processes an orphaned worker's actor left running.
ACTOR_PROCESS_GRACE_S = 0.5


def guard_against_a_blocked_loop(
    supervisor_pid: int, endpoint: str, control_endpoint: str, shm_prefix: str
) -> None:
    """Start the thread that ends this worker ``STUCK_AFTER_S`` after its supervisor died,
    unless it exited by then. ``endpoint``: the worker's own ipc socket."""
    thread = threading.Thread(
        target=_watch,
        args=(supervisor_pid, endpoint, control_endpoint, shm_prefix),
        name="actrhost-orphan-guard",
        daemon=True,  # a worker that exits does not wait for it
    )
    thread.start()


def _watch(supervisor_pid: int, endpoint: str, control_endpoint: str, shm_prefix: str) -> None:
    _wait_for_death(supervisor_pid)
    time.sleep(STUCK_AFTER_S)
    log.error(
        "supervisor %d died %g s ago and this worker's event loop has not exited "
        "(blocked by a handler?): ending it now",
        supervisor_pid,
        STUCK_AFTER_S,
    )
    try:
        end_what_the_actor_left(supervisor_pid)
        unlink_rings_of_process(shm_prefix, os.getpid())
        own_socket = Path(endpoint.removeprefix("ipc://"))
        if not taken_over(own_socket.parent, supervisor_pid):
            own_socket.unlink(missing_ok=True)
        remove_orphaned_run_dir(control_endpoint, supervisor_pid)
    finally:
        logging.shutdown()
        os._exit(1)


def end_what_the_actor_left(supervisor_pid: int) -> None:
    """The processes this worker's actor started and left running (its process group)
    end with it when nobody else is left to end them: its supervisor died."""
    ended = end_group_members(os.getpid(), ACTOR_PROCESS_GRACE_S, spare=os.getpid())
    if ended:
        log.warning(
            "supervisor %d is gone: ended %d process(es) the actor left running: %s",
            supervisor_pid,
            len(ended),
            ended,
        )


def _wait_for_death(pid: int) -> None:
    """Return once the process ``pid`` is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfds (Linux < 5.3): look now and then
        while not process_gone(pid):
            time.sleep(1.0)
        return
    try:
        select.select([pidfd], [], [])  # readable once the process exited
    finally:
        os.close(pidfd)
