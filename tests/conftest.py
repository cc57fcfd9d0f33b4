"""Fixtures: ``node_factory`` starts real nodes and checks they leave nothing behind;
``gateway_process_setup`` makes this process's aiortc behave as in a gateway process.
And how many workers ``pytest -n auto`` runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .utils import Node, signal_server


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: three workers for every two CPUs, not one per CPU.

    The tests spend part of their time waiting on real processes, sockets and timers
    (a node's start, a restart's backoff, a deadline): with one worker per CPU the two
    CPUs here stood idle a fifth of the time. Measured on 2 CPUs, same commit
    (2026-12-07): 8:45 with 2 workers, 6:18 with 3, 6:57 with 4 (busier CPUs, and tests
    that compete for them). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    return max(1, len(os.sched_getaffinity(0)) * 3 // 2)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``node_factory(actors_toml, node_toml="", start=True)`` -> a running Node.

    Teardown stops every node it made and asserts no worker process and no run directory
    (socket files) remain.
    """
    nodes: list[Node] = []

    def make(actors_toml: str, node_toml: str = "", *, start: bool = True) -> Node:
        folder = tmp_path / f"node{len(nodes)}"
        folder.mkdir()
        node = Node(folder, actors_toml, node_toml)
        nodes.append(node)
        return node.start() if start else node

    yield make
    for node in nodes:
        node.cleanup()


@pytest.fixture
def signaling_url() -> Iterator[str]:
    """A standalone ``actrhost signal`` on a free loopback port; yields its ws:// URL."""
    with signal_server() as url:
        yield url


@pytest.fixture
def gateway_process_setup() -> Iterator[None]:
    """What the gateway process does at start (aiortc tuning, ICE host addresses on
    loopback), for tests that run real peer connections in this process."""
    from actrhost.gateway import (
        _dtls,
        _jitter,
        _sctp,
        _sctp_loss,
        _sctp_packets,
        _sctp_path,
        _sctp_scan,
    )
    from actrhost.gateway._ice import (
        enlarge_receive_buffers,
        skip_stun_parse_for_media,
        use_host_addresses,
    )
    from actrhost.gateway._rtcp import skip_rtcp_of_silent_tracks

    _sctp_packets.install()  # (first, as in the gateway)
    _sctp.install()
    _sctp_loss.install()
    _sctp_scan.install()
    _sctp_path.install()
    _dtls.install()
    _jitter.install()
    skip_stun_parse_for_media()
    skip_rtcp_of_silent_tracks()
    enlarge_receive_buffers()
    use_host_addresses(["127.0.0.1"])
    yield
    use_host_addresses(None)
