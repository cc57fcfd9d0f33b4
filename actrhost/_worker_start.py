"""How the supervisor starts worker processes: forked by the node's forkserver (the
default), or spawned as ``python -m actrhost.workers`` (``[node] start_method =
"spawn"``, and the fallback when the forkserver cannot run). docs/node.md, "Starting
workers", has the why and the numbers.

Both give the supervisor a :class:`WorkerProcess`: ``pid``, ``returncode``, ``wait()``,
``terminate()``, ``kill()``, as ``asyncio.subprocess.Process`` has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from ._config import CONFIG_SNAPSHOT_ENV, Config
from ._linux import (
    child_pids,
    end_group_members,
    end_processes,
    processes_with_environment,
    set_child_subreaper,
)
from ._rundir import CONFIG_SNAPSHOT, run_dir_for
from .workers._forkserver import MAX_MESSAGE_BYTES, spec_message
from .workers._process import SPEC_ENV, WorkerSpec

log = logging.getLogger(__name__)

#: How long the forkserver may take to import the handler modules.
FORKSERVER_READY_TIMEOUT_S = 30.0
#: How long one fork may take before the supervisor gives up on the forkserver.
FORK_TIMEOUT_S = 10.0


class WorkerProcess(Protocol):
    """What the supervisor needs of a worker process."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def child_environment(config: Config) -> dict[str, str]:
    """The environment of a node's child process (worker, forkserver, gateway): ours, plus
    the log level and a PYTHONPATH that imports actrhost the way we did (installed or from
    a source checkout)."""
    env = dict(os.environ)
    env["ACTRHOST_LOG_LEVEL"] = config.node.log_level
    env[CONFIG_SNAPSHOT_ENV] = str(run_dir_for(config) / CONFIG_SNAPSHOT)
    # setproctitle keeps off the environment block, so /proc/<pid>/environ still shows
    # the entry above (end_what_a_crashed_node_left): it wrote the title over it, and a
    # worker's forked child was not found (QA). Titles then fit the command line's room.
    env["SPT_NOENV"] = "1"
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


#: ``python -m actrhost.workers``, with Ctrl-C ignored from the first line on. A terminal's
#: Ctrl-C reaches the whole process group and only the supervisor decides what it means;
#: the worker's own code ignores it, but only after the imports before it, where it was a
#: KeyboardInterrupt traceback and a forkserver lost during a start or a restart (QA).
WORKERS_MAIN = (
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGTTOU, signal.SIG_IGN); import runpy; "
    "runpy.run_module('actrhost.workers', run_name='__main__', alter_sys=True)",
)


async def spawn_worker(config: Config, spec: WorkerSpec) -> WorkerProcess:
    """Start a fresh interpreter for one worker (≈ 0.2 s of CPU in imports)."""
    env = child_environment(config)
    env[SPEC_ENV] = json.dumps(asdict(spec))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *WORKERS_MAIN,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        # In a process group of its own from the first instruction (workers/_process.py):
        # the node's group's signals reached one still importing (QA: a group SIGTERM at
        # start killed it, a Ctrl-C broke its `import site`).
        process_group=0,
    )


class ForkedWorker:
    """A worker the forkserver forked, now the supervisor's child (we are its subreaper).

    A pidfd names the process for good: it becomes readable when the process exits, and
    signals sent through it can never reach another process that reused the pid.
    """

    def __init__(self, pid: int, on_exit: Callable[[], None]) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._on_exit = on_exit
        self._pidfd: int | None = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return  # not yet: the pidfd woke us early (cannot happen on Linux, but cheap)
        self._close_pidfd()
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)
        self._on_exit()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int:
        """Wait until the worker exited; its exit code (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    def _signal(self, sig: int) -> None:
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        """SIGTERM: the worker stops gracefully."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self._signal(signal.SIGKILL)


class ForkServerUnusable(OSError):
    """The forkserver cannot be started (its handlers do not import, it does not answer):
    the node spawns its workers from now on."""


