"""How workers start: forked by the node's forkserver (the default) or spawned, and what
that must not change: a worker is the supervisor's child, restarts work, a dead forkserver
takes no actor with it, nothing is left behind (docs/node.md, "Starting workers")."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import actrhost

from .utils import children_of, pid_alive, run, wait_until

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
