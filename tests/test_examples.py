"""The example configs run as they are and print what their READMEs promise."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actrhost.signaling._testing import ServerProcess

from .utils import REPO, wait_until

EXPECTED = {
    "echo": ["client got: hello #1", "client got: hello #2", "client got: hello #3"],
    "pingpong": ["ping: 200 nested round trips"],
    "pool": ["dispatcher: 10 squares by"] * 3,
    "camera": ["camera: viewer got"],  # then check_camera
    "greeter": [
        "visitor got: hello, visitor",
        "visitor got: hello, again hello, again",
        "visitor: the greeter greeted 2 time(s)",
    ],
}
#: What the two-node examples print on node B.
TWO_NODE_EXPECTED = {"echo": EXPECTED["echo"], "camera": EXPECTED["camera"]}


def check_camera(printed: str) -> None:
    """Frames arrived as 320x240 arrays and the 4 MiB scan whole. How many frames is not
    fixed: media is newest-wins (a busy viewer, or VP8 between nodes, may lose some)."""
    match = re.search(
        r"viewer got (\d+) of 60 frames \(320x240\) and a scan of 1,048,576 float32 "
        r"values \(sum 549,755,289,600\)",
        printed,
    )
    assert match and int(match.group(1)) > 0, printed


#: The README's two-node example: the signaling address its configs name.
TWO_NODE_URL = 'url = "ws://127.0.0.1:8765"'


@contextlib.contextmanager
def node_process(config: Path, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``actrhost run config`` with its output in ``out``; stopped with SIGTERM after the
    block, and it must exit with 0."""
    with open(out, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "actrhost", "run", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, out.read_text()


def wait_for_lines(out: Path, expected: list[str], *logs: Path, timeout_s: float = 30) -> None:
    """Wait until ``out`` holds every line of ``expected`` (as often as listed); on
    failure, show ``out`` and ``logs``."""

    def printed() -> bool:
        text = out.read_text(errors="replace")
        return all(text.count(line) >= expected.count(line) for line in expected)

    try:
        wait_until(printed, timeout_s, f"{out.name} to print {expected}")
    except AssertionError as exc:
        shown = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')}" for p in (out, *logs))
        raise AssertionError(f"{exc}{shown}") from None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_config_runs_as_it_is(name, tmp_path):
    out = tmp_path / "out.txt"
    with node_process(REPO / "configs" / f"{name}.toml", out):
        wait_for_lines(out, EXPECTED[name])
    if name == "camera":
        check_camera(out.read_text())


@pytest.mark.parametrize("name", sorted(TWO_NODE_EXPECTED))
def test_two_node_example_runs_as_the_readme_says(name, tmp_path):
    # The configs as they are, but for the signaling port (a free one, as tests run in
    # parallel) and python_path (the copies live in tmp_path, not beside examples/).
    configs = {}
    with ServerProcess() as server:
        for half in ("a", "b"):
            text = (REPO / "configs" / f"{name}-{half}.toml").read_text()
            assert TWO_NODE_URL in text
            text = text.replace(TWO_NODE_URL, f'url = "{server.url}"')
            text = text.replace('python_path = [".."]', f"python_path = [{str(REPO)!r}]")
            configs[half] = tmp_path / f"{name}-{half}.toml"
            configs[half].write_text(text)
        out_a, out_b = tmp_path / "a.txt", tmp_path / "b.txt"
        with node_process(configs["a"], out_a), node_process(configs["b"], out_b):
            wait_for_lines(out_b, TWO_NODE_EXPECTED[name], out_a)
    assert "connecting -> connected" in out_a.read_text()
    printed = out_b.read_text()
    if name == "echo":
        # The Echo that answered runs on the other node.
        echo_lines = [line for line in printed.splitlines() if "client got" in line]
        assert all("demo+Echo" in line for line in echo_lines), echo_lines
    else:
        check_camera(printed)  # the frames went through VP8 and came back as arrays
