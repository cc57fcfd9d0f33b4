"""Signaling over TLS (``wss://``): ``actrhost signal --tls-cert/--tls-key`` and clients
that trust its certificate through ``ca_file`` (docs/signaling.md, TLS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actrhost import Unavailable
from actrhost.signaling import SignalingClient
from actrhost.signaling._testing import ServerProcess, write_self_signed_certificate

from .utils import actrhost_command


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A standalone server on wss:// with a self-signed certificate; yields it and the cert."""
    cert, key = write_self_signed_certificate(tmp_path)
    with ServerProcess(tls_cert=cert, tls_key=key) as server:
        yield server, cert


def test_a_client_that_trusts_the_certificate_registers_over_wss(tls_server) -> None:
    server, cert = tls_server
    assert server.url.startswith("wss://127.0.0.1:")

    async def go() -> list[str]:
        async with SignalingClient(server.url, ca_file=cert) as client:
            registration = await client.register("demo+Echo", 1)
            actors, _truncated = await registration.list_actors()
            return [str(a.actr_id.type) for a in actors]

    assert asyncio.run(go()) == ["demo+Echo"]


def test_a_client_that_does_not_trust_it_fails_at_once_saying_why(tls_server) -> None:
    server, _cert = tls_server

    async def go() -> None:
        async with SignalingClient(server.url, connect_timeout_s=10):
            pass

    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        asyncio.run(go())
    assert time.monotonic() - started < 5  # not after retrying until the timeout
    assert "failed verification" in info.value.message
    assert "ca_file" in info.value.message


def test_a_client_given_another_ca_says_that_one_did_not_verify(
    tls_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It said to give a CA, as if none had been given (QA); and retrying, only at INFO.
    server, _cert = tls_server
    other = tmp_path / "other"
    other.mkdir()
    other_cert, _key = write_self_signed_certificate(other)

    async def go() -> None:
        async with SignalingClient(server.url, connect_timeout_s=10, ca_file=other_cert):
            pass

    with pytest.raises(Unavailable) as info, caplog.at_level("INFO"):
        asyncio.run(go())
    assert f"it does not chain to the CA in {other_cert}" in info.value.message
    assert any(
        r.levelname == "WARNING" and "connect failed" in r.getMessage() for r in caplog.records
    )


def test_a_scheme_that_does_not_match_the_server_is_named(tls_server) -> None:
    tls, _cert = tls_server

    async def connect(url: str) -> str:
        with pytest.raises(Unavailable) as info:
            async with SignalingClient(url, connect_timeout_s=1.5):
                pass
        return info.value.message

    plain_url_to_tls = tls.url.replace("wss://", "ws://")
    assert "is it a wss:// server, with TLS?" in asyncio.run(connect(plain_url_to_tls))
    with ServerProcess() as plain:
        tls_url_to_plain = plain.url.replace("ws://", "wss://")
        assert "is it a ws:// server, without TLS?" in asyncio.run(connect(tls_url_to_plain))


def test_status_lists_a_wss_server_with_ca_file(tls_server) -> None:
    server, cert = tls_server
    result = actrhost_command("status", "--signaling", server.url, "--ca-file", str(cert))
    assert result.returncode == 0, result.stderr
    assert f"signaling {server.url}, realm 1: 0 actor(s)" in result.stdout


@pytest.mark.parametrize("problem", ["missing", "garbage", "mismatched key"])
def test_unusable_tls_files_are_a_one_line_error(tmp_path: Path, problem: str) -> None:
    cert, key = write_self_signed_certificate(tmp_path)
    if problem == "missing":
        cert = tmp_path / "nope.pem"
    elif problem == "garbage":
        cert.write_text("not a certificate\n")
    else:
        other = tmp_path / "other"
        other.mkdir()
        _other_cert, key = write_self_signed_certificate(other)
    result = actrhost_command(
        "signal", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"actrhost: config error: {cert}: ")
    assert "listening" not in result.stdout


def test_two_nodes_find_each_other_through_a_wss_server(node_factory, tls_server) -> None:
    server, cert = tls_server
    signaling = f'[signaling]\nurl = "{server.url}"\nca_file = "{cert}"\n'
    relay = '[[actor]]\nname = "relay"\ntype = "test+Relay"\nhandler = "actors:Relay"\n'
    echo = '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n'
    node_a = node_factory(relay, signaling)
    node_factory(echo, signaling)
    result = actrhost_command(
        "call", str(node_a.config_path), "relay", "test.Relay.Forward",
        "--data", "test+Echo test.Echo.Say over wss", "--timeout", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "over wss"


def test_a_node_that_does_not_trust_its_wss_server_exits_saying_why(
    node_factory, tls_server
) -> None:
    server, _cert = tls_server
    echo = '[[actor]]\nname = "echo"\ntype = "test+Echo"\nhandler = "actors:Echo"\n'
    node = node_factory(echo, f'[signaling]\nurl = "{server.url}"\n', start=False)
    started = time.monotonic()
    result = actrhost_command("run", str(node.config_path), timeout=60)
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    last = result.stderr.strip().splitlines()[-1]
    assert "failed verification" in last and "[signaling] ca_file" in last
    assert not node.run_dir.exists()
