"""The ``actrhost`` command: exit codes, one-line errors, call and status output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import actrhost as actrhost_api

from .utils import GREETER, REPO, TESTS_DIR, actrhost_in_background, run, wait_until
from .utils import actrhost_command as actrhost

ECHO = """
[[actor]]
name = "echo"
type = "test+Echo"
handler = "actors:Echo"
"""


def test_call_prints_the_answer(node_factory, tmp_path):
    node = node_factory(ECHO)
    cfg = str(node.config_path)
    result = actrhost("call", cfg, "echo", "test.Echo.Say", "--data", "hello cli")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello cli\n", "")
    result = actrhost("call", cfg, "test+Echo", "test.Echo.Say", "--hex", "00ff", "--output", "hex")
    assert result.stdout == "00ff\n"
    payload = tmp_path / "req.bin"
    payload.write_bytes(b"from a file")
    result = actrhost("call", cfg, "echo", "test.Echo.Say", "--data", f"@{payload}")
    assert result.stdout == "from a file\n"
    result = actrhost("call", cfg, "echo", "test.Echo.Say", "--tell", "--data", "x")
    assert (result.returncode, result.stdout) == (0, "")


def test_call_with_json_finds_the_service_method_by_its_route_key(node_factory):
    node = node_factory(GREETER)
    cfg = str(node.config_path)
    say = ("call", cfg, "greeter", "demo.Greeter.SayHello")
    # The node's handler module imports greeter_pb2: no flag needed to find the types.
    result = actrhost(*say, "--json", '{"name": "cli", "times": 2}')
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"message": "hello, cli hello, cli"}
    result = actrhost(*say, "--json", '{"name": "told"}', "--tell")
    assert (result.returncode, result.stdout) == (0, "")
    # By its control endpoint (no config to read), with the module named.
    endpoint = f"ipc://{node.run_dir / 'control.sock'}"
    result = actrhost(
        "call", endpoint, "greeter", "demo.Greeter.Count", "--json", "{}",
        "--proto-module", "examples.greeter.greeter_pb2",
    )  # fmt: skip
    assert json.loads(result.stdout) == {"greeted": 2}
    # Mistakes are one line, exit 2, nothing sent.
    result = actrhost("call", cfg, "greeter", "demo.Greeter.Wave", "--json", "{}")
    assert (result.returncode, result.stderr) == (
        2,
        "actrhost: --json: demo.Greeter.Wave is not a method of any protobuf service the "
        "node's handler modules or --proto-module import\n",
    )
    result = actrhost(*say, "--json", '{"nam": "x"}')
    assert result.returncode == 2
    assert result.stderr.startswith("actrhost: --json: not a valid demo.HelloRequest: ")
    result = actrhost("call", endpoint, "greeter", "demo.Greeter.Count", "--json", "{}")
    assert result.returncode == 2 and "--proto-module" in result.stderr
    # Taken and left unused, or taken as an empty message (QA).
    result = actrhost(*say, "--json", "[]")
    assert result.returncode == 2
    assert "not a valid demo.HelloRequest: a message is a JSON object" in result.stderr
    result = actrhost(*say, "--json", "{}", "--output", "hex")
    assert (result.returncode, result.stderr) == (
        2,
        "actrhost: call: --output does not apply to --json (the answer is JSON)\n",
    )
    result = actrhost(*say, "--data", "x", "--proto-module", "examples.greeter.greeter_pb2")
    assert (result.returncode, result.stderr) == (
        2,
        "actrhost: call: --proto-module applies only with --json\n",
    )


def test_check_lists_what_would_run_and_starts_nothing(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\nname = "checked"\npython_path = ["{TESTS_DIR}", "{REPO}"]\n'
        + GREETER
        + '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n'
        + "instances = 2\n"
    )
    result = actrhost("check", str(config))
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{config}: ok: node checked, 2 actor(s), 3 instance(s), start_method forkserver, "
        "signaling none (local only)"
    )
    assert lines[2].split() == [
        "greeter", "demo+Greeter", "1", "demo.Greeter.Count,", "demo.Greeter.SayHello",
    ]  # fmt: skip
    assert lines[3].split()[:3] == ["echo", "test+Echo", "2"]
    assert "test.Echo.Say" in lines[3]
    assert not (tmp_path / "run").exists()
    # A route served twice fails every start of its worker: refused here, and by run.
    config.write_text(
        f'[node]\nname = "twice"\npython_path = ["{TESTS_DIR}"]\n'
        '[[actor]]\nname = "t"\ntype = "test+Twice"\nhandler = "actors:TwiceServed"\n'
    )
    expected = (
        f"actrhost: config error: {config}: actor[0].handler: TwiceServed: route "
        "'test.Twice.Say' is served by both say and say_again\n"
    )
    for command in ("check", "run"):
        result = actrhost(command, str(config))
        assert (result.returncode, result.stderr) == (2, expected)


def test_check_keeps_what_a_handler_module_prints_out_of_its_report(tmp_path):
    # A script reads the report from stdout: an import-time print came before "ok:" (QA).
    (tmp_path / "chatty.py").write_text(
        "import os, actrhost\nprint('importing chatty')\nos.write(1, b'and at fd 1\\n')\n"
        "class Chatty(actrhost.Actor):\n    pass\n"
    )
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "chatty"\n[[actor]]\nname = "c"\ntype = "t+C"\nhandler = "chatty:Chatty"\n'
    )
    result = actrhost("check", str(config))
    assert (result.returncode, result.stderr) == (0, "importing chatty\nand at fd 1\n")
    assert result.stdout.startswith(f"{config}: ok: node chatty, 1 actor(s)")


def test_call_errors_are_one_line_with_the_code(node_factory):
    node = node_factory(ECHO)
    cfg = str(node.config_path)
    result = actrhost("call", cfg, "echo", "test.Echo.Fail", "--data", "x")
    assert result.returncode == 1
    assert result.stderr == "actrhost: call failed: 500 HandlerError: ValueError: boom: x\n"
    result = actrhost("call", cfg, "nobody", "test.Echo.Say")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "actrhost: call failed: 404 NotFound: no actor of name 'nobody' on this node (actors: "
    )
    assert "echo" in result.stderr  # the names there are: a typo shows
    result = actrhost("call", cfg, "echo", "test.Echo.Sleep", "--data", "1", "--timeout", "0.2")
    assert result.returncode == 1 and "504 DeadlineExceeded" in result.stderr


def test_status_lists_each_actor_with_counters(node_factory):
    node = node_factory(
        ECHO.replace('handler = "actors:Echo"', 'handler = "actors:Echo"\ninstances = 2')
    )
    cfg = str(node.config_path)
    for _ in range(3):
        actrhost("call", cfg, "echo", "test.Echo.Say", "--data", "x")
    result = actrhost("status", cfg)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == [
        "NAME",
        "ACTR_ID",
        "PID",
        "STATE",
        "RESTARTS",
        "MAILBOX",
        "SERVED",
        "ERRORS",
        "DROPS",
    ]
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["echo#0", "echo#1"]
    # How workers start, and the forkserver's pid.
    forkserver = node.status()["workers_start"]["forkserver_pid"]
    assert lines[4] == f"workers forked by forkserver pid {forkserver} (started 1 time(s))"
    assert all(r[3] == "running" and r[4] == "0" and r[5] == "0" for r in rows)
    assert sum(int(r[6]) for r in rows) == 3
    infos = {str(i.actr_id): i.pid for i in node.actors()}
    assert {r[1]: int(r[2]) for r in rows} == infos
    # Then one row per route, the instances summed (tests/test_metrics.py has more).
    assert lines[5].startswith("routes ")
    assert lines[7].split()[:3] == ["echo", "test.Echo.Say", "3"]
    as_json = actrhost("status", cfg, "--json")
    assert '"calls_served"' in as_json.stdout


def test_bad_config_is_one_line_exit_2_and_nothing_starts(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[node]\nname = "x"\n[[actor]]\nname = "a"\ntype = "t+A"\nhandler = "m:A"\n'
        'restart = "always"\n'
    )
    result = actrhost("run", str(config), timeout=10)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"actrhost: config error: {config}: actor[0].restart: must be one of permanent, "
        "transient, temporary (got 'always')\n"
    )


def config_with_run_dir(tmp_path: Path, run_dir: str) -> Path:
    """A one-actor config ``n.toml`` in ``tmp_path`` with ``[node] run_dir`` set."""
    config = tmp_path / "n.toml"
    config.write_text(
        f'[node]\nname = "x"\nrun_dir = "{run_dir}"\npython_path = ["{TESTS_DIR}"]\n'
        '[[actor]]\nname = "a"\ntype = "t+A"\nhandler = "actors:Echo"\n'
    )
    return config


@pytest.mark.parametrize(
    ("run_dir", "problem"),
    [
        ("/tmp/" + "d" * 90, "is 95 bytes long; the node's socket paths in it must fit in 107"),
        ("/proc/no-such-folder/run", "cannot create /proc/no-such-folder: No such file"),
        ("n.toml/run", "n.toml is not a folder"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_run_dir_that_cannot_hold_the_sockets_is_a_config_error(
    tmp_path, run_dir, problem, command
):
    config = config_with_run_dir(tmp_path, run_dir)
    result = actrhost(command, str(config), timeout=10)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"actrhost: config error: {config}: node.run_dir: ")
    assert problem in line
    assert not Path(run_dir).exists()


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_run_dir_that_is_a_file_is_a_config_error(tmp_path, command):
    # `run` used to end in a NotADirectoryError traceback (exit 1); `check` said it right.
    (tmp_path / "afile").write_text("mine")
    config = config_with_run_dir(tmp_path, "afile")
    result = actrhost(command, str(config), timeout=10)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"actrhost: config error: {config}: node.run_dir: {tmp_path / 'afile'} is not a folder"
    ]
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_run_dir_holding_other_files_is_refused_and_left_alone(tmp_path, command):
    # run_dir = "." beside the config: the node would empty it at start, remove it at stop.
    (tmp_path / "precious.txt").write_text("keep me")
    config = config_with_run_dir(tmp_path, ".")
    result = actrhost(command, str(config), timeout=10)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"actrhost: config error: {config}: node.run_dir: ")
    assert "is a folder with other files in it (n.toml, precious.txt)" in line
    assert (tmp_path / "precious.txt").read_text() == "keep me" and config.exists()


def test_unimportable_handler_is_a_config_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[node]\nname = "x"\n[[actor]]\nname = "a"\ntype = "t+A"\nhandler = "no_such_mod:A"\n'
    )
    result = actrhost("run", str(config), timeout=10)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "actor[0].handler: module 'no_such_mod' not found" in result.stderr


def test_help_everywhere():
    for args in ([], ["run"], ["call"], ["status"]):
        result = actrhost(*args, "--help")
        assert result.returncode == 0 and "usage: actrhost" in result.stdout


def test_missing_arguments_exit_2():
    result = actrhost("call")
    assert result.returncode == 2 and "usage" in result.stderr


def test_call_output_into_a_closed_pipe_stops_quietly(node_factory, tmp_path):
    # `actrhost call ... | head`: the reader leaves early; no traceback, the status a
    # shell gives a process killed by SIGPIPE.
    import subprocess
    import sys

    node = node_factory(ECHO)
    payload = tmp_path / "req.bin"
    payload.write_bytes(b"x" * 1_000_000)  # its hex text overfills the pipe's buffer
    process = subprocess.Popen(
        [sys.executable, "-m", "actrhost", "call", str(node.config_path), "echo",
         "test.Echo.Say", "--data", f"@{payload}", "--output", "hex"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10) == b"7878787878"
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(30) == 141
    assert "Traceback" not in stderr, stderr


def test_status_names_the_ice_host_and_the_gateway_counters_that_are_not_zero():
    from actrhost._status_text import format_status

    gateway = {"pid": 7, "state": "running", "restarts": 0, "signaling": "ws://x:1"}
    quiet = {"node": "a", "actors": [], "gateway": {**gateway, "stats": {"failed_calls": 0}}}
    assert "refused or lost" not in format_status(quiet)
    stats = {"failed_calls": 2, "unintroduced_sources": 3, "undeliverable": 0}
    stats["ice_host_addresses"] = ["10.0.0.5"]
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "  refused or lost: failed_calls 2, unintroduced_sources 3" in text.splitlines()
    assert "signaling ws://x:1, ICE host 10.0.0.5" in text
    assert "held for full links" not in text
    stats["streams_held"] = 12  # stream frames kept for a node whose link is full
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "  stream frames held for full links or slow actors: 12" in text.splitlines()
    assert "waiting for slow actors" not in text
    assert "calls and tells held" not in text
    stats["calls_held"] = 5  # calls and tells kept for a node whose link is full
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "  calls and tells held for full links: 5" in text.splitlines()
    stats["frames_waiting_for_actors"] = 3  # from other nodes, for local actors' sockets
    stats["bytes_waiting_for_actors"] = 3 * 1024 * 1024
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "  frames from other nodes waiting for slow actors: 3 (3.0 MiB)" in text.splitlines()
    assert "event loop blocked" not in text
    stats["loop_blocks"], stats["loop_blocked_seconds"] = 2, 3.5  # the gateway's own loop
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "  event loop blocked: loop_blocks 2, loop_blocked_seconds 3.5" in text
    # A signaling connection that is down, and a gateway that does not answer, show.
    stats["signaling"] = "connecting"
    text = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}})
    assert "signaling ws://x:1 (connecting), ICE host 10.0.0.5" in text
    mute = format_status({"node": "a", "actors": [], "gateway": {**gateway, "stats": {}}})
    assert "  the gateway did not answer the stats request" in mute.splitlines()
    # A remote node's media tracks get a line once a sample went either way.
    media = {"samples_sent": 0, "samples_received": 0, "no_track": 0}
    remote = {"name": "b", "state": "connected", "lanes": {}, "media": media}
    stats["remote_nodes"] = {"n1": remote}
    status = {"node": "a", "actors": [], "gateway": {**gateway, "stats": stats}}
    assert "media tracks" not in format_status(status)
    remote.update(reconnecting=True, state="new")  # after a failure: the next attempt's
    assert "  remote node b (n1): new (reconnecting), " in format_status(status)
    remote["down_because"] = "nothing received for 3 s"  # why the link failed
    assert "  remote node b (n1): new (reconnecting: nothing received for 3 s), " in (
        format_status(status)
    )
    assert "queued for it" not in format_status(status)
    remote.update(refusing=True, connection={"queued_bytes": 8 * 1024 * 1024})  # full
    assert (
        "    8.0 MiB queued for it: its calls fail (503) and its tells are dropped (senders "
        "told) until it is back"
    ) in format_status(status).splitlines()
    del remote["refusing"], remote["connection"]
    remote["state"] = "connected"  # that attempt connected: no contradiction shown
    assert "  remote node b (n1): connected, " in format_status(status)
    remote["doubted_because"] = "node n1 left signaling"  # its probe is out
    assert "  remote node b (n1): connected (being checked: node n1 left signaling), " in (
        format_status(status)
    )
    remote["doubted_because"] = ""
    # One outage that took six failed attempts to end: the link lost, and the attempts.
    remote.update(connects=2, links_lost=1, failures=7)
    assert "connects 2, links lost 1, failures 7, malformed 0" in format_status(status)
    assert "duplicates dropped" not in format_status(status)
    remote["duplicates_dropped"] = 4  # frames sent again after a failure that it had
    assert "malformed 0, duplicates dropped 4" in format_status(status)
    remote["reconnecting"] = False
    media.update(samples_sent=40, no_track=3)
    assert (
        "    media tracks          out 40 samples, in 0, dropped 0, no free track 3, "
        "unmatched 0" in format_status(status).splitlines()
    )


def test_stop_stops_a_running_node_and_waits_until_it_is_gone(node_factory):
    node = node_factory(ECHO)
    result = actrhost("stop", str(node.config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stopped in ")
    assert node.process is not None and node.process.wait(5) == 0
    assert not node.run_dir.exists()
    # Nothing runs there any more: one line, exit status 1.
    again = actrhost("stop", str(node.config_path))
    assert again.returncode == 1
    assert again.stderr.startswith("actrhost: stop: no node running at ")
    assert "start one with `actrhost run CONFIG`" in again.stderr  # what to do next
    assert len(again.stderr.strip().splitlines()) == 1
    version = actrhost("--version")
    assert (version.returncode, version.stdout) == (0, f"actrhost {actrhost_api.__version__}\n")


def test_stop_says_when_the_supervisor_was_killed_before_its_stop_was_through(node_factory):
    # It printed "stopped in … ms", exit 0: the run dir went, removed by the last worker
    # out (QA).
    node = node_factory(ECHO, "shutdown_grace_s = 20\n")  # the stop waits for the handler
    cfg = str(node.config_path)
    with actrhost_in_background("call", cfg, "echo", "test.Echo.Sleep", "--data", "30"):
        wait_until(lambda: node.actors()[0].state == "running", 5, "the echo")
        time.sleep(0.3)  # the handler runs
        with actrhost_in_background("stop", cfg) as stop:
            node.wait_for_log("shutting down", 10)
            assert node.process is not None
            node.process.send_signal(signal.SIGKILL)
            _, stderr = stop.communicate(timeout=20)
    assert stop.returncode == 1
    assert stderr == (
        f"actrhost: stop: the node's supervisor (pid {node.process.pid}) exited before its "
        "stop was through (killed?); its workers end by themselves\n"
    )


def test_a_config_file_that_does_not_parse_still_finds_its_running_node(node_factory):
    # Half-way through an edit: the node runs from its own copy, and the CLI finds it by
    # the file's path alone.
    node = node_factory(ECHO)
    cfg = str(node.config_path)
    node.config_path.write_text(node.config_path.read_text() + "\n[[actor\n")
    status = actrhost("status", cfg)
    assert status.returncode == 0, status.stderr
    assert "echo#0" in status.stdout
    call = actrhost("call", cfg, "echo", "test.Echo.Say", "--data", "still here")
    assert call.stdout == "still here\n"
    restart = actrhost("restart", cfg)
    assert restart.returncode == 1
    assert restart.stderr.startswith("actrhost: restart: nothing restarted: config error: ")
    stop = actrhost("stop", cfg)
    assert stop.returncode == 0, stop.stderr
    assert not node.run_dir.exists()
    # No node runs from it any more: the config error, exit 2.
    again = actrhost("status", cfg)
    assert again.returncode == 2
    assert again.stderr.startswith(f"actrhost: config error: {cfg}: invalid TOML: ")


def test_a_node_whose_name_was_edited_is_still_its_files_node(node_factory):
    # The run dir is named after the node: the CLI looked in the new name's, found no
    # node, and `run` started a second one from the same file (QA).
    node = node_factory(ECHO)
    cfg = str(node.config_path)
    node.config_path.write_text(node.config_path.read_text().replace('name = "t', 'name = "u', 1))
    call = actrhost("call", cfg, "echo", "test.Echo.Say", "--data", "still here")
    assert call.stdout == "still here\n", call.stderr
    second = actrhost("run", cfg)
    assert second.returncode == 1
    assert f"a node started from this config runs in {node.run_dir}" in second.stderr
    restart = actrhost("restart", cfg)  # what it cannot apply, it names
    assert restart.returncode == 1
    assert "[node] changed (name)" in restart.stderr, restart.stderr
    stop = actrhost("stop", cfg)
    assert stop.returncode == 0, stop.stderr
    assert not node.run_dir.exists()


def test_a_node_is_found_through_a_symlink_to_its_config_folder(node_factory, tmp_path):
    node = node_factory(ECHO)
    link = tmp_path / "link"
    link.symlink_to(node.config_path.parent, target_is_directory=True)
    via_link = str(link / node.config_path.name)
    result = actrhost("call", via_link, "echo", "test.Echo.Say", "--data", "x")
    assert (result.returncode, result.stdout) == (0, "x\n"), result.stderr
    second = actrhost("run", via_link)  # the same file: the same node
    assert second.returncode == 1 and "already running" in second.stderr
    assert f"(`actrhost stop {via_link}` stops it)" in second.stderr


def test_wait_fails_at_once_when_an_instance_was_given_up_on(node_factory):
    crash = '[[actor]]\nname = "crash"\ntype = "test+Crash"\nhandler = "actors:CrashOnStart"\n'
    node = node_factory(ECHO + crash + "max_restarts = 1\n", start=False)
    node.spawn()
    started = time.monotonic()
    waited = actrhost("wait", str(node.config_path), "--timeout", "60", timeout=90)
    assert waited.returncode == 1
    assert waited.stderr.startswith("actrhost: wait: crash (")
    assert "failed and will not be restarted" in waited.stderr
    assert time.monotonic() - started < 30


def test_wait_fails_at_once_when_the_node_dies_while_starting(node_factory):
    # It waited out its --timeout, then blamed the actors (QA).
    stuck = '[[actor]]\nname = "stuck"\ntype = "test+Stuck"\nhandler = "actors:StuckStart"\n'
    node = node_factory(stuck, start=False)
    node.spawn()
    with actrhost_in_background("wait", str(node.config_path), "--timeout", "60") as waiting:

        def starting() -> bool:
            try:
                return [a.state.value for a in node.actors()] == ["starting"]
            except actrhost_api.ActrError:
                return False  # not listening yet

        wait_until(starting, 20, "the instance to be starting")
        # A Shell's socket in the run dir: `wait` has attached, and waits for the instance.
        shell_socket = f"s{waiting.pid:x}.*.sock"
        wait_until(lambda: any(node.run_dir.glob(shell_socket)), 20, "`wait` to attach")
        killed_at = time.monotonic()
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert time.monotonic() - killed_at < 10
    assert "is gone: its supervisor (pid" in stderr, stderr
    # The orphaned worker notices its supervisor's death and clears up (under load this
    # takes longer than the 5 s the fixture's teardown waits).
    wait_until(lambda: not node.run_dir.exists(), 30, "the run dir to be removed")


def test_a_node_that_does_not_answer_is_named_within_the_commands_timeout(node_factory):
    # With its supervisor stopped (SIGSTOP), `call --timeout 1` took 5.9 s and said only
    # "no node answered" (QA).
    node = node_factory(ECHO)
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = actrhost("call", str(node.config_path), "echo", "test.Echo.Say", "--timeout", "1")
        took = time.monotonic() - started
    finally:
        os.kill(node.process.pid, signal.SIGCONT)
    assert result.returncode == 1
    assert "504 DeadlineExceeded: the call's --timeout of 1 s passed while attaching" in (
        result.stderr
    )
    assert f"its supervisor (pid {node.process.pid}) runs but does not answer" in result.stderr
    assert took < 4.0, took


def test_a_call_whose_timeout_ends_while_attaching_to_a_healthy_node_is_504(node_factory):
    # A 503 said its supervisor "runs but does not answer (stopped, or too busy?)" (QA).
    node = node_factory(ECHO)
    args = ("call", str(node.config_path), "echo", "test.Echo.Say", "--timeout", "0.00001")
    result = actrhost(*args)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "actrhost: call failed: 504 DeadlineExceeded: the call's --timeout of 1e-05 s passed "
        "while attaching to the node"
    ), result.stderr


def test_wait_names_the_instances_it_waited_for(node_factory):
    stuck = '[[actor]]\nname = "stuck"\ntype = "test+Stuck"\nhandler = "actors:StuckStart"\n'
    node = node_factory(ECHO + stuck, start=False)
    node.spawn()
    waited = actrhost("wait", str(node.config_path), "--timeout", "3")
    assert waited.returncode == 1
    # Which one (it said "not all its actors running", QA).
    assert "not all its actors running (stuck#0 starting) after 3 s" in waited.stderr


def test_wait_counts_a_job_that_finished_cleanly_as_done(node_factory):
    job = (
        '[[actor]]\nname = "job"\ntype = "test+Job"\nhandler = "actors:OneShot"\n'
        'restart = "transient"\n'
    )
    node = node_factory(ECHO + job, start=False)
    node.spawn()

    def job_done() -> bool:
        try:
            return [a.state.value for a in node.actors() if a.name == "job"] == ["stopped"]
        except actrhost_api.ActrError:
            return False  # not listening yet

    wait_until(job_done, 15, "the job to finish")
    waited = actrhost("wait", str(node.config_path), "--timeout", "10")
    assert waited.returncode == 0, waited.stderr  # it said "job … stopped and will not be
    # restarted", exit 1, while /readyz said ok
    # The job is counted as finished, not as running (QA).
    assert waited.stdout.startswith(
        "1 instance(s) of 1 actor(s) running, 1 finished (exit code 0) after "
    ), waited.stdout


def test_wait_returns_once_a_node_started_in_the_background_runs(node_factory):
    node = node_factory(ECHO, start=False)
    not_yet = actrhost("wait", str(node.config_path), "--timeout", "0.3")
    assert not_yet.returncode == 1
    assert not_yet.stderr.startswith("actrhost: wait: no node answering after 0.3 s at ")
    node.spawn()  # as a script would: start it in the background, wait, use it, stop it
    waited = actrhost("wait", str(node.config_path))
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith("1 instance(s) of 1 actor(s) running after ")
    assert (
        actrhost("call", str(node.config_path), "echo", "test.Echo.Say", "--data", "x").stdout
        == "x\n"
    )
    assert actrhost("stop", str(node.config_path)).returncode == 0


def test_a_timeout_that_is_no_number_of_seconds_is_a_usage_error(node_factory):
    node = node_factory(ECHO)
    for timeout in ("nan", "inf", "1e300", "0", "-1"):
        refused = actrhost("call", str(node.config_path), "echo", "x.Y", f"--timeout={timeout}")
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1] == (
            f"actrhost call: error: argument --timeout: must be more than 0 s and at most a "
            f"year, not {timeout}"
        )

    async def go() -> None:  # the API says so too, before anything is sent
        async with actrhost_api.connect(node.config_path) as shell:
            for timeout in (float("nan"), float("inf"), 1e300):
                with pytest.raises(ValueError, match="timeout must be a number of seconds"):
                    await shell.call("echo", "test.Echo.Say", b"x", timeout=timeout)
            assert await shell.call("echo", "test.Echo.Say", b"x") == b"x"

    run(go())


def test_names_and_endpoints_a_node_cannot_take_are_usage_errors(node_factory):
    node = node_factory(ECHO)
    config = str(node.config_path)
    for args, message in [
        (("call", config, "echo", ""), "argument route_key: must not be empty"),
        (("call", config, "echo", "\udcff\udcfe"), "argument route_key: not valid UTF-8"),
        (("status", "tcp://127.0.0.1:1"), "give the node's config path or its ipc:// control"),
        (("stop", "http://x"), "give the node's config path or its ipc:// control"),
        (("load", config, "--target", "echo", "--stream", "--stream-id="), "must not be empty"),
    ]:
        refused = actrhost(*args)
        assert refused.returncode == 2, refused
        assert message in refused.stderr.splitlines()[-1]
        assert "Traceback" not in refused.stderr
    # Payload text that is not UTF-8 is sent as the bytes given (it was a traceback).
    sent = actrhost("call", config, "echo", "test.Echo.Say", "--data", "\udcffok", "--output=hex")
    assert sent.returncode == 0 and sent.stdout.strip() == "ff6f6b"


def test_status_names_actors_that_lost_things_or_did_not_answer():
    from actrhost._status_text import format_status

    def actor(index: int, state: str, stats: dict) -> dict:
        entry = {"name": "e", "index": index, "id": f"{index}@1:t+E", "pid": 9, "restarts": 0}
        return {**entry, "state": state, "stats": stats}

    status = {
        "node": "n",
        "actors": [
            actor(0, "running", {"malformed_frames": 3, "streams_in": {"malformed": 2}}),
            # Chunks for a stream nobody registered: DROPS alone gave no reason (QA).
            actor(3, "running", {"streams_in": {"unregistered": 5}}),
            # Every drop in DROPS is named (dropped_receiver was not, QA).
            actor(4, "running", {"streams_in": {"dropped_receiver": 7}}),
            actor(5, "running", {"streams_out": {"dropped_sender": 8}}),
            actor(1, "running", {}),  # its counters did not come: busy or SIGSTOPped
            actor(2, "failed", {}),
        ],
    }
    lines = format_status(status).splitlines()
    assert "  e#0 refused or lost: malformed_frames 3, streams_in.malformed 2" in lines
    assert "  e#1 did not answer the stats request: busy or stuck" in lines
    assert "  e#3 refused or lost: streams_in.unregistered 5" in lines
    assert "  e#4 refused or lost: streams_in.dropped_receiver 7" in lines
    assert "  e#5 refused or lost: streams_out.dropped_sender 8" in lines
    assert not any(line.startswith("  e#2") for line in lines)


def test_status_shows_why_an_instance_is_not_running_and_no_gone_pid():
    from actrhost._status_text import format_status

    def actor(index: int, state: str, error: str = "", stats: dict | None = None) -> dict:
        entry = {"name": "e", "index": index, "id": f"{index}@1:t+E", "pid": 40 + index}
        return {**entry, "restarts": 0, "state": state, "stats": stats, "error": error}

    route = {"calls": 1, "tells": 0, "expired": 0, "errors": {}}
    stats = {"routes": {"t.E.Say\nx": route, "t.E.Odd\tname": route}}
    status = {
        "node": "n",
        "actors": [
            actor(0, "running", stats=stats),
            actor(1, "failed", "gave up after 3 restarts within 30s (max_restarts=3); x"),
            actor(2, "stopped"),  # a job that finished: nothing to explain
        ],
    }
    lines = format_status(status).splitlines()
    pids = {line.split()[0]: line.split()[2] for line in lines[2:5]}
    assert pids == {"e#0": "40", "e#1": "-", "e#2": "-"}  # 41 and 42 are gone
    assert "  e#1 failed: gave up after 3 restarts within 30s (max_restarts=3); x" in lines
    assert not any(line.startswith("  e#2") for line in lines)
    # A route name holding a newline or a tab stays on its row, escaped.
    routes = [line for line in lines if line.startswith("e ")]
    assert [line.split()[1] for line in routes] == ["t.E.Odd\\tname", "t.E.Say\\nx"]


def test_run_takes_a_log_level_in_any_case():
    # Python's logging spells them DEBUG, INFO…: `run --log-level DEBUG` was refused.
    from actrhost._cli import build_parser

    for given in ("DEBUG", "Info", "warning"):
        args = build_parser().parse_args(["run", "node.toml", "--log-level", given])
        assert args.log_level == given.lower()


def test_a_payload_file_larger_than_any_message_is_refused_unread(tmp_path):
    # `--data @/dev/zero` read until memory ran out (QA). A regular file is judged by its
    # size, anything else read up to the largest message a node takes (1 GiB), plus one.
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(2 * 2**30)  # sparse: nothing is written
    config = str(tmp_path / "node.toml")  # no node needed: refused before connecting
    result = actrhost("call", config, "echo", "test.Echo.Say", "--data", f"@{big}", timeout=20)
    assert (result.returncode, result.stderr) == (
        2,
        f"actrhost: --data: {big} holds 2,147,483,648 bytes: more than the largest "
        "message any node takes (1 GiB)\n",
    )
    # With the node's config: up to its max_message_bytes (1 GiB of /dev/zero read first
    # cost 1 GiB of memory, QA).
    config = tmp_path / "small.toml"
    config.write_text(
        '[node]\nname = "x"\nmax_message_bytes = 1024\n'
        '[[actor]]\nname = "a"\ntype = "t+A"\nhandler = "m:A"\n'
    )
    result = actrhost("call", str(config), "a", "t.A.R", "--data", "@/dev/zero", timeout=20)
    assert (result.returncode, result.stderr) == (
        2,
        "actrhost: --data: /dev/zero holds more than the node's max_message_bytes (1.0 KiB)\n",
    )
    from actrhost._load import _payload

    limit = _payload.MessageLimit(1000, "1000 B")
    reading, writing = os.pipe()
    try:
        os.write(writing, b"x" * 1000)
        os.close(writing)
        assert _payload.read_payload_file(Path(f"/proc/self/fd/{reading}"), limit) == b"x" * 1000
    finally:
        os.close(reading)


def test_a_node_is_reached_through_a_relative_ipc_path(node_factory):
    # The Shell named its own socket relative to our folder: the supervisor refused it,
    # and the Shell took the refusal for an attach, its calls all 404 (QA).
    node = node_factory(ECHO)
    here = node.run_dir.parent  # not the node's folder
    relative = f"ipc://{node.run_dir.name}/control.sock"
    args = ("call", relative, "echo", "test.Echo.Say", "--data", "hi")
    result = subprocess.run(
        [sys.executable, "-m", "actrhost", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def test_a_shell_whose_attach_is_refused_says_so(node_factory, monkeypatch):
    from actrhost._shell import Shell

    node = node_factory(ECHO)
    fields = Shell._attach_fields

    def elsewhere(self):
        return {**fields(self), "endpoint": "ipc:///tmp/s1.ab.sock"}

    monkeypatch.setattr(Shell, "_attach_fields", elsewhere)

    async def go() -> None:
        with pytest.raises(actrhost_api.BadRequest, match="refused the attach: endpoint"):
            async with actrhost_api.connect(node.config_path):
                pass

    run(go())
