"""Helpers the tests share: a real node in a subprocess, owned and cleaned up by a fixture."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import zmq

import actrhost
from actrhost._config import load_config
from actrhost._rpc import RpcEndpoint
from actrhost._rundir import node_prefix, run_dir_for
from actrhost.shm import list_prefix, node_segment_prefix

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
#: Frames recorded off real nodes by scripts/record_frames.py (tests/frames/README.md).
FRAMES_DIR = TESTS_DIR / "frames"
T = TypeVar("T")


def load(name: str) -> bytes:
    """The recorded frame ``tests/frames/<name>.bin``."""
    return (FRAMES_DIR / f"{name}.bin").read_bytes()


def run(coro: Awaitable[T], timeout_s: float = 30.0) -> T:
    """Run a coroutine to completion, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


def actrhost_command(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m actrhost ARGS`` from the repository root; its text output."""
    return subprocess.run(
        [sys.executable, "-m", "actrhost", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


#: ``python -m actrhost`` with Ctrl-C (SIGINT) turned back on, as at a terminal: a test
#: run started in the background by a shell (a CI job, say) ignores SIGINT, its children
#: inherit that, and Python then leaves it ignored (asyncio.run too).
ACTRHOST_AS_AT_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'actrhost'; runpy.run_module('actrhost', run_name='__main__', alter_sys=True)"
)


@contextlib.contextmanager
def actrhost_in_background(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m actrhost ARGS`` started now, as from a terminal (Ctrl-C works), its
    stderr piped (read it with ``communicate``); killed if it still runs after the block."""
    process = subprocess.Popen(
        [sys.executable, "-c", ACTRHOST_AS_AT_A_TERMINAL, *args],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


#: One Recorder actor named "rec" (tests/actors.py): it records the order it handled in.
RECORDER = '[[actor]]\nname = "rec"\ntype = "test+Recorder"\nhandler = "actors:Recorder"\n'

#: The typed-service example's Greeter as a node's only actor (examples/greeter).
GREETER = """
[[actor]]
name = "greeter"
type = "demo+Greeter"
handler = "examples.greeter:Greeter"
"""


@contextlib.contextmanager
def signal_server(*options: str, host: str = "127.0.0.1") -> Iterator[str]:
    """A standalone ``actrhost signal`` with ``options`` on a free port of loopback
    address ``host`` ("[::1]" for IPv6); yields its ws:// URL and checks it stopped
    cleanly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "actrhost", "signal", "--listen", f"{host}:0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"signaling server listening on ws://{host}:"), line
        yield line.split()[-1]
    finally:
        process.terminate()
        assert process.wait(10) == 0


@contextlib.asynccontextmanager
async def beside_a_bare_gateway(folder: Path) -> AsyncIterator[tuple[RpcEndpoint, Any, str]]:
    """A process's ``RpcEndpoint`` (a worker's or a Shell's side) and a bare ROUTER bound
    where its node's gateway would be, and that endpoint: for what passes between them.
    The endpoint knows it as its gateway (tells to other nodes go there); all closed
    after."""
    zctx = zmq.Context()
    endpoint = f"ipc://{folder}/gateway.sock"
    gateway = zctx.socket(zmq.ROUTER)
    gateway.bind(endpoint)
    rpc = RpcEndpoint(zctx, f"ipc://{folder}/w.sock", lambda env, route: None, hwm=99, name="w")
    rpc.to_other_nodes.gateway_is(endpoint, 1)
    try:
        yield rpc, gateway, endpoint
    finally:
        rpc.close()
        gateway.close(0)
        zctx.term()


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> set[int]:
    """The child processes of ``pid`` (from /proc; empty once it is gone)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return children


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


class Node:
    """One node run with ``python -m actrhost run`` in its own process group."""

    def __init__(self, tmp_path: Path, actors_toml: str, node_toml: str = "") -> None:
        self.dir = tmp_path
        self.config_path = tmp_path / "node.toml"
        self.log_path = tmp_path / "node.log"
        name = "t" + os.urandom(4).hex()
        self.config_path.write_text(
            f'[node]\nname = "{name}"\npython_path = ["{TESTS_DIR}"]\n'
            + textwrap.dedent(node_toml)
            + "\n"
            + textwrap.dedent(actors_toml)
        )
        self.config = load_config(self.config_path)
        self.run_dir = run_dir_for(self.config)
        self.process: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    def start(self) -> Node:
        """Start the supervisor; returns once every actor is running."""
        self.spawn()
        self.wait_running()
        return self

    def spawn(self, env: dict[str, str] | None = None) -> Node:
        """Start the supervisor and return at once (as ``actrhost run ... &``), with
        ``env`` added to this process's environment."""
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "actrhost", "run", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        return self

    def kill_every_process(self) -> None:
        """SIGKILL the whole node at once: nobody cleans up. Each worker (with what its
        actor started) has a process group of its own, beside the supervisor's."""
        assert self.process is not None
        children = children_of(self.process.pid)  # workers, the forkserver, the gateway
        for pid in children:  # frozen first: none may see the others die and react
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # a worker's group (none for the others)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(5)

    def log(self) -> str:
        """What the node wrote so far."""
        return self.log_path.read_text(errors="replace")

    def spawn_until_starting(self) -> Node:
        """Start the supervisor; return once it starts its instances (none runs yet)."""
        self.spawn()
        instances = sum(actor.instances for actor in self.config.actors)
        self.wait_for_log(f"starting {instances} actor instance(s)", 20)
        return self

    def wait_for_log(self, text: str, timeout_s: float) -> None:
        """Wait until the node has written ``text``; fail with its log if it does not."""
        try:
            wait_until(lambda: text in self.log(), timeout_s, repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc} in the node's log:\n{self.log()}") from None

    def actors(self) -> list[actrhost.ActorInfo]:
        """The node's actors as a fresh Shell sees them."""

        async def ask() -> list[actrhost.ActorInfo]:
            async with actrhost.connect(self.config_path) as shell:
                return await shell.actors()

        infos = run(ask(), 10)
        self.seen_pids.update(i.pid for i in infos if i.pid)
        if self.process is not None:
            self.seen_pids.update(children_of(self.process.pid))  # forkserver, gateway
        return infos

    def status(self) -> dict[str, Any]:
        """``shell.status()`` of the node."""

        async def ask() -> dict[str, Any]:
            async with actrhost.connect(self.config_path) as shell:
                return await shell.status()

        return run(ask(), 10)

    def wait_running(self, timeout_s: float = 20.0) -> None:
        """Wait until every actor instance is running."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode}:\n{self.log()}")
            if not (self.run_dir / "control.sock").exists():
                return False
            try:
                infos = self.actors()
            except actrhost.ActrError:
                return False
            return bool(infos) and all(i.state == "running" for i in infos)

        wait_until(ready, timeout_s, "every actor running")

    def pid_of(self, name: str, index: int = 0) -> int:
        """Pid of one instance."""
        for info in self.actors():
            if info.name == name and info.actr_id and info.pid:
                if index == 0:
                    return info.pid
                index -= 1
        raise AssertionError(f"no running instance {name}#{index}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Stop the supervisor with ``sig``; return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout_s)
        return self.process.returncode

    def cleanup(self) -> None:
        """Kill whatever is left (the test failed) and assert nothing of the node remains."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop(timeout_s=15)
            except subprocess.TimeoutExpired:
                self.kill_every_process()
        if self.process is not None:
            try:
                wait_until(
                    lambda: not any(pid_alive(p) for p in self.seen_pids), 5, "workers to exit"
                )
            finally:
                for pid in self.seen_pids:
                    if pid_alive(pid):
                        os.kill(pid, signal.SIGKILL)
            self._log.close()
        assert not any(pid_alive(p) for p in self.seen_pids), "a process outlived its node"
        wait_until(lambda: not self.run_dir.exists(), 5, f"run dir {self.run_dir} to be removed")
        assert self.segments() == [], "shared-memory segments outlived the node"

    def segments(self) -> list[str]:
        """The node's shared-memory segments in /dev/shm."""
        return list_prefix(node_segment_prefix(node_prefix(self.run_dir)))
