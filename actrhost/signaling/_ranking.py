"""Server-side discovery: schemas seen, compatibility of fingerprints, candidate ranking.

The server learns schemas from registrations (``ServiceSpec.schema_text``) and from
discovery requests (``client_schema_text``), and keeps them after the actor leaves, so a
client locked to an old version can still be told which newer versions are compatible.
Both the schemas and the pairwise verdicts live in bounded LRU tables.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .._compatibility import Compatibility, check_compatibility
from .._errors import BadRequest
from .._fingerprint import ProtoSchema, SchemaError, is_fingerprint, parse_schema
from .._ids import ActrType
from ._acl import acl_allows
from ._presence import ActorEntry
from ._types import Availability, CandidateCompatibility

__all__ = ["DEFAULT_RANKING", "Ranked", "SchemaStore", "rank_candidates"]

# Factor names, in the default order (the wire enum maps onto these in the server).
COMPATIBILITY = "compatibility"
AVAILABILITY = "availability"
MAILBOX_BACKLOG = "mailbox_backlog"
DEFAULT_RANKING = (COMPATIBILITY, AVAILABILITY, MAILBOX_BACKLOG)

#: Longest schema text the server parses (characters). Any client may send one, even
#: unauthenticated, and parsing runs on the server's event loop (≈ 2 µs per character of
#: dense field definitions): a real service's proto is a few KiB.
MAX_SCHEMA_CHARS = 64 * 1024

_TIER = {
    CandidateCompatibility.UNCHECKED: 0,
    CandidateCompatibility.EXACT: 0,
    CandidateCompatibility.BACKWARD_COMPATIBLE: 1,
    CandidateCompatibility.UNKNOWN: 2,
}
_AVAILABILITY_RANK = {Availability.AVAILABLE: 0, Availability.DEGRADED: 1}


class _Lru(OrderedDict):  # type: ignore[type-arg]
    """An OrderedDict that forgets its least recently used entries above ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def lookup(self, key: object) -> object:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def store(self, key: object, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class SchemaStore:
    """Fingerprint -> parsed schema, and (old, new) fingerprint -> compatibility verdict."""

    def __init__(self, *, max_schemas: int = 1024, max_verdicts: int = 16384) -> None:
        self._schemas = _Lru(max_schemas)
        self._verdicts = _Lru(max_verdicts)

    def __len__(self) -> int:
        return len(self._schemas)

    def learn(self, fingerprint: str, schema_text: str) -> str:
        """Parse and remember a schema; return its fingerprint.

        ``fingerprint`` may be empty (computed here); when given it must match the schema.
        Raises :class:`BadRequest` for a bad fingerprint or schema, or a mismatch.
        """
        if fingerprint and not is_fingerprint(fingerprint):
            raise BadRequest(
                f"invalid fingerprint {fingerprint!r}: expected service_semantic:<sha256>"
            )
        if not schema_text:
            return fingerprint
        known = self._schemas.lookup(fingerprint) if fingerprint else None
        if known is not None:
            # Parsing costs far more than a lookup; trust a schema text whose declared
            # fingerprint we already hold a schema for.
            return fingerprint
        if len(schema_text) > MAX_SCHEMA_CHARS:
            raise BadRequest(
                f"service schema of {len(schema_text)} characters: at most "
                f"{MAX_SCHEMA_CHARS} are parsed"
            )
        try:
            schema = parse_schema(schema_text)
        except SchemaError as exc:
            raise BadRequest(f"service schema does not parse: {exc}") from None
        actual = schema.fingerprint()
        if fingerprint and fingerprint != actual:
            raise BadRequest(f"fingerprint {fingerprint} does not match the schema ({actual})")
        self._schemas.store(actual, schema)
        return actual

    def compatibility(
        self, client_fp: str, candidate_fp: str
    ) -> tuple[CandidateCompatibility, tuple[str, ...]]:
        """How ``candidate_fp`` serves a client built against ``client_fp``."""
        if not client_fp:
            return CandidateCompatibility.UNCHECKED, ()
        if client_fp == candidate_fp:
            return CandidateCompatibility.EXACT, ()
        key = (client_fp, candidate_fp)
        verdict = self._verdicts.lookup(key)
        if verdict is not None:
            return verdict  # type: ignore[return-value]
        old = self._schemas.lookup(client_fp)
        new = self._schemas.lookup(candidate_fp)
        if not isinstance(old, ProtoSchema) or not isinstance(new, ProtoSchema):
            # Not cached: the missing schema may arrive with a later registration.
            return CandidateCompatibility.UNKNOWN, ()
        report = check_compatibility(old, new)
        level = {
            Compatibility.IDENTICAL: CandidateCompatibility.EXACT,
            Compatibility.BACKWARD_COMPATIBLE: CandidateCompatibility.BACKWARD_COMPATIBLE,
            Compatibility.BREAKING: CandidateCompatibility.BREAKING,
        }[report.level]
        result = (level, report.reasons)
        self._verdicts.store(key, result)
        return result


@dataclass(frozen=True, slots=True)
class Ranked:
    """The outcome of :func:`rank_candidates`."""

    chosen: list[tuple[ActorEntry, CandidateCompatibility, tuple[str, ...]]]
    has_exact_match: bool
    is_sub_healthy: bool
    excluded_breaking: int
    excluded_draining: int = 0
    excluded_denied: int = 0


def rank_candidates(
    entries: Iterable[ActorEntry],
    *,
    store: SchemaStore,
    client_fingerprint: str,
    caller_type: ActrType,
    caller_realm: int,
    count: int,
    ranking: Sequence[str] = DEFAULT_RANKING,
    seen_after: float = float("-inf"),
    exclude: ActorEntry | None = None,
    rng: random.Random | None = None,
) -> Ranked:
    """Pick the best ``count`` of ``entries`` for a caller.

    Left out: ``exclude`` (the caller itself), entries not seen after ``seen_after``
    (silent, not yet swept), and, counted, actors whose ACL denies the caller, draining
    actors and breaking versions. Ties are broken at random so equal candidates share the
    load. Cost: one verdict per distinct fingerprint and one pass over the entries,
    about 0.2 µs per entry (``scripts/bench_signaling.py --ranking-micro``).
    """
    choice = rng.choice if rng is not None else random.choice
    rnd = rng.random if rng is not None else random.random
    verdicts: dict[str, tuple[CandidateCompatibility, tuple[str, ...]]] = {}
    keys: dict[str, int] = {}  # fingerprint -> tier, for eligible fingerprints
    tiers = _TIER
    avail = _AVAILABILITY_RANK
    draining = Availability.DRAINING
    breaking = CandidateCompatibility.BREAKING
    exact = CandidateCompatibility.EXACT
    # The common request (default order, one candidate) keeps the best key and its ties
    # while filtering: no list of candidates, no key function calls.
    single = count == 1 and tuple(ranking) == DEFAULT_RANKING
    best_key: tuple[int, int, int] | None = None
    ties: list[ActorEntry] = []
    eligible: list[ActorEntry] = []
    excluded = denied = drained = 0
    has_exact = False
    for entry in entries:
        if entry is exclude or entry.last_seen <= seen_after:
            continue
        if entry.acl and not acl_allows(entry.acl, caller_type, caller_realm):
            denied += 1
            continue
        if entry.availability is draining:
            drained += 1
            continue
        fp = entry.fingerprint
        tier = keys.get(fp)
        if tier is None:
            verdict = verdicts.get(fp)
            if verdict is None:
                verdict = verdicts[fp] = store.compatibility(client_fingerprint, fp)
            if verdict[0] is breaking:
                excluded += 1
                continue
            tier = keys[fp] = tiers[verdict[0]]
            has_exact = has_exact or verdict[0] is exact
        if single:
            key = (tier, avail.get(entry.availability, 0), entry.mailbox_backlog)
            if best_key is None or key < best_key:
                best_key = key
                ties = [entry]
            elif key == best_key:
                ties.append(entry)
        else:
            eligible.append(entry)

    if single:
        best = [choice(ties)] if ties else []
    else:
        parts: list[Callable[[ActorEntry], float]] = []
        for factor in ranking:
            if factor == COMPATIBILITY:
                parts.append(lambda e: keys[e.fingerprint])
            elif factor == AVAILABILITY:
                parts.append(lambda e: avail.get(e.availability, 0))
            elif factor == MAILBOX_BACKLOG:
                parts.append(lambda e: e.mailbox_backlog)
        best = heapq.nsmallest(count, eligible, key=lambda e: (*(part(e) for part in parts), rnd()))
    chosen = [(entry, *verdicts[entry.fingerprint]) for entry in best]
    return Ranked(
        chosen=chosen,
        has_exact_match=has_exact,
        is_sub_healthy=bool(chosen) and bool(client_fingerprint) and not has_exact,
        excluded_breaking=excluded,
        excluded_draining=drained,
        excluded_denied=denied,
    )
