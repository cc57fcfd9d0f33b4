"""``[node] metrics_listen``: the Prometheus page, its per-route histograms, the status
table's route rows, and an address that cannot be bound."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import actrhost
from actrhost._histogram import Histogram
from actrhost._metrics import CONTENT_TYPE, MAX_CONNECTIONS, health, render_metrics
from actrhost._status_text import format_status

from .utils import REPO, Node, children_of, run, wait_until
from .utils import actrhost_command as cli

ECHO = """
[[actor]]
name = "echo"
type = "test+Echo"
handler = "actors:Echo"
instances = 2
"""
METRICS = 'metrics_listen = "127.0.0.1:0"'


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The page's content type and every sample by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return content_type, samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def http(url: str, data: bytes | None = None) -> int:
    return http_answer(url, data)[0]


def http_answer(url: str, data: bytes | None = None) -> tuple[int, str]:
    """Status code and body of one request."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_page_counts_calls_errors_and_times_per_route(node_factory):
    node = node_factory(ECHO, METRICS)
    url = node.status()["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    async def traffic() -> None:
        async with actrhost.connect(node.config_path) as shell:
            for _ in range(5):
                assert await shell.call("echo", "test.Echo.Say", b"x", timeout=5) == b"x"
            with pytest.raises(actrhost.HandlerError):
                await shell.call("echo", "test.Echo.Fail", b"x", timeout=5)
            with pytest.raises(actrhost.Unavailable):
                await shell.call("echo", "test.Echo.Unavailable", b"x", timeout=5)
            await shell.call("echo", "test.Echo.Sleep", b"0.06", timeout=5)

    run(traffic())
    content_type, samples = scrape(url)
    assert content_type == CONTENT_TYPE
    echo = {"actor": "echo", "type": "test+Echo"}
    assert total(samples, "actrhost_actor_up", **echo) == 2
    assert total(samples, "actrhost_calls_served_total", **echo) == 6
    say = {**echo, "route": "test.Echo.Say"}
    assert total(samples, "actrhost_route_calls_total", **say) == 5
    assert total(samples, "actrhost_route_handled_seconds_count", **say) == 5
    assert total(samples, "actrhost_route_queued_seconds_count", **say) == 5
    fail = {**echo, "route": "test.Echo.Fail"}
    assert total(samples, "actrhost_route_errors_total", **fail, code="500") == 1
    assert total(samples, "actrhost_route_calls_total", **fail) == 0
    unavailable = {**echo, "route": "test.Echo.Unavailable", "code": "503"}
    assert total(samples, "actrhost_route_errors_total", **unavailable) == 1
    # The 60 ms sleep lands in the buckets above 50 ms and in none below.
    sleep = {**echo, "route": "test.Echo.Sleep"}
    assert total(samples, "actrhost_route_handled_seconds_bucket", **sleep, le="0.05") == 0
    assert total(samples, "actrhost_route_handled_seconds_bucket", **sleep, le="0.1") == 1
    assert 0.06 <= total(samples, "actrhost_route_handled_seconds_sum", **sleep) < 1.0

    # The status table shows the same, summed over the instances.
    status = cli("status", str(node.config_path))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert f"metrics at {url}" in lines
    say_row = next(line.split() for line in lines if "test.Echo.Say" in line)
    assert say_row[:6] == ["echo", "test.Echo.Say", "5", "0", "0", "0"]
    fail_row = next(line.split() for line in lines if "test.Echo.Fail" in line)
    assert fail_row[:6] == ["echo", "test.Echo.Fail", "0", "0", "1", "0"]


def test_metrics_endpoint_refuses_what_is_not_a_scrape_and_keeps_serving(node_factory):
    node = node_factory(ECHO, METRICS)
    url = node.status()["metrics"]
    root = url.removesuffix("metrics")
    assert http(root + "nothing-here") == 404
    assert http(url, data=b"x=1") == 405  # a POST
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    # A request head over the limit, a garbage line and a client that says nothing and
    # hangs up: each costs its own connection only.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /" + b"x" * 10_000 + b" HTTP/1.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x00\xff garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 405 ")
    socket.create_connection((host, int(port)), timeout=10).close()
    assert http(url) == 200
    assert node.status()["actors"][0]["state"] == "running"


def test_silent_connections_are_bounded_and_cannot_block_scrapes(node_factory):
    node = node_factory(ECHO, METRICS)
    url = node.status()["metrics"]
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    silent = [
        socket.create_connection((host, int(port)), timeout=10) for _ in range(MAX_CONNECTIONS)
    ]
    try:
        # The server has taken them all (each waits for its request head): one more is
        # closed at once, without an answer.
        wait_until(
            lambda: _closed_at_once(host, int(port)), 10, "connections beyond the limit closed"
        )
    finally:
        for sock in silent:
            sock.close()
    wait_until(lambda: http(url) == 200, 10, "the page once the silent clients left")


def _closed_at_once(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


def test_concurrent_scrapes_all_get_the_page(node_factory):
    node = node_factory(ECHO, METRICS)
    url = node.status()["metrics"]

    async def scrapes() -> list[str]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            *(loop.run_in_executor(None, lambda: scrape(url)[0]) for _ in range(8))
        )

    assert run(scrapes()) == [CONTENT_TYPE] * 8


def run_with_port_taken(
    tmp_path: Path, node_toml: str
) -> tuple[subprocess.CompletedProcess[str], Node, int]:
    """Run a node whose ``node_toml`` names ``{port}``, a loopback port already bound."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, node = run_node(tmp_path, node_toml.format(port=port))
    return result, node, port


def run_node(tmp_path: Path, node_toml: str) -> tuple[subprocess.CompletedProcess[str], Node]:
    """``actrhost run`` of a node of one echo actor and ``node_toml``, to its end."""
    node = Node(tmp_path, ECHO, node_toml)
    result = subprocess.run(
        [sys.executable, "-m", "actrhost", "run", str(node.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    return result, node


def assert_one_error_line(result: subprocess.CompletedProcess[str], ending: str) -> None:
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(ending), result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_address_in_use_fails_the_node_before_anything_starts(tmp_path):
    result, node, port = run_with_port_taken(tmp_path, 'metrics_listen = "127.0.0.1:{port}"')
    assert_one_error_line(result, f"[node] metrics_listen 127.0.0.1:{port}: Address already in use")
    assert "starting" not in result.stderr  # no forkserver, no worker was started
    assert not node.run_dir.exists()


def test_embedded_signaling_address_in_use_is_one_line_too(tmp_path):
    # It was a traceback, and exit code 1 by luck.
    signaling = '\n[signaling]\nurl = "embedded"\nlisten = "127.0.0.1:{port}"\n'
    result, node, port = run_with_port_taken(tmp_path, signaling)
    assert_one_error_line(result, f"[signaling] listen 127.0.0.1:{port}: Address already in use")
    assert not node.run_dir.exists()


NOT_OURS = "'192.0.2.1:0' is not an address of this host"
NO_NAME = "'no-such-host.invalid:0': its host name does not resolve"


@pytest.mark.parametrize(
    ("node_toml", "key", "problem"),
    [
        ('metrics_listen = "192.0.2.1:0"', "node.metrics_listen", NOT_OURS),
        ('\n[signaling]\nurl = "embedded"\nlisten = "192.0.2.1:0"\n', "signaling.listen", NOT_OURS),
        # A name that does not resolve: exit 1 and "Unknown error -2" at run (QA).
        ('metrics_listen = "no-such-host.invalid:0"', "node.metrics_listen", NO_NAME),
        # The node ran, and the other node's callers waited 10 s to learn nothing (QA).
        (
            '\n[signaling]\nurl = "embedded"\n[webrtc]\nice_host_addresses = ["192.0.2.1"]\n',
            "webrtc.ice_host_addresses[0]",
            "'192.0.2.1' is not an address of this host",
        ),
    ],
)
def test_an_address_this_host_does_not_have_is_a_config_error(tmp_path, node_toml, key, problem):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, nothing is sent.
    # One line, before anything starts (an INFO line of the embedded server came first),
    # and `check` says it too (it said ok: QA).
    said = f"actrhost: config error: {{}}: {key}: {problem}"
    result, node = run_node(tmp_path, node_toml)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(said.format(node.config_path)), result.stderr
    assert not node.run_dir.exists()
    checked = subprocess.run(
        [sys.executable, "-m", "actrhost", "check", "node.toml"],
        capture_output=True,
        text=True,
        cwd=node.config_path.parent,
        timeout=30,
    )
    assert checked.returncode == 2
    assert checked.stderr.startswith(said.format("node.toml")), checked.stderr  # as given


def test_render_metrics_exports_the_gateway_and_remote_nodes():
    lane = {"frames_out": 3, "bytes_out": 303, "frames_in": 3, "bytes_in": 57, "dropped": 1}
    status = {
        "node": 'odd "name"',
        "segments_reclaimed": 2,
        "actors": [],
        "gateway": {
            "state": "running",
            "restarts": 1,
            "stats": {
                "signaling": "connected",
                "registered": 1,
                "pending_out": 0,
                "pending_in": 0,
                "streams_held": 5,
                "calls_held": 6,
                "frames_waiting_for_actors": 7,
                "bytes_waiting_for_actors": 7000,
                "ice_host_addresses": ["127.0.0.1"],
                "calls_out": 3,
                "failed_calls": 0,
                "remote_nodes": {
                    "3a576e28d344267d": {
                        "name": "echo-a",
                        "state": "connected",
                        "connects": 1,
                        "failures": 0,
                        "links_lost": 2,
                        "in_doubt_cleared": 4,
                        "since": 1765170000.5,
                        "reconnecting": False,
                        "malformed": 0,
                        "lanes": {"rpc_reliable": lane},
                        "media": {"samples_sent": 40, "no_track": 3},
                    }
                },
            },
        },
    }
    samples = {}
    for family in text_string_to_metric_families(render_metrics(status)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    node = {"node": 'odd "name"'}  # escaped on the page, read back as it was
    assert total(samples, "actrhost_shm_segments_reclaimed_total", **node) == 2
    assert total(samples, "actrhost_gateway_up", **node) == 1
    assert total(samples, "actrhost_gateway_restarts_total", **node) == 1
    assert total(samples, "actrhost_gateway_signaling_connected", **node) == 1
    assert total(samples, "actrhost_gateway_calls_out_total", **node) == 3
    assert total(samples, "actrhost_gateway_registered", **node) == 1
    assert total(samples, "actrhost_gateway_streams_held", **node) == 5  # a gauge: no _total
    assert total(samples, "actrhost_gateway_calls_held", **node) == 6  # (was a counter, QA)
    assert total(samples, "actrhost_gateway_frames_waiting_for_actors", **node) == 7
    assert total(samples, "actrhost_gateway_bytes_waiting_for_actors", **node) == 7000
    remote = {"remote_node": "3a576e28d344267d", "remote_name": "echo-a"}
    assert total(samples, "actrhost_remote_connected", **remote) == 1
    # Every counter of a remote node (a list of them left links_lost out, QA), not `since`.
    assert total(samples, "actrhost_remote_links_lost_total", **remote) == 2
    assert total(samples, "actrhost_remote_in_doubt_cleared_total", **remote) == 4
    assert not [name for name, _ in samples if "since" in name or "reconnecting" in name]
    lane_labels = {**remote, "lane": "rpc_reliable"}
    assert total(samples, "actrhost_remote_lane_bytes_out_total", **lane_labels) == 303
    assert total(samples, "actrhost_remote_lane_dropped_total", **lane_labels) == 1
    assert total(samples, "actrhost_remote_media_samples_sent_total", **remote) == 40
    assert total(samples, "actrhost_remote_media_no_track_total", **remote) == 3


def test_histogram_counts_at_or_below_bounds():
    hist = Histogram(5)
    for value in (100, 5_000, 5_000, 1_000_000):
        hist.record(value)
    # A bucket counts below a bound once it ends there: 100 is in [100, 101].
    assert hist.counts_at_or_below([50, 101, 4_000, 6_000, 10**9]) == [0, 1, 1, 3, 4]
    assert hist.counts_at_or_below([100]) == [0]
    assert Histogram(5).counts_at_or_below([1, 2]) == [0, 0]


def test_no_metrics_without_the_key(node_factory):
    node = node_factory(ECHO)
    assert node.status()["metrics"] is None
    assert children_of(node.process.pid)  # the node runs; it just serves no page


def test_route_timings_off_keeps_the_counts_and_drops_the_histograms(node_factory):
    node = node_factory(ECHO, METRICS + "\nroute_timings = false")
    for _ in range(3):
        assert cli("call", str(node.config_path), "echo", "test.Echo.Say").returncode == 0
    _, samples = scrape(node.status()["metrics"])
    say = {"actor": "echo", "route": "test.Echo.Say"}
    assert total(samples, "actrhost_route_calls_total", **say) == 3
    assert not [
        name for name, _ in samples if name.startswith("actrhost_route_") and "_seconds" in name
    ]
    status = cli("status", str(node.config_path))
    row = next(line.split() for line in status.stdout.splitlines() if "test.Echo.Say" in line)
    assert row == ["echo", "test.Echo.Say", "3", "0", "0", "0", "-", "-", "-", "-"]


def test_a_status_asked_while_the_node_starts_its_servers_names_the_metrics_endpoint(
    node_factory, tmp_path
):
    # The control socket is bound before the metrics server starts: a status read in
    # between said "metrics": None (test_health_and_readiness_probes failed once on it).
    # The supervisor now reads its control socket once its servers are up. Here the
    # metrics server takes 1 s to start (a sitecustomize in the supervisor's process).
    patch = tmp_path / "slow-metrics"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import asyncio\n"
        "from actrhost import _supervisor\n"
        "start_metrics = _supervisor.start_metrics\n"
        "async def slow(*args, **kwargs):\n"
        "    await asyncio.sleep(1.0)\n"
        "    return await start_metrics(*args, **kwargs)\n"
        "_supervisor.start_metrics = slow\n"
    )
    node = node_factory(ECHO, METRICS, start=False).spawn(env={"PYTHONPATH": str(patch)})
    wait_until(lambda: (node.run_dir / "control.sock").exists(), 20, "the node's control socket")
    assert str(node.status()["metrics"]).startswith("http://127.0.0.1:")


def test_health_and_readiness_probes(node_factory):
    node = node_factory(
        ECHO
        + """
        [[actor]]
        name = "crash"
        type = "test+Crash"
        handler = "actors:CrashOnStart"
        max_restarts = 1
        """,
        METRICS,
        start=False,
    ).spawn()
    wait_until(lambda: (node.run_dir / "control.sock").exists(), 20, "the node's control socket")
    root = node.status()["metrics"].removesuffix("metrics")
    wait_until(lambda: http(root + "healthz") == 503, 20, "the supervisor to give up on crash")
    assert http_answer(root + "healthz") == (503, "crash#0 failed\n")
    assert http_answer(root + "readyz") == (503, "crash: failed\n")
    assert http_answer(root) == (200, "actrhost node: GET /metrics, /healthz, /readyz\n")
    node.process.terminate()  # a node whose actor failed never reports ready: stop it here
    node.process.wait(20)


def test_a_node_that_runs_is_healthy_and_ready(node_factory):
    node = node_factory(ECHO, METRICS)
    root = node.status()["metrics"].removesuffix("metrics")
    assert http_answer(root + "healthz") == (200, "ok\n")
    assert http_answer(root + "readyz") == (200, "ok\n")


def test_a_stopping_node_is_not_ready(node_factory):
    # It said "ok" until the gateway stopped, and again once its instances had stopped
    # cleanly (QA): a load balancer kept sending to a node going away.
    node = node_factory(
        '[[actor]]\nname = "slow"\ntype = "test+SlowStop"\nhandler = "actors:SlowStop"\n',
        METRICS + "\nshutdown_grace_s = 30",
    )
    root = node.status()["metrics"].removesuffix("metrics")
    assert http_answer(root + "readyz") == (200, "ok\n")
    node.process.send_signal(signal.SIGINT)  # on_stop takes a minute: it stays stopping
    wait_until(lambda: "shutting down" in node.log(), 10, "the stop to begin")
    status, text = http_answer(root + "readyz")
    assert status == 503 and text.startswith("node: stopping\n"), text
    assert http_answer(root + "healthz") == (200, "ok\n")  # stopping is not unhealthy
    time.sleep(0.5)  # a second Ctrl-C (not the first one delivered twice) ends on_stop
    assert node.stop(signal.SIGINT, timeout_s=15) == 0


def test_readiness_needs_one_running_instance_per_actor_and_the_gateway():
    def directory(*states: tuple[str, str], gateway_pid: int | None = 1) -> dict:
        # "failed!": failed and given up; "failed": failed in on_start, to be restarted.
        actors = [
            {"name": n, "index": i, "state": s.rstrip("!"), "given_up": s.endswith("!")}
            for i, (n, s) in enumerate(states)
        ]
        return {"actors": actors, "gateway": "ipc://g", "gateway_pid": gateway_pid}

    # One instance of two restarting is enough; an actor that finished cleanly is too.
    assert health(directory(("a", "running"), ("a", "starting"), ("b", "stopped"))) == ([], [])
    assert health(directory(("a", "starting"), ("a", "dead"), ("b", "stopping"))) == (
        [],
        ["a: dead, starting", "b: stopping"],
    )
    assert health(directory(("a", "running"), ("a", "failed!"), gateway_pid=None)) == (
        ["a#1 failed"],
        ["gateway: not running"],
    )
    # Failed in on_start and about to be restarted: not ready, but not given up on (the
    # probe once said "failed" between a first failure and its restart).
    assert health(directory(("a", "failed"))) == ([], ["a: failed"])
    no_gateway = {"actors": [{"name": "a", "index": 0, "state": "running"}], "gateway": None}
    assert health(no_gateway) == ([], [])


def test_a_blocked_worker_keeps_its_series_with_their_age(node_factory):
    node = node_factory(
        """
        [[actor]]
        name = "t"
        type = "test+Load"
        handler = "actors:LoadTarget"
        """,
        METRICS,
    )
    url = node.status()["metrics"]
    labels = {"actor": "t", "type": "test+Load"}

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            assert await shell.call("t", "test.Load.Say", b"x", timeout=5) == b"x"
            _, before = await asyncio.to_thread(scrape, url)
            assert total(before, "actrhost_stats_age_seconds", **labels) == 0
            # A synchronous 3 s sleep in a handler: the worker answers no stats request.
            stall = asyncio.ensure_future(
                shell.call("t", "test.Load.StallOnce", b"3@0", timeout=10)
            )
            await asyncio.sleep(0.3)
            _, during = await asyncio.to_thread(scrape, url)
            status = await shell.status()
            assert await stall == b"ok"
        # The series go on with the counters it sent last, and say how old they are.
        assert total(during, "actrhost_calls_served_total", **labels) == 1
        assert total(during, "actrhost_stats_age_seconds", **labels) >= 0.5
        (actor,) = status["actors"]
        assert actor["stats"]["calls_served"] == 1 and actor["stats_age_s"] >= 0.5
        text = format_status(status)
        assert "t#0 did not answer the stats request: busy or stuck (counters shown are" in text

    run(go(), 30)
