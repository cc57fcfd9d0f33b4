"""The supervisor's directory feed: a whole snapshot first, then only what changed; and
a Directory that takes in both (no node: the two ends talk through a list)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from actrhost._directory import ActorState, Directory
from actrhost._directory_feed import DirectoryFeed

from .utils import run


def _entry(serial: int, state: str, name: str = "a") -> dict[str, Any]:
    return {
        "id": f"{serial:x}@1:t+A",
        "name": name,
        "index": serial,
        "endpoint": f"ipc:///x/a-{serial:x}.sock",
        "state": state,
        "pid": 100 + serial,
        "restarts": 0,
    }


class _Node:
    """A supervisor's side of the feed: its snapshot, its recipients, what they got."""

    def __init__(self) -> None:
        self.actors = [_entry(1, "starting"), _entry(2, "starting"), _entry(3, "running", "b")]
        self.recipients = [b"w:1", b"w:2"]
        self.unreachable: set[bytes] = set()
        self.sent: list[tuple[bytes, dict[str, Any]]] = []

    def snapshot(self) -> dict[str, Any]:
        return {"op": "directory", "actors": [dict(a) for a in self.actors], "shells": []}

    def send(self, routing_id: bytes, frame: bytes) -> bool:
        if routing_id in self.unreachable:
            return False
        self.sent.append((routing_id, json.loads(frame)))
        return True


def test_changes_go_out_alone_coalesced_and_a_missed_one_is_made_up_with_a_snapshot():
    node = _Node()
    feed = DirectoryFeed(node.snapshot, lambda: node.recipients, node.send)
    directory = Directory()
    directory.update(node.snapshot())  # what w:1 got in answer to its hello

    async def go() -> None:
        feed.publish()  # the first publication is whole
        assert [len(m["actors"]) for _, m in node.sent] == [3, 3]
        assert not any(m.get("delta") for _, m in node.sent)
        node.sent.clear()
        # Two changes in one loop turn: one message each, holding both entries only.
        node.actors[0]["state"] = "running"
        feed.changed()
        node.actors[1]["state"] = "running"
        feed.changed()
        await asyncio.sleep(0)
        assert [r for r, _ in node.sent] == [b"w:1", b"w:2"]
        message = node.sent[0][1]
        assert message["delta"] is True and [a["id"] for a in message["actors"]] == [
            "1@1:t+A",
            "2@1:t+A",
        ]
        assert directory.update(message) == []
        # w:2 misses a change: its next one is a whole snapshot, w:1's a change.
        node.sent.clear()
        node.unreachable.add(b"w:2")
        node.actors[0]["state"] = "dead"
        feed.publish()
        node.unreachable.clear()
        node.actors[0]["state"] = "starting"
        node.actors[0]["pid"] = 999
        feed.publish()
        to_w1 = next(m for r, m in node.sent if r == b"w:1")
        gone = directory.update(to_w1)
        assert [(e.name, e.state) for e in gone] == [("a", ActorState.DEAD)]
        (whole,) = [m for r, m in node.sent if r == b"w:2"]
        assert "delta" not in whole and len(whole["actors"]) == 3

    run(go())
    later = [m for r, m in node.sent if r == b"w:1"][1]
    directory.update(later)
    # Entries were replaced in place: config order, lookups by type and name up to date.
    assert [(e.index, e.state.value, e.pid) for e in directory.entries()] == [
        (1, "starting", 999),
        (2, "running", 102),
        (3, "running", 103),
    ]
    assert directory.pick_by_name("b").index == 3
    assert directory.get(directory.entries()[0].actr_id).pid == 999


def test_a_death_and_restart_that_come_in_one_change_still_count_as_gone():
    directory = Directory()
    directory.update({"actors": [_entry(1, "running")]})
    restarted = {**_entry(1, "starting"), "pid": 555, "restarts": 1}
    (gone,) = directory.update({"actors": [restarted], "delta": True})
    assert (gone.pid, gone.restarts) == (555, 1)
    assert directory.update({"actors": [{**restarted, "state": "running"}], "delta": True}) == []


def test_shells_travel_as_changes_too():
    # Each attach sent every Shell serving routes to every process: 646 MB of directory
    # traffic for 300 Shells attaching one after another (QA). A change carries the
    # Shells that came or changed and those that left.
    node = _Node()
    shells: dict[str, list[str]] = {}
    node.snapshot = lambda: {  # type: ignore[method-assign]
        "op": "directory",
        "actors": [dict(a) for a in node.actors],
        "shells": [{"endpoint": e, "routes": r} for e, r in shells.items()],
    }
    feed = DirectoryFeed(node.snapshot, lambda: node.recipients, node.send)
    directory = Directory()
    directory.update(node.snapshot())
    feed.publish()
    for n in range(50):
        shells[f"ipc:///x/s{n:x}.aa.sock"] = [f"t.S{n}.R"]
        feed.publish()
    shells["ipc:///x/s0.aa.sock"] = ["t.S0.Other"]  # new routes
    del shells["ipc:///x/s1.aa.sock"]  # gone
    feed.publish()
    changes = [m for r, m in node.sent if r == b"w:1"][1:]
    assert all(m["delta"] and "shells" not in m for m in changes)
    assert [len(m["shells_changed"]) for m in changes] == [1] * 51
    for message in changes:
        directory.update(message)
    assert directory.shells_left == ["ipc:///x/s1.aa.sock"]
    assert directory.shell_for("t.S0.Other") == "ipc:///x/s0.aa.sock"
    assert directory.shell_for("t.S49.R") == "ipc:///x/s31.aa.sock"
    whole = Directory()
    whole.update(node.snapshot())
    assert sorted(whole._shells, key=str) == sorted(directory._shells, key=str)
