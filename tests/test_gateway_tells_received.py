"""What a gateway received of each sender's tells (gateway/_tells_received.py): one sent
again in doubt that it never received is not in doubt; one at or below what it received
is, whatever its sender said; a later gateway process cannot say."""

from __future__ import annotations

import json

import pytest

from actrhost.gateway._spec import GatewaySpec
from actrhost.gateway._tells_received import TellsReceived

SENDER, LANE = 0x5EED, 1


def test_the_first_gateway_knows_what_it_never_received() -> None:
    received = TellsReceived(complete=True)
    lane = (SENDER, LANE, ("sink", 0))
    assert received.judge(lane, (1, 0)) is False  # a sender never seen: new
    assert received.judge(lane, (2, 0)) is False
    assert received.judge(lane, (2, 0)) is True  # a copy of one it has
    assert received.judge(lane, (1, 0)) is True  # an original after its copy
    assert received.judge(lane, (5, 0)) is False  # 3 and 4 went elsewhere, or died
    # Another target, lane or sender has marks of its own.
    assert received.judge((SENDER, LANE, ("other", 0)), (1, 0)) is False
    assert received.judge((SENDER, LANE + 1, ("sink", 0)), (1, 0)) is False
    assert received.judge((SENDER + 1, LANE, ("sink", 0)), (1, 0)) is False


def test_a_later_gateway_says_only_what_it_received_itself() -> None:
    # Its predecessor may have received anything: above its own marks it cannot say.
    received = TellsReceived(complete=False)
    lane = (SENDER, LANE, ("sink", 0))
    assert received.judge(lane, (7, 0)) is None
    assert received.judge(lane, (8, 0)) is None
    assert received.judge(lane, (7, 0)) is True


def test_idle_lanes_are_forgotten_and_a_fresh_one_forgotten_makes_it_incomplete() -> None:
    clock = [0.0]
    received = TellsReceived(complete=True, forget_after_s=120, lanes_max=2, clock=lambda: clock[0])
    old, fresh = (SENDER, LANE, "old"), (SENDER, LANE, "fresh")
    received.judge(old, (1, 0))
    clock[0] = 100.0
    received.judge(fresh, (1, 0))
    clock[0] = 130.0  # the first lane idle 130 s: no copy of it can come any more
    assert received.judge((SENDER, LANE, "third"), (1, 0)) is False
    assert len(received) == 2 and received.complete
    # A fourth lane while the other two are fresh: one goes though a copy may still come.
    assert received.judge((SENDER, LANE, "fourth"), (1, 0)) is False
    assert len(received) == 2 and not received.complete
    assert received.judge((SENDER, LANE, "fifth"), (1, 0)) is None


def test_the_gateway_spec_says_which_process_of_the_gateway_this_is() -> None:
    spec = {
        "config_path": "node.toml",
        "signaling_url": "ws://127.0.0.1:1",
        "endpoint": "ipc:///tmp/gw.sock",
        "control_endpoint": "ipc:///tmp/control.sock",
        "supervisor_pid": 1,
        "identity_path": "/tmp/identity.pem",
        "shm_prefix": "ah",
        "instances": [],
        "incarnation": 2,
    }
    assert GatewaySpec.from_json(json.dumps(spec)).incarnation == 2
    # Without it, no gateway may take itself for the first (it would clear doubts).
    del spec["incarnation"]
    with pytest.raises(ValueError, match="incarnation"):
        GatewaySpec.from_json(json.dumps(spec))