class ForkServer:
    """The supervisor's end of the forkserver (``workers/_forkserver.py``).

    ``spawn()`` asks for one worker at a time (a fork takes a few milliseconds). If the
    forkserver dies it is started again at the next spawn. A fork that fails (the
    forkserver died during it, say) raises ``OSError``: the caller spawns that worker
    instead. One that cannot be started again raises :class:`ForkServerUnusable`.
    """

    def __init__(
        self, config: Config, on_worker_exit: Callable[[], None], control_endpoint: str = ""
    ) -> None:
        self._config = config
        self._on_worker_exit = on_worker_exit
        self._control_endpoint = control_endpoint  # its run dir is the forkserver's to clear
        self._process: asyncio.subprocess.Process | None = None
        self._channel: socket.socket | None = None
        self._lock = asyncio.Lock()
        self.pids: set[int] = set()  # our own processes: the forkserver and its workers
        # The forkserver before the last renew(), kept until settle() or go_back().
        self._previous: tuple[asyncio.subprocess.Process | None, socket.socket | None] | None = None
        self.forking = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The forkserver's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the forkserver and wait until it has imported every handler module."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                *WORKERS_MAIN,
                "forkserver",
                str(theirs.fileno()),
                str(self._config.path),
                str(os.getpid()),
                self._control_endpoint,
                env=child_environment(self._config),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        self.pids.add(self._process.pid)
        self.starts += 1
        try:
            answer = await self._receive(FORKSERVER_READY_TIMEOUT_S)
        except OSError:
            await self.close()
            raise
        if "error" in answer:
            await self.close()
            # (With spawn it is a throwaway forkserver: say what failed, not which process.)
            raise OSError(f"the handler modules do not import: {answer['error']}")

    async def _receive(self, timeout: float) -> dict[str, object]:
        assert self._channel is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                data = await loop.sock_recv(self._channel, MAX_MESSAGE_BYTES)
        except TimeoutError:
            raise OSError(f"the forkserver did not answer within {timeout:g}s") from None
        if not data:
            raise OSError("the forkserver exited")
        answer: dict[str, object] = json.loads(data)
        return answer

    async def spawn(self, spec: WorkerSpec) -> ForkedWorker:
        """Fork one worker; raises ``OSError`` when the forkserver cannot."""
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                if self._process is not None:
                    log.warning(
                        "the forkserver exited (%s); starting it again", self._process.returncode
                    )
                    await self.close()
                try:
                    await self.start()
                except OSError as exc:
                    raise ForkServerUnusable(str(exc)) from exc
            assert self._channel is not None
            self.forking = True
            try:
                loop = asyncio.get_running_loop()
                await loop.sock_sendall(
                    self._channel, spec_message(spec, self._config.node.log_level)
                )
                answer = await self._receive(FORK_TIMEOUT_S)
            except OSError:
                await self.close()
                raise
            finally:
                self.forking = False
            if "error" in answer:
                raise OSError(str(answer["error"]))
            pid = int(str(answer["pid"]))
            self.pids.add(pid)
            return ForkedWorker(pid, lambda: self._worker_exited(pid))

    def _worker_exited(self, pid: int) -> None:
        self.pids.discard(pid)
        self._on_worker_exit()

    async def renew(self) -> None:
        """Replace the forkserver by a fresh one, which imports the handler modules again
        from disk (``actrhost restart``). If the new code does not import, ``OSError``
        says why and the old forkserver stays. Else the old one is kept aside, with the
        code it imported, until :meth:`settle` (the restart worked: retire it) or
        :meth:`go_back` (it failed: fork from it again). Workers already forked keep
        running either way."""
        async with self._lock:
            old = self._process, self._channel
            self._process, self._channel = None, None
            try:
                await self.start()
            except OSError:
                self._process, self._channel = old
                raise
            await self.settle()
            self._previous = old

    async def settle(self) -> None:
        """Retire the forkserver kept aside by :meth:`renew`."""
        previous, self._previous = self._previous, None
        if previous is not None:
            await self._retire(*previous)

    async def go_back(self) -> bool:
        """Fork from the forkserver before the last :meth:`renew` again (the code it
        imported: a rolling restart that failed), retiring the new one. False when there
        is none, or it exited meanwhile."""
        async with self._lock:
            previous, self._previous = self._previous, None
            if previous is None or previous[0] is None or previous[0].returncode is not None:
                if previous is not None:
                    await self._retire(*previous)
                return False
            current = self._process, self._channel
            self._process, self._channel = previous
            await self._retire(*current)
            return True

    async def close(self) -> None:
        """Stop the forkserver (it exits when its socket closes) and wait for it."""
        await self.settle()
        process, channel = self._process, self._channel
        self._process, self._channel = None, None
        await self._retire(process, channel)

    async def _retire(
        self, process: asyncio.subprocess.Process | None, channel: socket.socket | None
    ) -> None:
        if channel is not None:
            channel.close()
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
            self.pids.discard(process.pid)


async def reimport_handlers(
    config: Config, forkserver: ForkServer | None, on_worker_exit: Callable[[], None]
) -> bool:
    """Import the handler modules from disk again before a rolling restart: renew the
    forkserver (True), or, when workers are spawned (they import from disk anyway), check
    with a throwaway forkserver that the handlers still import (False). Raises OSError
    when they do not, so that a broken module stops the restart before it begins."""
    if forkserver is not None:
        await forkserver.renew()
        return True
    check = ForkServer(config, on_worker_exit)
    try:
        await check.start()
    finally:
        await check.close()
    return False


