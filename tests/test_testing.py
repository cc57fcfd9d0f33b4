"""``actrhost.testing.running_node``: a real node for the length of a test."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from actrhost import ConfigError
from actrhost._config import load_config
from actrhost._rundir import run_dir_for
from actrhost.testing import NodeFailed, running_node

from .utils import REPO, TESTS_DIR, pid_alive, wait_until


def write_config(folder: Path, actors: str) -> Path:
    path = folder / "node.toml"
    path.write_text(
        f'[node]\nname = "t{folder.name[-8:].replace("_", "")}"\n'
        f'python_path = ["{TESTS_DIR}"]\n\n{actors}'
    )
    return path


ECHO = '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\ninstances = 2\n'


def test_a_running_node_answers_and_is_gone_after_the_block(tmp_path: Path) -> None:
    config = write_config(tmp_path, ECHO)

    async def go() -> list[int]:
        async with running_node(config) as node:
            answer = await node.shell.call("echo", "test.Echo.Say", b"hi", timeout=5)
            assert answer == b"hi"
            actors = await node.shell.actors()
            assert [a.state for a in actors] == ["running", "running"]
            assert "ready" in node.log_text()
            pids = [a.pid for a in actors if a.pid] + [node.process.pid]
        assert node.process.returncode == 0
        return pids

    pids = asyncio.run(asyncio.wait_for(go(), 60))
    assert not any(pid_alive(pid) for pid in pids)
    assert not run_dir_for(load_config(config)).exists()


def test_a_node_already_running_from_the_config_is_not_handed_out_as_the_blocks(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, ECHO)

    async def go() -> None:
        async with running_node(config) as first:
            with pytest.raises(NodeFailed, match="exited with status 1 before") as info:
                async with running_node(config):
                    raise AssertionError("the block must not run against the first node")
            assert "already running" in str(info.value)
            assert await first.shell.call("echo", "test.Echo.Say", b"still", timeout=5) == b"still"

    asyncio.run(asyncio.wait_for(go(), 60))


def test_a_node_that_cannot_start_fails_fast_quoting_its_log(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[[actor]]\nname = "bad"\ntype = "test+Bad"\nhandler = "actors:NoSuchClass"\n'
    )

    async def go() -> None:
        async with running_node(config):
            raise AssertionError("the block must not run")

    started = time.monotonic()
    with pytest.raises(NodeFailed, match="exited with status 2 before its actors ran") as info:
        asyncio.run(asyncio.wait_for(go(), 60))
    assert "has no class 'NoSuchClass'" in str(info.value)
    assert time.monotonic() - started < 20


def test_an_actor_given_up_on_fails_the_node_at_once_not_at_the_timeout(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[[actor]]\nname = "crash"\ntype = "test+Crash"\nhandler = "actors:CrashOnStart"\n'
        "max_restarts = 1\n",
    )

    async def go() -> None:
        async with running_node(config, start_timeout=60):
            raise AssertionError("the block must not run")

    started = time.monotonic()
    with pytest.raises(NodeFailed, match=r"crash .* failed and will not be restarted") as info:
        asyncio.run(asyncio.wait_for(go(), 90))
    assert "gave up after" in str(info.value)  # the log's tail says why
    assert time.monotonic() - started < 30  # the node keeps running: not its exit, not 60 s


def test_a_bad_config_raises_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nname = "x"\n')

    async def go() -> None:
        async with running_node(config):
            raise AssertionError("the block must not run")

    with pytest.raises(ConfigError, match="at least one"):
        asyncio.run(go())


RELAY = '[[actor]]\nname = "relay"\ntype = "test+Relay"\nhandler = "actors:Relay"\n'


def test_two_nodes_with_an_in_process_signaling_server(tmp_path: Path) -> None:
    """The several-nodes pattern of docs/testing.md."""
    from actrhost.signaling import run_server

    async def go() -> bytes:
        async with run_server("127.0.0.1:0") as server:
            signaling = f'[signaling]\nurl = "{server.url}"\n\n'
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            config_a = write_config(tmp_path / "a", signaling + RELAY)
            config_b = write_config(tmp_path / "b", signaling + ECHO)
            async with running_node(config_b), running_node(config_a) as node_a:
                return await node_a.shell.call(
                    "relay", "test.Relay.Forward", b"test+Echo test.Echo.Say across", timeout=20
                )

    assert asyncio.run(asyncio.wait_for(go(), 90)) == b"across"


def test_a_node_under_another_run_root_is_found(tmp_path: Path) -> None:
    # `env` named the node's run root, and the block looked under this process's: it
    # timed out "no node answering" though the node ran (QA).
    config = write_config(tmp_path, ECHO)
    root = Path(tempfile.mkdtemp(prefix="rr", dir="/tmp"))  # (tmp_path is too long a root)

    async def go() -> None:
        env = {"ACTRHOST_RUN_ROOT": str(root)}
        async with running_node(config, env=env, start_timeout=20) as node:
            assert await node.shell.call("echo", "test.Echo.Say", b"hi", timeout=5) == b"hi"
            assert any(root.glob("actrhost-*/*/control.sock"))

    try:
        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        shutil.rmtree(root)


def test_the_node_of_a_test_process_that_dies_stops(tmp_path: Path) -> None:
    # Started in a session of its own, it ran on for good when the test process was
    # SIGKILLed (pytest-timeout's thread method, a crashed xdist worker: QA).
    config = write_config(tmp_path, ECHO)
    log_dir = ""
    script = (
        "import asyncio, sys\n"
        "from actrhost.testing import running_node\n"
        "async def go():\n"
        "    async with running_node(sys.argv[1]) as node:\n"
        "        print(node.process.pid, node.log_path.parent, flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(go())\n"
    )
    test = subprocess.Popen(
        [sys.executable, "-c", script, str(config)], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert test.stdout is not None
        pid, log_dir = test.stdout.readline().split()
        supervisor = int(pid)
        test.kill()
        test.wait(5)
        wait_until(lambda: not pid_alive(supervisor), 15.0, "the node to stop")
        wait_until(lambda: not run_dir_for(load_config(config)).exists(), 5.0, "its run dir")
    finally:
        test.kill()
        test.wait(5)
        if test.stdout is not None:
            test.stdout.close()
        shutil.rmtree(log_dir, ignore_errors=True)  # the dead process's to remove
