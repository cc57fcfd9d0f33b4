"""The example configs run as they are and print what their READMEs promise."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .utils import REPO, wait_until

EXPECTED = {
    "echo": ["client got: hello #1", "client got: hello #2", "client got: hello #3"],
    "pingpong": ["ping: 200 nested round trips"],
    "pool": ["dispatcher: 10 squares by"] * 3,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_config_runs_as_it_is(name, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "actrhost", "run", f"configs/{name}.toml"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        try:

            def printed() -> bool:
                text = out.read_text(errors="replace")
                return all(
                    text.count(line) >= EXPECTED[name].count(line) for line in EXPECTED[name]
                )

            wait_until(printed, 30, f"{name} to print {EXPECTED[name]}")
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(20)
    assert code == 0, out.read_text()