def describe_worker_start(forkserver: ForkServer | None) -> dict[str, Any]:
    """How the node starts workers, for ``actrhost status``."""
    if forkserver is None:
        return {"method": "spawn", "forkserver_pid": None, "forkserver_starts": 0}
    return {
        "method": "forkserver",
        "forkserver_pid": forkserver.pid,
        "forkserver_starts": forkserver.starts,
    }


async def wait_or_kill(
    processes: list[WorkerProcess], timeout_s: float, hurry: asyncio.Event, kill_wait_s: float
) -> None:
    """Wait until every process has exited; SIGKILL those left after ``timeout_s``, or
    as soon as ``hurry`` is set (a second Ctrl-C), then wait ``kill_wait_s`` for them."""
    waits = [asyncio.ensure_future(p.wait()) for p in processes if p.returncode is None]
    if not waits:
        return
    hurried = asyncio.ensure_future(hurry.wait())
    either: list[asyncio.Future[Any]] = [asyncio.gather(*waits), hurried]
    await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    pending = [w for w in waits if not w.done()]
    if pending:
        why = "asked again" if hurry.is_set() else f"did not stop in {timeout_s:.1f}s"
        log.warning("%d worker(s) %s: killing", len(pending), why)
        for process in processes:
            if process.returncode is None:
                process.kill()
        await asyncio.wait(pending, timeout=kill_wait_s)


def reap_orphans(ours: set[int]) -> int:
    """Reap exited processes we inherited as a subreaper (descendants of our workers that
    outlived their parent); return how many. Our own children are left to their owners:
    the pass stops at the first of them, and runs again when that one has been reaped."""
    reaped = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in ours:
            return reaped
        os.waitpid(info.si_pid, os.WNOHANG)
        reaped += 1


async def end_adopted_processes(grace_s: float = 1.0) -> None:
    """At the node's stop, once its workers are gone: what actors started and left
    running (adopted by us as subreaper when their worker ended) goes with the node,
    SIGTERM first, SIGKILL ``grace_s`` later. Looked for again and again meanwhile: when
    one of them ends, its own children are adopted by us in turn."""
    ended: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace_s
        signalled: set[int] = set()
        while True:
            left = {pid for pid in child_pids() if not _reaped(pid)}
            for pid in left - signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            signalled |= left
            ended |= left
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        if not left:
            break
    if ended:
        log.warning("ended %d process(es) actors left running: %s", len(ended), sorted(ended))


async def end_what_an_actor_left(worker_pid: int, label: str, grace_s: float = 1.0) -> None:
    """Once a worker has exited: end what its actor started and left running (its
    process group, ``workers/_process.py``), SIGTERM first, SIGKILL ``grace_s`` later,
    so that they neither pile up across restarts of the instance nor outlive the node."""
    ended = await asyncio.to_thread(end_group_members, worker_pid, grace_s)
    if ended:
        log.warning("%s: ended %d process(es) its actor left running: %s", label, len(ended), ended)


def node_environment_entry(run_dir: Path) -> str:
    """The entry of :func:`child_environment` that every process of the node in
    ``run_dir`` has, and what they start inherits: ``NAME=value``."""
    return f"{CONFIG_SNAPSHOT_ENV}={run_dir / CONFIG_SNAPSHOT}"


async def end_what_a_crashed_node_left(run_dir: Path, grace_s: float = 1.0) -> None:
    """At a start that found the files of a node that died (every process of it SIGKILLed
    at once, or its supervisor during its stop): end what its actors started and left
    running, which nothing else would, SIGTERM first, SIGKILL ``grace_s`` later. They
    are known by the entry of ``child_environment`` that names this run dir, which every
    process of a node has and its children inherit (unless an actor cleared it)."""
    find = partial(processes_with_environment, node_environment_entry(run_dir))
    ended = await asyncio.to_thread(end_processes, find, grace_s)
    if ended:
        log.warning("ended %d process(es) a crashed node left running: %s", len(ended), ended)


def _reaped(pid: int) -> bool:
    """Reap ``pid`` (a child asyncio does not watch) if it exited; True when it is gone."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def become_subreaper() -> bool:
    """Set up to fork workers: True if this process can adopt them (Linux ≥ 3.4 for the
    subreaper, ≥ 5.3 for pidfds)."""
    return hasattr(os, "pidfd_open") and set_child_subreaper()
