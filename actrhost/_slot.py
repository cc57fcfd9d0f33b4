"""One actor instance as the supervisor keeps it (a *slot*: its id, endpoint, state and
current process), its restart policy and backoff, and how an exit is described."""

from __future__ import annotations

import collections
import signal
from dataclasses import dataclass, field
from typing import Any

from ._config import ActorConfig
from ._directory import ActorEntry, ActorState
from ._ids import ActrId
from ._worker_start import WorkerProcess

#: Restart delays: the first restart is immediate (serving again fast after a crash),
#: then doubling from this base up to the cap, so a crash loop cannot spin the CPU.
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0
#: Extra time after the grace period before a process that does not stop gets SIGKILL.
KILL_AFTER_S = 2.0


def stop_limit_s(shutdown_grace_s: float) -> float:
    """How long a worker told to stop may take before it is killed: its running handlers
    get the grace, then its ``on_stop`` gets it again (configs/README.md), and then
    :data:`KILL_AFTER_S` (a slow on_stop after a slow handler was killed early: QA)."""
    return 2 * shutdown_grace_s + KILL_AFTER_S


def restart_delay_s(recent_restarts: int) -> float:
    """Backoff before restart number ``recent_restarts + 1`` within the window."""
    if recent_restarts == 0:
        return 0.0
    return min(BACKOFF_BASE_S * 2 ** (recent_restarts - 1), BACKOFF_MAX_S)


@dataclass
class Slot:
    """One actor instance and the process currently hosting it."""

    config: ActorConfig
    index: int
    actr_id: ActrId
    endpoint: str
    state: ActorState = ActorState.STARTING
    pid: int | None = None
    routing_id: bytes | None = None
    restarts: int = 0
    #: Processes started for it so far (crash restarts, rolling restarts and all).
    spawned: int = 0
    restart_times: collections.deque[float] = field(default_factory=collections.deque)
    error: str = ""
    process: WorkerProcess | None = None
    restart_requested: bool = False  # stopped by a rolling restart: start it again at once
    #: Its process is a rolling restart's successor that has not run yet: if it fails
    #: to start, the restart that follows is the way back to the code before, which the
    #: restart limit does not count (a deploy refused 6 times gave up on the instance).
    successor: bool = False
    given_up: bool = False  # exited and will not be restarted (policy or restart limit)
    #: The counters its process last sent for a status request: (pid, loop time, stats).
    last_stats: tuple[int | None, float, dict[str, Any]] | None = None

    @property
    def label(self) -> str:
        return f"{self.config.name}#{self.index}"

    def should_restart(self, clean: bool) -> bool:
        """What the actor's restart policy says about an exit (``clean``: exit code 0)."""
        policy = self.config.restart
        if policy == "permanent":
            return True
        if policy == "transient":
            return not clean
        return False

    def next_restart_delay(self, now: float) -> float | None:
        """Note a restart at ``now`` and return its backoff delay, or return None (and
        note nothing) when ``max_restarts`` within ``restart_window_s`` are used up."""
        window = self.config.restart_window_s
        while self.restart_times and self.restart_times[0] < now - window:
            self.restart_times.popleft()
        if len(self.restart_times) >= self.config.max_restarts:
            return None
        delay = restart_delay_s(len(self.restart_times))
        self.restart_times.append(now)
        self.restarts += 1
        return delay

    def entry(self) -> ActorEntry:
        return ActorEntry(
            self.actr_id,
            self.config.name,
            self.index,
            self.endpoint,
            self.state,
            self.pid,
            self.restarts,
            self.given_up,
            self.restart_requested,
        )


class RestartRefused(Exception):
    """A rolling restart that could not be done, or not to the end: ``code`` is the wire
    error code the Shell raises (404 unknown actor, 503 busy, 500 failed)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describe_exit(code: int | None) -> str:
    """'exit code 1' or 'signal SIGKILL' for a process return code."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
