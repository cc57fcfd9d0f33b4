"""The loop watch (``_loop_watch.py``) in a real process: a process
that is stopped (SIGSTOP) is not reported as a blocked loop; a loop kept busy computing
is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import asyncio, logging, sys, time
    from actrhost._loop_watch import LoopWatch

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    async def main():
        watch = LoopWatch(0.3)
        watch.start()
        print("ready", flush=True)
        await asyncio.sleep(3.0)  # the parent stops and continues us meanwhile
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # computing: the loop is blocked for real
            pass
        await asyncio.sleep(0.5)
        print(f"blocks {watch.blocks} pauses {watch.pauses}", flush=True)
        watch.stop()

    asyncio.run(main())
    """
)


def test_a_stopped_worker_is_not_reported_as_a_blocked_loop(tmp_path: Path) -> None:
    script = tmp_path / "child.py"  # a file, so that the stack shows its lines
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(1.5)
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    # The pause: said as such, with no stack; the busy second: one block, with its stack.
    _, blocks, _, pauses = out.split()
    assert blocks == "1" and int(pauses) >= 1, err  # (a starved machine may pause it more)
    assert "this worker did not run for 1." in err
    assert err.count("the event loop has been blocked for") == 1
    assert "while time.monotonic() < until" in err
