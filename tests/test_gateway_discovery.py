"""The gateway's discovery for workers (``gateway/_discovery.py``), driven directly: the
last answer while signaling is away or slow, only for a node whose link is up, and the
503 for a type whose last node is reconnecting."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from actrhost import DeadlineExceeded, NotFound, PermissionDenied, Unavailable
from actrhost._ids import ActrId, ActrType
from actrhost.gateway import _discovery
from actrhost.gateway._counters import GatewayCounters
from actrhost.gateway._discovery import Discoverer
from actrhost.signaling import DiscoveryResult

B1 = ActrId.parse("11@1:t+B")
B2 = ActrId.parse("12@1:t+B")


def found(*ids: ActrId) -> DiscoveryResult:
    """Signaling's answer naming ``ids``, best first."""
    candidates = tuple(SimpleNamespace(actr_id=actr_id) for actr_id in ids)
    return DiscoveryResult(candidates, has_exact_match=bool(ids), is_sub_healthy=False)  # type: ignore[arg-type]


class FakeRegistration:
    """One of our actors' registrations: each discover takes the next prepared answer
    (a result, an exception, or an event to wait for first)."""

    realm = 1
    actr_type = ActrType.parse("t+A")

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.asked = 0

    async def discover(self, actr_type: ActrType) -> DiscoveryResult:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):  # (event, result): slow
            event, answer = answer
            await event.wait()
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


class World:
    """What the Discoverer asks about: which links are up, which nodes reconnect."""

    def __init__(self) -> None:
        self.up: set[ActrId] = set()
        self.reconnecting: dict[ActrId, str] = {}
        self.signaling_up = True
        self.counters = GatewayCounters()
        config = SimpleNamespace(dependencies=[])
        self.discoverer = Discoverer(
            config,  # type: ignore[arg-type]
            lambda actr_id: actr_id in self.up,
            self.may_be_back,
            lambda: self.signaling_up,
            lambda: None,
            self.counters,
        )

    def may_be_back(self, actr_id: ActrId) -> str:
        why = self.reconnecting.get(actr_id)
        return f"is reconnecting after its link failed ({why})" if why else ""

    async def best(self, reg: FakeRegistration) -> ActrId:
        return await self.discoverer.best(reg, ActrType.parse("t+B"), "t+A")


@pytest.fixture(autouse=True)
def short_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_discovery, "SIGNALING_PATIENCE_S", 0.05)


def test_the_last_answer_stands_in_while_signaling_is_away_or_slow() -> None:
    async def scenario() -> None:
        world, reg = World(), FakeRegistration()
        reg.answers.append(found(B1))
        assert await world.best(reg) == B1
        world.up.add(B1)
        # Not connected: not even asked.
        world.signaling_up = False
        assert await world.best(reg) == B1 and reg.asked == 1
        world.signaling_up = True
        # 503/504 from signaling: the last answer.
        reg.answers.append(DeadlineExceeded("no answer in time"))
        assert await world.best(reg) == B1
        # Slow: the last answer after the patience; the request goes on, and a second
        # discovery meanwhile does not ask again. Its answer, once it comes, is kept.
        release = asyncio.Event()
        reg.answers.append((release, found(B2)))
        assert await world.best(reg) == B1
        assert await world.best(reg) == B1 and reg.asked == 3
        release.set()
        await asyncio.sleep(0.01)
        world.up.add(B2)
        world.signaling_up = False
        assert await world.best(reg) == B2
        assert world.counters.discoveries_remembered == 5

    asyncio.run(scenario())


def test_the_last_answer_is_never_given_for_a_node_whose_link_is_down() -> None:
    async def scenario() -> None:
        world, reg = World(), FakeRegistration()
        reg.answers.append(found(B1))
        assert await world.best(reg) == B1  # B1's link is not up
        reg.answers.append(Unavailable("connection to signaling lost"))
        with pytest.raises(Unavailable, match="signaling lost"):
            await world.best(reg)
        # Slow signaling is waited for: there is nothing else to say.
        release = asyncio.Event()
        reg.answers.append((release, found(B2)))
        waiting = asyncio.ensure_future(world.best(reg))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        release.set()
        assert await waiting == B2
        assert world.counters.discoveries_remembered == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("excluded_denied", "error_once_forgotten"), [(0, NotFound), (1, PermissionDenied)]
)
def test_none_found_while_the_last_ones_node_reconnects_is_503(
    excluded_denied: int, error_once_forgotten: type[Exception]
) -> None:
    # With excluded_denied: the other instances of the type deny the caller, and the one
    # it may call is on the node being reconnected: 503 too (it may be back in a moment),
    # not 403 (QA: a planned `restart --gateway` gave callers a 403, taken as final).
    async def scenario() -> None:
        world, reg = World(), FakeRegistration()
        none = dataclasses.replace(found(), excluded_denied=excluded_denied)
        reg.answers += [found(B1), none, none]
        assert await world.best(reg) == B1
        world.reconnecting[B1] = "nothing received for 3 s"
        with pytest.raises(Unavailable, match="is reconnecting after its link failed"):
            await world.best(reg)
        del world.reconnecting[B1]  # given up: forgotten
        with pytest.raises(error_once_forgotten):
            await world.best(reg)

    asyncio.run(scenario())
