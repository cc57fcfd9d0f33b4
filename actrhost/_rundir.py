"""The node's private run directory: where its ipc sockets live (mode 0700).

Its path is derived from the config file, so ``actrhost call CONFIG`` and
``actrhost.connect(CONFIG)`` find a running node without being told where it is. ipc paths
are limited to ~107 bytes, so the default root is short (``$ACTRHOST_RUN_ROOT`` or
``/tmp``), not the config's folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from ._config import Config
from ._control import CONTROL_SOCKET
from ._linux import process_gone

log = logging.getLogger(__name__)

RUN_ROOT_ENV = "ACTRHOST_RUN_ROOT"
#: A pid whose process's end stops the node as Ctrl-C would (set by actrhost.testing: a
#: test process SIGKILLed left its node running, QA).
STOP_WITH_ENV = "ACTRHOST_STOP_WITH_PID"
PID_FILE = "supervisor.pid"
#: The config file as the node started with it; its children read this, not the file,
#: so an edit of the file while the node runs cannot change (or break) a restart.
CONFIG_SNAPSHOT = "config.toml"
#: The node's DTLS key and certificate, from which its node id derives (gateway/_identity.py).
NODE_IDENTITY = "node-identity.pem"
#: How long a starting node waits for processes of a crashed one to leave its run dir.
LEFTOVER_WAIT_S = 3.0


#: The longest run dir path (bytes) whose socket paths all fit Linux's 107 bytes: the
#: longest socket name in it is a worker's ``a-<16 hex digits>.sock``.
MAX_RUN_DIR_BYTES = 107 - len("/a-0123456789abcdef.sock")


class NodeAlreadyRunning(RuntimeError):
    """Another supervisor serves the same run directory."""


class RunDirUnusable(RuntimeError):
    """The run directory cannot be created or used (its path, its permissions)."""


def run_dir_problem(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot hold the node's sockets, or None."""
    size = len(os.fsencode(run_dir))
    if size > MAX_RUN_DIR_BYTES:
        return (
            f"{run_dir} is {size} bytes long; the node's socket paths in it must fit in "
            f"107, which leaves {MAX_RUN_DIR_BYTES} for the folder"
        )
    return None


def run_dir_for(config: Config, run_root: str | None = None) -> Path:
    """The run directory of the node described by ``config`` (``run_root``: that of a
    node started with ``ACTRHOST_RUN_ROOT`` set so, not as here)."""
    if config.node.run_dir is not None:
        return config.node.run_dir
    return _run_root(run_root) / f"{config.node.name[:24]}-{_path_digest(config.path)}"


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


def _run_root(run_root: str | None = None) -> Path:
    root = Path(run_root or os.environ.get(RUN_ROOT_ENV) or tempfile.gettempdir())
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
    return _accepts(run_dir / CONTROL_SOCKET)


def unusable_because(run_dir: Path, *, probe: bool = True) -> str | None:
    """Why ``run_dir`` could not be created or used (``actrhost check``, before ``run``
    tries); None when it can. With ``probe`` the first missing folder is made and
    removed again to know (permissions alone do not tell, on /proc say): nothing is
    left behind, but never do it where a node may be creating the same folders."""
    path, missing = run_dir, None
    while not path.exists():
        if path.is_symlink():
            return f"{path} is a dangling symlink"
        path, missing = path.parent, path
    if not path.is_dir():
        return f"{path} is not a folder"
    if missing is None:
        return not_a_run_dir(run_dir)
    if probe:
        try:
            missing.mkdir(mode=0o700)
            missing.rmdir()
        except OSError as exc:
            return f"cannot create {missing}: {exc.strerror or exc}"
    return None


def _made_by_a_node(name: str) -> bool:
    """Whether a run dir entry is one a node makes: sockets, pid file, config copy, key."""
    return name.endswith(".sock") or name in (PID_FILE, CONFIG_SNAPSHOT, NODE_IDENTITY)


def not_a_run_dir(run_dir: Path) -> str | None:
    """Why an existing folder may not serve as a run dir, or None (empty, or a node's).

    A node empties its run dir at start (a crashed node's leftovers) and removes it at
    stop: a folder holding anything else is someone's, as ``run_dir = "."`` beside the
    config would be, and is refused rather than emptied.
    """
    try:
        names = sorted(entry.name for entry in os.scandir(run_dir))
    except OSError as exc:
        return f"cannot read {run_dir}: {exc.strerror or exc}"
    foreign = [name for name in names if not _made_by_a_node(name)]
    # Without a pid file (written first, removed last), only sockets can be a node's: a
    # config.toml of the user's own beside them is not. A node's key file beside its
    # sockets claims the folder too: a node killed in the middle of its cleanup may have
    # left them with the config copy (its restart was refused, QA); a key file alone
    # may be the user's (it and a config.toml were removed, QA).
    sockets = any(name.endswith(".sock") for name in names)
    claimed = PID_FILE in names or (NODE_IDENTITY in names and sockets)
    unclaimed = not claimed and any(not n.endswith(".sock") for n in names)
    if foreign or unclaimed:
        shown = ", ".join((foreign or names)[:5]) + (", …" if len(foreign or names) > 5 else "")
        return (
            f"{run_dir} is a folder with other files in it ({shown}), not a node's run dir: "
            "give the node a folder of its own (it is emptied at start and removed at stop)"
        )
    return None


