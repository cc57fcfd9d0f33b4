"""Segments: naming, create/attach/close/unlink, permissions, prefix sweeps, no resource_tracker."""

from __future__ import annotations

import errno
import gc
import os
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from actrhost._errors import ClosedResourceError
from actrhost.shm import (
    SHM_DIR,
    Segment,
    list_prefix,
    node_segment_prefix,
    segment_name,
    unlink_prefix,
    validate_name,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def node() -> Iterator[str]:
    """A node prefix unique to this test; nothing with it may remain afterwards."""
    node = "t" + uuid.uuid4().hex[:12]
    yield node
    unlink_prefix(node_segment_prefix(node))
    assert list_prefix(node_segment_prefix(node)) == []


def _mapped(name: str) -> bool:
    with open("/proc/self/maps") as maps:
        return any(f"{SHM_DIR}/{name}" in line for line in maps)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------------------- names


def test_segment_name_shape() -> None:
    assert segment_name("n1", "a", "b") == "actrh-n1-a-b"
    assert segment_name("n1", 255, "x.y") == "actrh-n1-ff-x.y"
    assert segment_name("n1", 2**64 - 1) == "actrh-n1-" + "f" * 16
    assert node_segment_prefix("n1") == "actrh-n1-"
    assert segment_name("n1", "a").startswith(node_segment_prefix("n1"))


@pytest.mark.parametrize(
    ("node", "parts", "error"),
    [
        ("n-1", ("a",), ValueError),  # "-" is the separator
        ("n1", ("a-b",), ValueError),
        ("n1", ("",), ValueError),
        ("", ("a",), ValueError),
        ("n1", ("a/b",), ValueError),
        ("n1", (-1,), ValueError),
        ("n1", (True,), TypeError),
        ("n1", (), ValueError),
        ("n1", ("x" * 250,), ValueError),  # longer than 255 in total
    ],
)
def test_segment_name_rejects(node: str, parts: tuple[object, ...], error: type) -> None:
    with pytest.raises(error):
        segment_name(node, *parts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["", "a/b", "/a", ".", "..", ".hidden", "x" * 256, "a\0b", "é", "a b"]
)
def test_validate_name_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        validate_name(name)
    with pytest.raises(ValueError):
        Segment.create(name, 64)
    with pytest.raises(ValueError):
        Segment.attach(name)


def test_validate_name_accepts_max_length() -> None:
    assert validate_name("a" * 255) == "a" * 255


# ---------------------------------------------------------------------------- create / attach


def test_create_attach_share_memory(node: str) -> None:
    name = segment_name(node, "s")
    with Segment.create(name, 10_000) as seg, Segment.attach(name) as other:
        assert seg.size_bytes == other.size_bytes == 10_000
        assert bytes(other.buf[:16]) == bytes(16)  # zero-filled
        seg.buf[100:105] = b"hello"
        assert bytes(other.buf[100:105]) == b"hello"
        st = os.stat(seg.path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert seg.is_linked() and other.is_linked()
        assert "actrh-" in repr(seg) and "open" in repr(seg)
        seg.unlink()
    assert not os.path.exists(os.path.join(SHM_DIR, name))


def test_mode_is_0600_despite_umask(node: str) -> None:
    old = os.umask(0o277)
    try:
        seg = Segment.create(segment_name(node, "m"), 64)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(seg.path).st_mode) == 0o600
    finally:
        seg.close()
        seg.unlink()


def test_create_existing_name_fails(node: str) -> None:
    name = segment_name(node, "dup")
    with Segment.create(name, 64) as seg:
        with pytest.raises(FileExistsError):
            Segment.create(name, 64)
        assert seg.is_linked()
        seg.unlink()


def test_attach_missing_fails(node: str) -> None:
    with pytest.raises(FileNotFoundError):
        Segment.attach(segment_name(node, "missing"))


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_create_bad_size(node: str, size: object) -> None:
    with pytest.raises(ValueError):
        Segment.create(segment_name(node, "z"), size)  # type: ignore[arg-type]
    assert list_prefix(node_segment_prefix(node)) == []


def test_create_failure_leaves_nothing(node: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as info:
        Segment.create(segment_name(node, "full"), 1 << 20)
    assert info.value.errno == errno.ENOSPC
    assert list_prefix(node_segment_prefix(node)) == []


def test_attach_refuses_symlink(node: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"x" * 64)
    link = os.path.join(SHM_DIR, segment_name(node, "link"))
    os.symlink(target, link)
    try:
        with pytest.raises(OSError) as info:
            Segment.attach(segment_name(node, "link"))
        assert info.value.errno == errno.ELOOP
    finally:
        os.unlink(link)


def test_attach_refuses_empty(node: str) -> None:
    name = segment_name(node, "empty")
    fd = os.open(os.path.join(SHM_DIR, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    with pytest.raises(ValueError):
        Segment.attach(name)


# ---------------------------------------------------------------------------- close / unlink


def test_close_is_idempotent_and_buf_raises(node: str) -> None:
    seg = Segment.create(segment_name(node, "c"), 4096)
    seg.close()
    seg.close()
    assert seg.closed and "closed" in repr(seg)
    with pytest.raises(ClosedResourceError):
        _ = seg.buf
    assert seg.is_linked()  # closing never unlinks
    seg.unlink()
    seg.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        seg.unlink()


def test_close_with_exported_views_defers_unmap(node: str) -> None:
    name = segment_name(node, "v")
    seg = Segment.create(name, 4096)
    view = seg.buf[10:20]
    arr = np.frombuffer(seg.buf, dtype=np.uint8)  # an export of buf itself
    seg.close()  # must not raise BufferError
    assert seg.closed and _mapped(name)
    view[0] = 7  # still valid memory
    assert arr[10] == 7
    del view, arr
    gc.collect()
    assert not _mapped(name)  # unmapped once the last view is gone
    seg.unlink()


def test_close_unmaps(node: str) -> None:
    name = segment_name(node, "u")
    seg = Segment.create(name, 4096)
    assert _mapped(name)
    seg.close()
    assert not _mapped(name)
    seg.unlink()


def test_unlink_keeps_mappings_valid(node: str) -> None:
    name = segment_name(node, "ul")
    seg = Segment.create(name, 4096)
    other = Segment.attach(name)
    seg.unlink()
    assert not seg.is_linked() and not other.is_linked()
    seg.buf[0:3] = b"abc"
    assert bytes(other.buf[0:3]) == b"abc"
    with pytest.raises(FileNotFoundError):
        Segment.attach(name)
    # A new segment under the same name is a different one.
    with Segment.create(name, 64) as fresh:
        assert not seg.is_linked() and fresh.is_linked()
        fresh.unlink()
    seg.close()
    other.close()


# ---------------------------------------------------------------------------- prefix sweep


def test_unlink_prefix_removes_only_that_node(node: str) -> None:
    other_node = node + "x"  # "actrh-<node>-" must not match "actrh-<node>x-"
    segs = [Segment.create(segment_name(node, i), 64) for i in range(3)]
    keep = Segment.create(segment_name(other_node, 0), 64)
    try:
        assert len(list_prefix(node_segment_prefix(node))) == 3
        for seg in segs:
            seg.close()
        assert unlink_prefix(node_segment_prefix(node)) == 3
        assert list_prefix(node_segment_prefix(node)) == []
        assert unlink_prefix(node_segment_prefix(node)) == 0
        assert keep.is_linked()
    finally:
        keep.close()
        keep.unlink()
    assert list_prefix(node_segment_prefix(other_node)) == []


def test_unlink_prefix_while_mapped(node: str) -> None:
    seg = Segment.create(segment_name(node, "m"), 64)
    seg.buf[0] = 1
    assert unlink_prefix(node_segment_prefix(node)) == 1
    assert not seg.is_linked()
    assert seg.buf[0] == 1  # the mapping outlives the name
    seg.close()


@pytest.mark.parametrize("prefix", ["", "a", "/", "actrh", "foo-", "actrh-/x", "../actrh-"])
def test_unlink_prefix_refuses_foreign_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError):
        unlink_prefix(prefix)
    with pytest.raises(ValueError):
        list_prefix(prefix)


# ---------------------------------------------------------------------------- resource_tracker

_NO_TRACKER_CHILD = textwrap.dedent(
    """
    import subprocess, sys
    from actrhost.shm import Segment

    name = sys.argv[1]
    seg = Segment.create(name, 4096)
    seg.buf[0:2] = b"ok"
    # Another process attaches and exits: with multiprocessing.shared_memory on 3.11 its
    # resource_tracker would unlink the segment and warn about a leak.
    subprocess.run(
        [sys.executable, "-X", "dev", "-c",
         "import sys; from actrhost.shm import Segment; s = Segment.attach(sys.argv[1]); "
         "assert bytes(s.buf[0:2]) == b'ok'; s.close()",
         name],
        check=True,
    )
    assert seg.is_linked(), "segment was unlinked by another process's exit"
    attached = Segment.attach(name)
    attached.close()
    seg.close()
    assert "multiprocessing.resource_tracker" not in sys.modules
    assert "multiprocessing.shared_memory" not in sys.modules
    seg.unlink()
    """
)


def test_no_resource_tracker_warnings(node: str) -> None:
    name = segment_name(node, "rt")
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _NO_TRACKER_CHILD, name],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert not os.path.exists(os.path.join(SHM_DIR, name))
