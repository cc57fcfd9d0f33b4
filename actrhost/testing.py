"""Testing actors: run a real node for the length of a test.

::

    import asyncio
    from actrhost.testing import running_node

    def test_echo_answers():
        async def go():
            async with running_node("configs/echo.toml") as node:
                answer = await node.shell.call("echo", "demo.Echo.Say", b"hi", timeout=5)
                assert answer == b"hi"

        asyncio.run(go())

The node is the real thing, ``actrhost run`` in a child process: its supervisor, one
worker per actor, and a gateway when the config has ``[signaling]``. Entering the block
waits until every actor instance runs; leaving it stops the node as Ctrl-C would and
checks that it stopped cleanly. Nothing is faked, so what passes here passes in
production; see docs/testing.md for patterns (deadlines, waiting for effects, several
nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._config import load_config
from ._connect import connect_when_running
from ._errors import Unavailable
from ._rundir import RUN_ROOT_ENV, STOP_WITH_ENV, control_endpoint, run_dir_for
from ._shell import Shell

__all__ = ["NodeFailed", "RunningNode", "running_node"]

#: How long a stopping node may take before it is killed (its own grace is 5 s).
STOP_TIMEOUT_S = 15.0
#: Lines of the node's log quoted when it fails.
LOG_LINES_QUOTED = 20


class NodeFailed(RuntimeError):
    """The node exited before all its actors ran, or did not stop cleanly; the message
    ends with the last lines of its log."""


@dataclass
class RunningNode:
    """A node started by :func:`running_node`, with a Shell attached to it."""

    config_path: Path
    #: The ``actrhost run`` process (its supervisor).
    process: subprocess.Popen[bytes]
    #: Attached for the whole block: ``call``, ``tell``, ``actors``, ``status``...
    shell: Shell
    #: Everything the node wrote (stdout and stderr).
    log_path: Path

    def log_text(self) -> str:
        """What the node wrote so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def running_node(
    config: str | os.PathLike[str],
    *,
    start_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningNode]:
    """Run the node of ``config`` for the block; yield it once every actor runs.

    Raises :class:`~actrhost.ConfigError` for a bad config (nothing started),
    :class:`NodeFailed` when the node exits before its actors run or ``start_timeout``
    passes, and, on leaving a block that raised nothing, when the node does not stop
    with exit status 0 within :data:`STOP_TIMEOUT_S`. ``env`` is added to the node's
    environment.
    """
    config_path = Path(config).resolve()
    load_config(config_path)  # a bad config fails here, before anything starts
    log_dir = Path(tempfile.mkdtemp(prefix="actrhost-test-"))
    log_path = log_dir / "node.log"
    node_env = {**os.environ, **(env or {})}
    # The node stops if this process dies without stopping it (SIGKILLed, an xdist worker
    # that crashed): in a session of its own, it ran on for good (QA).
    node_env[STOP_WITH_ENV] = str(os.getpid())
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "actrhost", "run", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a stray Ctrl-C in the test's terminal is not the node's
            env=node_env,
        )
    # Found where the node puts it: `env` may name another run root (it was looked for
    # under this process's, and the block timed out, QA).
    where = control_endpoint(run_dir_for(load_config(config_path), node_env.get(RUN_ROOT_ENV)))
    body_failed = True
    try:
        shell = await _attach_when_running(process, where, log_path, start_timeout)
        try:
            yield RunningNode(config_path, process, shell, log_path)
            body_failed = False
        finally:
            await shell.aclose()
    finally:
        tail = ""
        try:
            code = await _stop(process)
            tail = _tail(log_path) if not body_failed and code != 0 else ""
        finally:  # also after a second Ctrl-C during the stop (the log stayed, QA)
            shutil.rmtree(log_dir, ignore_errors=True)
        if tail:
            raise NodeFailed(f"the node stopped with status {code}{tail}")


async def _attach_when_running(
    process: subprocess.Popen[bytes], where: str, log_path: Path, timeout_s: float
) -> Shell:
    try:
        return await connect_when_running(
            where,
            timeout_s,
            alive=lambda: process.poll() is None,
            supervisor_pid=process.pid,
        )
    except Unavailable as exc:
        if process.poll() is not None:
            raise NodeFailed(
                f"the node exited with status {process.returncode} before its actors ran"
                + _tail(log_path)
            ) from None
        raise NodeFailed(f"{exc.message}" + _tail(log_path)) from None


async def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the node; SIGKILL its process group if it does not stop in time (each
    worker has a group of its own, and ends by itself within seconds of its supervisor,
    with what its actor started)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    return process.returncode


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_LINES_QUOTED:]
    return ":\n" + "\n".join(lines) if lines else " (it wrote nothing)"
