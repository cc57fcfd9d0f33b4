"""Identity: realms, actor types and actor ids, with their text forms (DESIGN §2).

Text forms: type ``"manufacturer+name"``; id ``"<serial hex>@<realm>:<manufacturer>+<name>"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import BadRequest

# 1-32 chars, a letter first, alphanumeric last, only letters, digits and -_. between.
# Used with fullmatch: "$" would also match before a final newline ("Echo\n").
_NAME_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9_.\-]{0,30}[A-Za-z0-9])?")
# ASCII digits only: \d also takes other scripts' ("1@٣:a+B" was realm 3).
_ID_RE = re.compile(r"([0-9a-fA-F]{1,16})@([0-9]{1,10}):([^+]+)\+(.+)")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid manufacturer or type name, else raise BadRequest."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise BadRequest(
            f"invalid {what} {value!r}: 1-32 characters, a letter first, alphanumeric last, "
            "only letters, digits and -_. allowed"
        )
    return value


@dataclass(frozen=True, slots=True)
class Realm:
    """An isolation domain: nothing crosses a realm."""

    realm_id: int

    def __post_init__(self) -> None:
        # A uint32 on the wire (DESIGN §2): an id out of range was accepted here and
        # failed only when a frame to another node was encoded, with a bare ValueError.
        if not 0 <= self.realm_id < 2**32:
            raise BadRequest(f"realm {self.realm_id} out of range for uint32")

    def __str__(self) -> str:
        return str(self.realm_id)


@dataclass(frozen=True, slots=True)
class ActrType:
    """The kind of an actor, ``manufacturer+name``; several instances share one type."""

    manufacturer: str
    name: str

    def __post_init__(self) -> None:
        check_name(self.manufacturer, "manufacturer")
        check_name(self.name, "actor type name")

    @classmethod
    def parse(cls, text: str) -> ActrType:
        """Parse ``"manufacturer+name"``; raises BadRequest on any other form."""
        if not isinstance(text, str) or text.count("+") != 1:
            raise BadRequest(f"invalid actor type {text!r}: expected 'manufacturer+name'")
        manufacturer, name = text.split("+")
        return cls(manufacturer, name)

    def __str__(self) -> str:
        return f"{self.manufacturer}+{self.name}"


@dataclass(frozen=True, slots=True, eq=True)
class ActrId:
    """One actor instance: realm, serial number and type."""

    realm: Realm
    serial_number: int
    type: ActrType

    def __hash__(self) -> int:
        # Ids are dict keys on every frame; the serial alone is nearly unique, and hashing
        # the nested dataclasses costs more than the lookup.
        return hash(self.serial_number)

    def __eq__(self, other: object) -> bool:
        # Hand-written for the same reason: the generated one builds two tuples and
        # compares the nested dataclasses through theirs. The serial decides most cases.
        if self is other:
            return True
        if not isinstance(other, ActrId):
            return NotImplemented
        return (
            self.serial_number == other.serial_number
            and self.realm.realm_id == other.realm.realm_id
            and self.type.name == other.type.name
            and self.type.manufacturer == other.type.manufacturer
        )

    def __post_init__(self) -> None:
        if not 0 <= self.serial_number < 2**64:
            raise BadRequest(f"serial number {self.serial_number} out of range for uint64")

    @classmethod
    def parse(cls, text: str) -> ActrId:
        """Parse ``"<serial hex>@<realm>:<manufacturer>+<name>"``; raises BadRequest."""
        match = _ID_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise BadRequest(
                f"invalid actor id {text!r}: expected '<serial hex>@<realm>:<manufacturer>+<name>'"
            )
        serial, realm, manufacturer, name = match.groups()
        return cls(Realm(int(realm)), int(serial, 16), ActrType(manufacturer, name))

    def __str__(self) -> str:
        return f"{self.serial_number:x}@{self.realm.realm_id}:{self.type}"