def prepare(run_dir: Path) -> tuple[int, list[str]]:
    """Create the run dir (0700), or take over the one a crashed node left and empty it.

    Returns a descriptor of the directory, locked (``flock``) until this process closes
    it or dies, however it dies, and the names of the leftovers removed. Raises
    NodeAlreadyRunning when another process holds the lock: a node runs there, or
    starts there at this very moment.
    """
    try:
        run_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        why = unusable_because(run_dir, probe=False)
        raise RunDirUnusable(
            why or f"cannot create {run_dir.parent}: {exc.strerror or exc}"
        ) from None
    while True:
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RunDirUnusable(f"cannot create {run_dir}: {exc.strerror or exc}") from None
        try:
            fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a node that stopped just removed it
        except OSError as exc:  # a file of that name, say
            why = unusable_because(run_dir, probe=False)
            raise RunDirUnusable(why or f"cannot open {run_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NodeAlreadyRunning(f"a node is already running in {run_dir}") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(run_dir).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # we locked a directory its node removed on its way out: again
    why = not_a_run_dir(run_dir)
    if why is not None:
        os.close(fd)
        raise RunDirUnusable(why)
    os.chmod(run_dir, 0o700)  # mkdir's mode is filtered by the umask
    removed = sorted(p.name for p in run_dir.iterdir())
    # Our pid first: a leftover process of the crashed node then leaves the files alone.
    (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    if removed:
        _wait_for_leftover_listeners(run_dir)
        for name in removed:
            path = run_dir / name
            if name == PID_FILE:
                continue
            path.unlink(missing_ok=True)  # only a node's files (not_a_run_dir)
        log.warning("removed leftovers of a crashed node in %s: %s", run_dir, ", ".join(removed))
    return fd, removed


def _wait_for_leftover_listeners(run_dir: Path) -> None:
    """Let processes of the crashed node that still listen in ``run_dir`` (workers of a
    SIGKILLed supervisor, stopping within a second) exit first: a socket file we bind
    anew would be unlinked by theirs closing, which removes its file by path."""
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while time.monotonic() < deadline:
        if not any(_accepts(path) for path in run_dir.glob("*.sock")):
            return
        time.sleep(0.05)
    log.warning("processes of a crashed node still listen in %s: going on", run_dir)


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def write_config_snapshot(run_dir: Path, text: str) -> Path:
    """Keep the config's text in the run dir for the node's children (CONFIG_SNAPSHOT)."""
    path = run_dir / CONFIG_SNAPSHOT
    path.write_text(text, encoding="utf-8")
    return path


def remove(run_dir: Path) -> None:
    """Remove the run dir at shutdown: the files a node makes, then the folder, unless
    someone put other files in it meanwhile (those stay, and so does the folder)."""
    try:
        names = [entry.name for entry in os.scandir(run_dir)]
    except OSError:
        return
    # The pid file last: a kill in between leaves a folder that still reads as a node's.
    for name in sorted(names, key=lambda name: name == PID_FILE):
        if _made_by_a_node(name):
            with contextlib.suppress(OSError):
                os.unlink(run_dir / name)
    try:
        run_dir.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("left %s: it holds files the node did not make", run_dir)


def taken_over(run_dir: Path, supervisor_pid: int) -> bool:
    """True when the pid file names another supervisor than ``supervisor_pid``: a new
    node runs in ``run_dir`` now, whose files a process of the old one must not touch."""
    try:
        return int((run_dir / PID_FILE).read_text()) != supervisor_pid
    except (OSError, ValueError):
        return False  # gone already (another child of ours removed it), or being written


def remove_orphaned_run_dir(control_endpoint: str, supervisor_pid: int) -> None:
    """Remove the dead supervisor's socket file and, if we are the last out, the run dir.

    Every child of the node (workers, the gateway) tries when it outlives its
    supervisor; ``rmdir`` succeeds only for the one that leaves it empty (each one's own
    socket file is removed by ZeroMQ when the socket closes). Nothing is touched once
    the pid file names another supervisor: a new node took the run dir over.
    """
    path = Path(control_endpoint.removeprefix("ipc://"))
    run_dir = path.parent
    if taken_over(run_dir, supervisor_pid):
        return
    for leftover in (path, run_dir / CONFIG_SNAPSHOT, run_dir / NODE_IDENTITY):
        leftover.unlink(missing_ok=True)
    # Socket files of processes killed outright (a SIGKILL leaves them): nothing listens.
    with contextlib.suppress(OSError):
        for sock in run_dir.glob("*.sock"):
            if not _accepts(sock):
                sock.unlink(missing_ok=True)
    # The pid file last (as in remove), and not a new node's that came meanwhile.
    if not taken_over(run_dir, supervisor_pid):
        (run_dir / PID_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def remove_if_dead(run_dir: Path, supervisor_pid: int) -> None:
    """Remove what the dead supervisor ``supervisor_pid`` and its node left in ``run_dir``
    (a Shell that was attached, leaving last). Nothing is touched while the pid file
    names another supervisor or one still listens."""
    if taken_over(run_dir, supervisor_pid):
        return  # a new run of the node
    if process_gone(supervisor_pid) and not is_live(run_dir):
        remove_orphaned_run_dir(control_endpoint(run_dir), supervisor_pid)
