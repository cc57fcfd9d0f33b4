"""Access-control rules an actor registers with (``[[actor.acl]]``, DESIGN §5).

The server applies them to discovery and relay: an actor is not offered to, and cannot
be reached through the relay by, a caller its rules deny. The callee enforces the same
rules on every call (that part belongs to the node); :func:`acl_allows` is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .._ids import ActrType

__all__ = ["AclPermission", "AclRule", "acl_allows"]


class AclPermission(StrEnum):
    """What a matching rule decides."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class AclRule:
    """One rule: it matches a caller whose type is in ``types`` or realm in ``realms``.

    A rule with neither matches every caller.
    """

    permission: AclPermission
    types: tuple[ActrType, ...] = ()
    realms: tuple[int, ...] = ()

    def matches(self, caller_type: ActrType, caller_realm: int) -> bool:
        """True if this rule applies to the caller."""
        if not self.types and not self.realms:
            return True
        return caller_type in self.types or caller_realm in self.realms


def acl_allows(rules: Sequence[AclRule], caller_type: ActrType, caller_realm: int) -> bool:
    """First matching rule wins; no rules at all allow everyone; no match denies.

    "No match denies" because a list of rules is a whitelist unless it ends with a
    catch-all allow; a list of only deny rules should end with ``permission = "allow"``.
    """
    if not rules:
        return True
    for rule in rules:
        if rule.matches(caller_type, caller_realm):
            return rule.permission is AclPermission.ALLOW
    return False
