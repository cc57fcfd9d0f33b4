"""How workers start: forked by the node's forkserver (the default) or spawned, and what
that must not change: a worker is the supervisor's child, restarts work, a dead forkserver
takes no actor with it, nothing is left behind (docs/node.md, "Starting workers")."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import actrhost
from actrhost import _supervisor as supervisor_module
from actrhost._config import load_config
from actrhost._directory import ActorState
from actrhost._supervisor import Supervisor
from actrhost._worker_start import ForkServerUnusable
from actrhost.workers._process import WorkerSpec

from .utils import REPO, Node, children_of, pid_alive, run, wait_until

ECHO = """
[[actor]]
name = "echo"
type = "test+Echo"
handler = "actors:Echo"
instances = 3
"""


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def forkserver_of(node) -> int:
    start = node.status()["workers_start"]
    assert start["method"] == "forkserver"
    return int(start["forkserver_pid"])


def test_workers_are_forked_children_of_the_supervisor_named_in_ps(node_factory):
    node = node_factory(ECHO)
    supervisor = node.process.pid
    forkserver = forkserver_of(node)
    workers = [info.pid for info in node.actors()]
    # The middle process of the double fork is gone: the supervisor adopted its workers.
    assert set(workers) | {forkserver} == children_of(supervisor)
    assert cmdline(forkserver) == f"actrhost forkserver ({node.config.node.name})"
    for index, pid in enumerate(workers):
        assert cmdline(pid) == f"actrhost worker echo#{index} ({node.config.node.name})"


def test_a_killed_forkserver_takes_no_actor_with_it_and_comes_back_for_the_next_start(
    node_factory,
):
    node = node_factory(ECHO)
    forkserver = forkserver_of(node)
    workers = [info.pid for info in node.actors()]
    os.kill(forkserver, signal.SIGKILL)
    wait_until(lambda: not pid_alive(forkserver), 5, "the forkserver to die")
    time.sleep(0.2)
    assert [info.pid for info in node.actors()] == workers  # every actor still runs

    victim = workers[1]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> bool:
        info = node.actors()[1]
        return info.state == "running" and info.pid != victim

    wait_until(restarted, 10, "echo#1 to run again")
    start = node.status()["workers_start"]
    assert start["forkserver_starts"] == 2 and start["forkserver_pid"] != forkserver
    assert node.actors()[1].pid in children_of(node.process.pid)

    async def call() -> bytes:
        async with actrhost.connect(node.config_path) as shell:
            return await shell.call("echo", "test.Echo.Say", b"again", timeout=5)

    assert run(call()) == b"again"


def test_spawn_start_method_starts_fresh_interpreters(node_factory):
    node = node_factory(ECHO, 'start_method = "spawn"\n')
    start = node.status()["workers_start"]
    assert start == {"method": "spawn", "forkserver_pid": None, "forkserver_starts": 0}
    workers = {info.pid for info in node.actors()}
    assert workers == children_of(node.process.pid)  # no forkserver among them

    async def call() -> bytes:
        async with actrhost.connect(node.config_path) as shell:
            return await shell.call("echo", "test.Echo.Say", b"spawned", timeout=5)

    assert run(call()) == b"spawned"


def test_a_child_an_actor_left_behind_is_reaped_not_left_a_zombie(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "ex"
        type = "test+Exit"
        handler = "actors:ExitSoon"
        restart = "temporary"
        """
    )

    async def call() -> int:
        async with actrhost.connect(node.config_path) as shell:
            return int(await shell.call("ex", "test.Exit.LeavingAChild", b"0.5", timeout=5))

    orphan = run(call())
    supervisor = node.process.pid
    # The worker exits, its child becomes ours (we are a subreaper), then exits too.
    wait_until(lambda: orphan in children_of(supervisor), 5, "the orphan to be adopted")
    wait_until(lambda: not Path(f"/proc/{orphan}").exists(), 5, "the orphan to be reaped")
    assert children_of(supervisor) == {forkserver_of(node)}


