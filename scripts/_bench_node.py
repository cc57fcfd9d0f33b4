"""A node the benchmark scripts start, wait for and always clean up (shared by them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import actrhost
from actrhost._config import load_config
from actrhost._rundir import node_prefix, run_dir_for
from actrhost.shm import list_prefix, node_segment_prefix, unlink_prefix

REPO = Path(__file__).resolve().parent.parent


class BenchNode:
    """One node run with ``python -m actrhost run`` in its own folder and process group."""

    def __init__(self, folder: Path, config_text: str) -> None:
        folder.mkdir(parents=True)
        self.config_path = folder / "node.toml"
        self.log_path = folder / "node.log"
        self.config_path.write_text(config_text)
        self.run_dir = run_dir_for(load_config(self.config_path))
        self.shm_prefix = node_segment_prefix(node_prefix(self.run_dir))
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: dict[str, int] = {}

    def spawn(self) -> None:
        """Start the supervisor and return at once (see :meth:`wait_running`)."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "actrhost", "run", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    async def wait_running(self, instances: int, poll_s: float, timeout_s: float = 30.0) -> None:
        """Return once a Shell sees ``instances`` instances, all running (pids in ``pids``).

        Polls for the control socket every ms, then ``shell.actors()`` every ``poll_s``.
        """
        async with asyncio.timeout(timeout_s):
            while True:
                self._check_alive()
                if (self.run_dir / "control.sock").exists():
                    with contextlib.suppress(actrhost.ActrError):
                        async with actrhost.connect(self.config_path) as shell:
                            while True:
                                infos = await shell.actors()
                                if len(infos) == instances and all(
                                    i.state == "running" for i in infos
                                ):
                                    self.pids = {i.name: i.pid for i in infos if i.pid}
                                    return
                                self._check_alive()
                                await asyncio.sleep(poll_s)
                await asyncio.sleep(0.001)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")
            raise RuntimeError(f"node exited with {self.process.returncode}:\n{log}")

    def stop(self) -> None:
        """SIGTERM the supervisor, SIGKILL its group if it lingers, remove leftovers.

        Idempotent.
        """
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # A member of the supervisor's group still alive (forkserver, gateway); the
            # workers lead groups of their own and end by themselves once it is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        unlink_prefix(self.shm_prefix)  # normally the supervisor did it already

    def leftover_segments(self) -> list[str]:
        """This node's segments still in /dev/shm (should be none after ``stop``)."""
        return list_prefix(self.shm_prefix)
