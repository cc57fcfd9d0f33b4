"""``actrhost signal``, ``actrhost status --signaling`` and ``actrhost lock``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from actrhost._fingerprint import service_fingerprint
from actrhost._lockfile import LockFile
from actrhost.signaling import SignalingClient

from .utils import REPO, run, signal_server

SCHEMA = """
syntax = "proto3";
package demo;
message SayRequest { string text = 1; }
service Echo { rpc Say(SayRequest) returns (SayRequest); }
"""


def actrhost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actrhost", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


def test_status_lists_registered_actors_and_lock_uses_their_fingerprint(signaling_url, tmp_path):
    async def scenario():
        async with SignalingClient(signaling_url) as client:
            reg = await client.register("demo+Echo", 1, schema_text=SCHEMA)
            await client.register("demo+Other", 2)  # another realm: never listed in realm 1
            status = await asyncio.to_thread(actrhost, "status", "--signaling", signaling_url)
            as_json = await asyncio.to_thread(
                actrhost, "status", "--signaling", signaling_url, "--json"
            )
            config = tmp_path / "node.toml"
            config.write_text(
                '[node]\nname = "n"\n[[actor]]\nname = "a"\ntype = "demo+Client"\nhandler = "m:A"\n'
                '[dependencies]\necho = { actr_type = "demo+Echo" }\n'
            )
            lock = await asyncio.to_thread(
                actrhost, "lock", str(config), "--signaling", signaling_url
            )
            return reg.actr_id, status, as_json, lock, config

    actr_id, status, as_json, lock, config = run(scenario())
    assert status.returncode == 0, status.stderr
    assert "realm 1: 1 actor(s)" in status.stdout
    assert str(actr_id) in status.stdout and service_fingerprint(SCHEMA) in status.stdout
    assert "demo+Other" not in status.stdout
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)  # --json was ignored: the table came out
    assert listed["realm"] == 1 and not listed["truncated"]
    assert [(a["id"], a["fingerprint"]) for a in listed["actors"]] == [
        (str(actr_id), service_fingerprint(SCHEMA))
    ]
    assert lock.returncode == 0, lock.stderr
    locked = LockFile.load(config.parent / "Actr.lock.toml")
    assert [(d.name, str(d.actr_type), d.fingerprint) for d in locked.dependencies] == [
        ("echo", "demo+Echo", service_fingerprint(SCHEMA))
    ]


def test_lock_without_fingerprint_or_signaling_is_a_one_line_error(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "n"\n[[actor]]\nname = "a"\ntype = "demo+Client"\nhandler = "m:A"\n'
        '[dependencies]\necho = { actr_type = "demo+Echo" }\n'
    )
    result = actrhost("lock", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f"actrhost: config error: {config}: dependencies.echo.fingerprint: no fingerprint, and no "
        "signaling server to ask: set it, or pass --signaling ws://HOST:PORT\n"
    )


def test_lock_of_a_type_signaling_does_not_know_is_a_404_not_found(signaling_url, tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "n"\n[[actor]]\nname = "a"\ntype = "demo+Client"\nhandler = "m:A"\n'
        '[dependencies]\necho = { actr_type = "demo+Echo" }\n'
    )
    result = actrhost("lock", str(config), "--signaling", signaling_url)
    assert result.returncode == 1
    assert result.stderr == (  # as `call` says a 404 (it said "404 ActrError", QA)
        "actrhost: lock: 404 NotFound: signaling knows no instance of demo+Echo with a "
        "fingerprint\n"
    )
    assert not (tmp_path / "Actr.lock.toml").exists()


def test_lock_with_fingerprints_in_the_config_needs_no_server(tmp_path):
    fp = service_fingerprint(SCHEMA)
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "n"\n[[actor]]\nname = "a"\ntype = "demo+Client"\nhandler = "m:A"\n'
        f'[dependencies]\necho = {{ actr_type = "demo+Echo", fingerprint = "{fp}" }}\n'
    )
    result = actrhost("lock", str(config))
    assert result.returncode == 0, result.stderr
    assert LockFile.load(tmp_path / "Actr.lock.toml").dependencies[0].fingerprint == fp


def test_signal_refuses_a_bad_or_taken_address_in_one_line(signaling_url):
    for listen in ("127.0.0.1", "127.0.0.1:70000"):
        refused = actrhost("signal", "--listen", listen)
        assert refused.returncode == 2
        assert refused.stderr == (
            f"actrhost: config error: --listen: invalid listen address '{listen}': expected "
            "host:port with a port from 0 to 65535\n"
        )
    taken = signaling_url.removeprefix("ws://")
    refused = actrhost("signal", "--listen", taken)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith(
        f"actrhost: signal: cannot listen on {taken}: "
    )
    assert "Traceback" not in refused.stderr


def test_signal_writes_a_key_file_and_serves_with_the_server_options(tmp_path):
    keys = tmp_path / "keys.toml"
    wrote = actrhost("signal", "--new-key-file", str(keys))
    assert wrote.returncode == 0 and wrote.stdout == f"wrote {keys}\n", wrote.stderr
    assert "secret_hex" in keys.read_text()
    again = actrhost("signal", "--new-key-file", str(keys))  # it never overwrites
    assert again.returncode == 1
    assert again.stderr.startswith(f"actrhost: signal: cannot write {keys}: ")
    options = ["--key-file", str(keys), "--heartbeat-interval", "0.5", "--max-frame-bytes", "4096"]
    with signal_server(*options) as url:
        assert url.startswith("ws://127.0.0.1:")


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("--heartbeat-interval=-1", "-1 is less than 0.05"),  # refused heartbeats, a flood
        ("--heartbeat-interval=inf", "not finite: 'inf'"),
        ("--credential-ttl=0", "0 is less than 0.1"),  # a new id every second
        ("--reregister-grace=-5", "-5 is less than 0"),
        ("--missed-heartbeats=0", "0 is less than 1"),
        ("--max-frame-bytes=0", "0 is less than 4096"),  # nobody could register
        ("--max-frame-bytes=1.5", "not a whole number: '1.5'"),
        ("--send-queue-slots=0", "0 is less than 1"),
    ],
)
def test_signal_refuses_server_options_that_would_break_every_node(option, error):
    refused = actrhost("signal", "--listen", "127.0.0.1:0", option)
    assert refused.returncode == 2
    name = option.split("=")[0]
    assert refused.stderr.splitlines()[-1] == f"actrhost signal: error: argument {name}: {error}"


def test_signal_logs_on_stderr_at_the_level_asked(tmp_path):
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "actrhost", "signal", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("signaling server listening on ws://")
        finally:
            process.terminate()
            assert process.wait(10) == 0
    # The warning the docs promise (it went nowhere: no logging was set up).
    assert "WARNING signaling[" in log.read_text()
    assert "_run: no key file: using a random key" in log.read_text()
    quiet = actrhost("signal", "--listen", "127.0.0.1:0", "--log-level", "loud")
    assert quiet.returncode == 2 and "--log-level: invalid choice: 'loud'" in quiet.stderr


@pytest.mark.parametrize("realm", ["-5", "99999999999", "one"])
def test_a_bad_realm_is_a_usage_error_not_a_traceback(realm):
    result = actrhost("status", "--signaling", "ws://127.0.0.1:9", "--realm", realm)
    assert result.returncode == 2
    assert "argument --realm" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # A URL that is none was a failed connection, exit 1 (QA).
        (["status", "--signaling", "http://x"], "expected a 'ws://host:port' or 'wss://"),
        (["lock", "node.toml", "--signaling", "foo"], "expected a 'ws://host:port' or 'wss://"),
        # Options left unread, silently (QA).
        (["status", "node.toml", "--signaling", "ws://127.0.0.1:9"], "CONFIG or --signaling"),
        (["status", "node.toml", "--realm", "2"], "--realm and --ca-file go with --signaling"),
        (["status", "node.toml", "--ca-file", "ca.pem"], "--realm and --ca-file go with"),
    ],
)
def test_status_and_lock_options_that_do_not_fit_are_usage_errors(args, said):
    result = actrhost(*args)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr.splitlines()[-1], result.stderr  # the one line that says
