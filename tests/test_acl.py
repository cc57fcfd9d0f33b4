"""[[actor.acl]] rules enforced on the callee for calls, tells and streams from actors."""

from __future__ import annotations

import asyncio

import pytest

import actrhost
from actrhost import PermissionDenied

from .utils import run

ACTORS = """
[[actor]]
name = "guarded"
type = "test+Echo"
handler = "actors:Echo"

[[actor.acl]]
permission = "deny"
types = ["test+Source"]

[[actor.acl]]
permission = "allow"
types = ["test+Relay"]

[[actor]]
name = "relay"
type = "test+Relay"
handler = "actors:Relay"

[[actor]]
name = "source"
type = "test+Source"
handler = "actors:StreamSource"

[[actor]]
name = "other"
type = "test+Other"
handler = "actors:Relay"
"""


def test_acl_first_match_wins_and_denied_calls_get_403(node_factory):
    node = node_factory(ACTORS)

    async def go():
        async with actrhost.connect(node.config_path) as shell:
            # Allowed by the second rule.
            assert (
                await shell.call("relay", "test.Relay.Forward", b"test+Echo test.Echo.Say hi")
                == b"hi"
            )
            # test+Other matches no rule: with rules present, that is a deny.
            with pytest.raises(PermissionDenied, match="test\\+Other may not call"):
                await shell.call("other", "test.Relay.Forward", b"test+Echo test.Echo.Say hi")
            # A Shell is the node's own application side: no ActrId, no ACL.
            assert await shell.call("guarded", "test.Echo.Say", b"shell") == b"shell"
            # Streams from a denied type are dropped and counted, not delivered.
            await shell.call(
                "source", "test.Source.Send", b'{"target": "test+Echo", "sizes": [10, 100000]}'
            )
            for _ in range(100):  # the chunks travel apart from the status request
                status = await shell.status()
                guarded = next(a for a in status["actors"] if a["name"] == "guarded")["stats"]
                if guarded["denied"] >= 3:
                    break
                await asyncio.sleep(0.02)
            assert guarded["denied"] == 3

    run(go())