def test_a_thread_started_at_import_is_named_in_a_warning(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "threads"
        type = "test+Threads"
        handler = "thread_at_import:ThreadCounter"
        """
    )

    async def call() -> bytes:
        async with actrhost.connect(node.config_path) as shell:
            return await shell.call("threads", "test.Threads.Alive", b"", timeout=5)

    assert run(call()) == b"False"  # the fork copied the calling thread only
    assert "started 1 thread(s) when imported (heartbeat)" in node.log()


class _DeadForkServer:
    """A forkserver whose every spawn fails (after a fork's moment) with ``error``."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.closed = 0

    async def spawn(self, spec: WorkerSpec) -> None:
        await asyncio.sleep(0.01)
        raise self.error

    async def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("unusable", [False, True])
def test_restarts_that_find_the_forkserver_dead_together_all_start(tmp_path, monkeypatch, unusable):
    # QA, 2026-12-03: SIGKILLs of workers and of the forkserver at once. Both restarts got
    # OSError; the second then closed None (AttributeError): its instance stayed
    # "starting" for good, with the pid of a process long gone. Now each spawns its
    # worker; a forkserver that died mid-fork is kept (started again for the next one),
    # one that cannot be started is retired, once.
    config_path = tmp_path / "node.toml"
    config_path.write_text('[node]\nname = "n"\n' + ECHO)
    supervisor = Supervisor(load_config(config_path), run_dir=tmp_path / "run")
    error = ForkServerUnusable("handlers do not import") if unusable else OSError("it exited")
    dead = _DeadForkServer(error)
    supervisor._forkserver = dead  # type: ignore[assignment]
    spawned: list[int] = []

    async def spawn_worker(config: object, spec: WorkerSpec) -> str:
        spawned.append(spec.index)
        return f"spawned {spec.index}"

    monkeypatch.setattr(supervisor_module, "spawn_worker", spawn_worker)
    specs = [
        WorkerSpec(str(config_path), "echo", index, index + 1, "ipc://x", "ipc://y", 1, "p")
        for index in range(3)
    ]

    async def restart_all() -> list[object]:
        return await asyncio.gather(*(supervisor._start_process(spec) for spec in specs))

    assert asyncio.run(restart_all()) == ["spawned 0", "spawned 1", "spawned 2"]
    assert sorted(spawned) == [0, 1, 2]
    if unusable:
        assert dead.closed == 1 and supervisor._forkserver is None
    else:
        assert dead.closed == 0 and supervisor._forkserver is dead


def test_a_worker_that_could_not_be_started_is_restarted_like_a_crash(tmp_path):
    # A fork or exec that fails (EAGAIN, say) used to end the instance's watch task with
    # it stuck in "starting"; now it counts as a crash at start, under its restart policy.
    config_path = tmp_path / "node.toml"
    config_path.write_text('[node]\nname = "n"\n' + ECHO)
    supervisor = Supervisor(load_config(config_path), run_dir=tmp_path / "run")
    supervisor._broadcast = lambda now=False: None  # type: ignore[method-assign]
    attempts = 0

    class Running:
        pid = 4242

        async def wait(self) -> int:
            await asyncio.Event().wait()  # runs until the test ends
            return 0

    async def start_process(spec: WorkerSpec) -> Running:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("fork: Resource temporarily unavailable")
        return Running()

    supervisor._start_process = start_process  # type: ignore[method-assign,assignment]
    slot = supervisor._slots[0]

    async def go() -> None:
        await supervisor._spawn(slot)
        assert slot.state is ActorState.DEAD and slot.pid is None
        assert slot.error == "could not start its process: fork: Resource temporarily unavailable"
        async with asyncio.timeout(5):
            while slot.pid != Running.pid:  # the first restart has no backoff
                await asyncio.sleep(0.01)
        assert slot.state is ActorState.STARTING and slot.restarts == 1 and slot.error == ""

    asyncio.run(go())


def test_a_start_watched_from_a_hello_that_came_before_the_pid_still_ends(tmp_path, monkeypatch):
    # Flaky once under load (session 46): the worker's HELLO, which arms the watch on a
    # blocked start, was read before the forkserver's answer with its pid. The watch then
    # held the previous process (or none) and never fired: "starting" for good.
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        '[node]\nname = "n"\nshutdown_grace_s = 0.05\n'
        + ECHO.replace("instances = 3", "instances = 1\nstart_timeout_s = 0.05")
    )
    supervisor = Supervisor(load_config(config_path), run_dir=tmp_path / "run")
    supervisor._broadcast = lambda now=False: None  # type: ignore[method-assign]
    monkeypatch.setattr(supervisor_module, "KILL_AFTER_S", 0.05)
    forkserver_answers = asyncio.Event()

    class Blocked:
        """A worker whose on_start blocks its loop: it ends only when killed."""

        pid = 4242
        returncode: int | None = None

        def __init__(self) -> None:
            self.killed = asyncio.Event()
            self.why = ""  # the slot's error when it was killed

        def kill(self) -> None:
            self.why = slot.error
            self.killed.set()

        async def wait(self) -> int:
            await self.killed.wait()
            self.returncode = -signal.SIGKILL
            return self.returncode

    blocked = Blocked()

    async def start_process(spec: WorkerSpec) -> Blocked:
        await forkserver_answers.wait()
        return blocked

    supervisor._start_process = start_process  # type: ignore[method-assign,assignment]
    slot = supervisor._slots[0]

    async def go() -> None:
        spawn = asyncio.ensure_future(supervisor._spawn(slot))
        await asyncio.sleep(0)
        supervisor._watch_start(slot)  # the HELLO, read before the pid
        await asyncio.sleep(0.01)
        forkserver_answers.set()
        await spawn
        async with asyncio.timeout(5):
            await blocked.killed.wait()
        assert "on_start did not return within start_timeout_s = 0.05 s" in blocked.why

    asyncio.run(go())


def test_ctrl_c_during_a_worker_processs_imports_is_ignored():
    # A terminal's Ctrl-C reaches the whole process group; a forkserver still importing
    # died of it with a KeyboardInterrupt traceback (QA). Only the supervisor decides:
    # worker processes ignore it from their first line, before the package's imports.
    from actrhost._worker_start import WORKERS_MAIN

    process = subprocess.Popen(
        [sys.executable, *WORKERS_MAIN, "forkserver", "not-a-socket"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    status = Path(f"/proc/{process.pid}/status")
    maps = Path(f"/proc/{process.pid}/maps")

    def ignores_ctrl_c() -> bool:
        lines = status.read_text().splitlines()
        ignored = int(next(x for x in lines if x.startswith("SigIgn:")).split()[1], 16)
        return bool(ignored & (1 << (signal.SIGINT - 1)))

    try:
        wait_until(ignores_ctrl_c, 20, "SIGINT to be ignored")
        assert "libzmq" not in maps.read_text()  # before the package's imports
        process.send_signal(signal.SIGINT)
    finally:
        _, stderr = process.communicate(timeout=30)
    assert "KeyboardInterrupt" not in stderr
    assert "invalid literal for int()" in stderr  # it went on to read its arguments


def test_a_worker_stopped_before_the_supervisor_answered_cleans_up_at_once(tmp_path):
    # A supervisor killed right after starting a worker sends no directory, only its
    # death signal: the worker waited 10 s for the directory, then exited without closing
    # its sockets, leaving its socket file and the run dir behind (seen under load).
    import zmq

    from actrhost._worker_start import WORKERS_MAIN
    from actrhost.workers._process import SPEC_ENV

    node = Node(tmp_path, '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n')
    socket_file = tmp_path / "a-1.sock"
    ctx = zmq.Context()
    supervisor = ctx.socket(zmq.ROUTER)  # hears the worker's hello, answers nothing
    try:
        supervisor.bind(f"ipc://{tmp_path / 'control.sock'}")
        spec = WorkerSpec(
            config_path=str(node.config_path),
            actor_name="echo",
            index=0,
            serial=1,
            endpoint=f"ipc://{socket_file}",
            control_endpoint=f"ipc://{tmp_path / 'control.sock'}",
            supervisor_pid=os.getpid(),
            shm_prefix="testnone",
        )
        env = {**os.environ, SPEC_ENV: json.dumps(dataclasses.asdict(spec))}
        worker = subprocess.Popen(
            [sys.executable, *WORKERS_MAIN], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        try:
            if not supervisor.poll(20_000):
                worker.kill()
                raise AssertionError(f"no hello from the worker: {worker.communicate()[1]}")
            assert socket_file.exists()
            worker.send_signal(signal.SIGTERM)  # as its supervisor's death would
            started = time.monotonic()
            worker.wait(8)
            assert time.monotonic() - started < 3  # not the 10 s wait for a directory
        finally:
            if worker.poll() is None:
                worker.kill()
            _, stderr = worker.communicate()
        assert not socket_file.exists(), stderr
        assert "Traceback" not in stderr, stderr
    finally:
        ctx.destroy(linger=0)
