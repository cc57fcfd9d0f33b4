"""The run dir's claim on its folder (``_rundir``): what a killed node leaves is taken over
by its next start, and a folder of someone else's is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actrhost import _rundir
from actrhost._rundir import CONFIG_SNAPSHOT, NODE_IDENTITY, PID_FILE


def leave(run_dir: Path, *names: str) -> None:
    run_dir.mkdir(mode=0o700, exist_ok=True)
    for name in names:
        (run_dir / name).write_text("left\n")


def test_what_a_node_killed_in_its_cleanup_left_is_taken_over(tmp_path):
    # A node killed after its pid file went, before its config copy and key file did: its
    # next start was refused as "a folder with other files in it" (QA).
    run_dir = tmp_path / "run"
    leave(run_dir, CONFIG_SNAPSHOT, NODE_IDENTITY, "a-1f.sock", "gateway.sock")
    assert _rundir.not_a_run_dir(run_dir) is None
    fd, removed = _rundir.prepare(run_dir)
    try:
        assert removed == sorted([CONFIG_SNAPSHOT, NODE_IDENTITY, "a-1f.sock", "gateway.sock"])
        assert [p.name for p in run_dir.iterdir()] == [PID_FILE]
    finally:
        os.close(fd)
        _rundir.remove(run_dir)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "names",
    [(CONFIG_SNAPSHOT,), (CONFIG_SNAPSHOT, "a-1f.sock"), (CONFIG_SNAPSHOT, NODE_IDENTITY)],
)
def test_a_config_toml_without_a_pid_file_or_a_key_beside_sockets_is_not_claimed(tmp_path, names):
    run_dir = tmp_path / "run"
    leave(run_dir, *names)
    assert "other files in it" in (_rundir.not_a_run_dir(run_dir) or "")


def unlinked_in_order(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files unlinked from now on, in order (Path.unlink calls os.unlink)."""
    names: list[str] = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        real_unlink(path, *args, **kwargs)
        names.append(Path(path).name)  # (not when it raised: missing)

    monkeypatch.setattr(os, "unlink", unlink)
    return names


def test_a_stopping_node_removes_its_pid_file_last(tmp_path, monkeypatch):
    # A kill in the middle leaves a folder whose next start reads it as a node's.
    run_dir = tmp_path / "run"
    leave(run_dir, PID_FILE, CONFIG_SNAPSHOT, NODE_IDENTITY, "control.sock", "a-1f.sock")
    names = unlinked_in_order(monkeypatch)
    _rundir.remove(run_dir)
    assert len(names) == 5 and names[-1] == PID_FILE
    assert not run_dir.exists()


def test_an_orphan_removes_the_pid_file_last_and_only_its_own_supervisors(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    endpoint = f"ipc://{run_dir / 'control.sock'}"
    leave(run_dir, CONFIG_SNAPSHOT, NODE_IDENTITY, "control.sock", "a-1f.sock")
    (run_dir / PID_FILE).write_text("4242\n")
    names = unlinked_in_order(monkeypatch)
    _rundir.remove_orphaned_run_dir(endpoint, 4242)
    assert len(names) == 5 and names[-1] == PID_FILE
    assert not run_dir.exists()
    # A new node's (its pid in the file) is left alone.
    leave(run_dir, CONFIG_SNAPSHOT, "control.sock")
    (run_dir / PID_FILE).write_text("4343\n")
    _rundir.remove_orphaned_run_dir(endpoint, 4242)
    assert sorted(p.name for p in run_dir.iterdir()) == [CONFIG_SNAPSHOT, "control.sock", PID_FILE]
