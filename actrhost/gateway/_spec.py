"""What the supervisor tells the gateway at spawn, and registration with a previous id.

The spec is JSON in the environment variable :data:`SPEC_ENV` (docs/gateway.md):
``config_path``, ``signaling_url``, ``endpoint`` (the ipc ROUTER the gateway binds),
``control_endpoint`` (the supervisor's control ROUTER), ``supervisor_pid``, ``identity_path``
(the node's key and certificate, ``_identity.py``), ``shm_prefix`` (the node's prefix of
shared-memory names: the only rings the gateway attaches),
``instances`` [{``name``, ``index``, ``type``, ``previous_id``, ``previous_credential_hex``}],
``incarnation`` (how many gateway processes of this node run came before this one) and,
optionally, ``tuning`` (overrides of :class:`~._peer.Tuning`, for tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from .._errors import BadRequest
from .._ids import ActrId, ActrType
from ..signaling import AclPermission, AclRule, Registration, SignalingClient
from ._types import Tuning

SPEC_ENV = "ACTRHOST_GATEWAY_SPEC"


@dataclass(frozen=True)
class InstanceSpec:
    """One actor instance to register: config name, index, type, and its previous id."""

    name: str
    index: int
    type: ActrType
    previous_id: ActrId | None = None
    previous_credential_hex: str | None = None


@dataclass(frozen=True)
class GatewaySpec:
    """The parsed spec (see the module docstring)."""

    config_path: str
    signaling_url: str
    endpoint: str
    control_endpoint: str
    supervisor_pid: int
    identity_path: str
    shm_prefix: str
    instances: tuple[InstanceSpec, ...]
    tuning: dict[str, float]
    #: How many gateway processes of this node run came before this one (0: the first,
    #: which received every tell its workers got from other nodes: ``_tells_received``).
    incarnation: int

    @classmethod
    def from_json(cls, text: str) -> GatewaySpec:
        """Parse and check; raises ValueError with what is wrong."""
        try:
            raw = json.loads(text)
            instances = tuple(
                InstanceSpec(
                    str(item["name"]),
                    int(item["index"]),
                    ActrType.parse(item["type"]),
                    ActrId.parse(item["previous_id"]) if item.get("previous_id") else None,
                    item.get("previous_credential_hex") or None,
                )
                for item in raw.get("instances", ())
            )
            tuning = dict(raw.get("tuning") or {})
            known = {f.name for f in fields(Tuning)}
            unknown = set(tuning) - known
            if unknown:
                raise ValueError(f"unknown tuning keys {sorted(unknown)}")
            return cls(
                config_path=str(raw["config_path"]),
                signaling_url=str(raw["signaling_url"]),
                endpoint=str(raw["endpoint"]),
                control_endpoint=str(raw["control_endpoint"]),
                supervisor_pid=int(raw["supervisor_pid"]),
                identity_path=str(raw["identity_path"]),
                shm_prefix=str(raw["shm_prefix"]),
                instances=instances,
                tuning=tuning,
                incarnation=int(raw["incarnation"]),
            )
        except (KeyError, TypeError, ValueError, BadRequest) as exc:
            raise ValueError(f"invalid {SPEC_ENV}: {exc}") from None


def credential_hex(reg: Registration) -> str:
    """The credential as text: 8 hex digits of key id, then the token in hex."""
    token, key_id = reg.credential
    return f"{key_id:08x}{token.hex()}"


def parse_credential_hex(text: str) -> tuple[bytes, int]:
    """Inverse of :func:`credential_hex`; raises ValueError."""
    if len(text) < 8:
        raise ValueError("credential text too short")
    return bytes.fromhex(text[8:]), int(text[:8], 16)


def acl_rules(actor_acl: tuple[Any, ...]) -> list[AclRule]:
    """``[[actor.acl]]`` rules of the config as the signaling client wants them."""
    return [
        AclRule(AclPermission(rule.permission), tuple(rule.types), tuple(rule.realms))
        for rule in actor_acl
    ]


async def register(
    client: SignalingClient,
    instance: InstanceSpec,
    realm: int,
    acl: list[AclRule],
    timeout_s: float,
    schema_text: str = "",
) -> Registration:
    """Register one instance, presenting its previous id and credential if it had one
    (a respawned gateway: the server then gives the same id back)."""
    previous_credential = None
    if instance.previous_id is not None and instance.previous_credential_hex:
        token, key_id = parse_credential_hex(instance.previous_credential_hex)
        previous_credential = (token, key_id)
    return await client.register(
        instance.type,
        realm,
        schema_text=schema_text,
        acl=acl,
        timeout_s=timeout_s,
        previous_id=instance.previous_id if previous_credential else None,
        previous_credential=previous_credential,
    )
