"""The node's private run directory: where its ipc sockets live (mode 0700).

Its path is derived from the config file, so ``actrhost call CONFIG`` and
``actrhost.connect(CONFIG)`` find a running node without being told where it is. ipc paths
are limited to ~107 bytes, so the default root is short (``$ACTRHOST_RUN_ROOT`` or
``/tmp``), not the config's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from ._config import Config
from ._control import CONTROL_SOCKET
from ._linux import process_gone

log = logging.getLogger(__name__)

RUN_ROOT_ENV = "ACTRHOST_RUN_ROOT"
PID_FILE = "supervisor.pid"
#: The config file as the node started with it; its children read this, not the file,
#: so an edit of the file while the node runs cannot change (or break) a restart.
CONFIG_SNAPSHOT = "config.toml"
#: The node's DTLS key and certificate, from which its node id derives (gateway/_identity.py).
NODE_IDENTITY = "node-identity.pem"


class NodeAlreadyRunning(RuntimeError):
    """Another supervisor serves the same run directory."""


def run_dir_for(config: Config) -> Path:
    """The run directory of the node described by ``config``."""
    if config.node.run_dir is not None:
        return config.node.run_dir
    return _run_root() / f"{config.node.name[:24]}-{_path_digest(config.path)}"


def live_run_dir_of_file(config_path: str | os.PathLike[str]) -> Path | None:
    """The run directory of the running node started from the config file at
    ``config_path``, found without reading the file (it may not parse while someone
    edits it): default run directories end in a digest of the file's path. None when
    no such node answers, or it set ``[node] run_dir``."""
    absolute = Path(os.path.abspath(os.fsdecode(config_path)))
    suffix = f"-{_path_digest(absolute)}"
    with contextlib.suppress(OSError):
        for run_dir in _run_root().iterdir():
            if run_dir.name.endswith(suffix) and is_live(run_dir):
                return run_dir
    return None


def _run_root() -> Path:
    root = Path(os.environ.get(RUN_ROOT_ENV) or tempfile.gettempdir())
    return root / f"actrhost-{os.getuid()}"


def _path_digest(config_path: Path) -> str:
    # Of the file itself: a node started through a symlink is found through the target.
    return hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:10]


def node_prefix(run_dir: Path) -> str:
    """A short unique prefix for names the node creates outside its run dir (shm)."""
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]


def control_endpoint(run_dir: Path) -> str:
    """The supervisor's control socket address."""
    return f"ipc://{run_dir / CONTROL_SOCKET}"


def is_live(run_dir: Path) -> bool:
    """True when a supervisor accepts connections on the run dir's control socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(run_dir / CONTROL_SOCKET))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def prepare(run_dir: Path) -> list[str]:
    """Create the run dir (0700), removing what a crashed node left; return what was removed.

    Raises NodeAlreadyRunning when a live supervisor owns it.
    """
    removed: list[str] = []
    if run_dir.exists():
        if is_live(run_dir):
            raise NodeAlreadyRunning(f"a node is already running in {run_dir}")
        removed = sorted(p.name for p in run_dir.iterdir())
        shutil.rmtree(run_dir)
        if removed:
            log.warning(
                "removed leftovers of a crashed node in %s: %s", run_dir, ", ".join(removed)
            )
    run_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_dir.mkdir(mode=0o700)
    os.chmod(run_dir, 0o700)  # mkdir's mode is filtered by the umask
    (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    return removed


def write_config_snapshot(run_dir: Path, text: str) -> Path:
    """Keep the config's text in the run dir for the node's children (CONFIG_SNAPSHOT)."""
    path = run_dir / CONFIG_SNAPSHOT
    path.write_text(text, encoding="utf-8")
    return path


def remove(run_dir: Path) -> None:
    """Remove the run dir and everything in it (at shutdown)."""
    shutil.rmtree(run_dir, ignore_errors=True)


def remove_orphaned_run_dir(control_endpoint: str) -> None:
    """Remove the dead supervisor's socket file and, if we are the last out, the run dir.

    Every child of the node (workers, the gateway) tries when it outlives its
    supervisor; ``rmdir`` succeeds only for the one that leaves it empty (each one's own
    socket file is removed by ZeroMQ when the socket closes).
    """
    path = Path(control_endpoint.removeprefix("ipc://"))
    for leftover in (
        path,
        *(path.parent / name for name in (PID_FILE, CONFIG_SNAPSHOT, NODE_IDENTITY)),
    ):
        leftover.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def remove_if_dead(run_dir: Path, supervisor_pid: int) -> None:
    """Remove what the dead supervisor ``supervisor_pid`` and its node left in ``run_dir``
    (a Shell that was attached, leaving last). Nothing is touched while the pid file
    names another supervisor or one still listens."""
    with contextlib.suppress(OSError, ValueError):
        if int((run_dir / PID_FILE).read_text()) != supervisor_pid:
            return  # a new run of the node
    if process_gone(supervisor_pid) and not is_live(run_dir):
        remove_orphaned_run_dir(control_endpoint(run_dir))
