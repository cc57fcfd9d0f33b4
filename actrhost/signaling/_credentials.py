"""Credentials: HMAC-SHA256 signed tokens naming one actor, its realm and an expiry.

A token is ``header || type text || tag`` where the header packs (format version, key id,
realm, serial number, expiry in unix milliseconds) and the tag is HMAC-SHA256 over
everything before it with the key named by the key id. It travels in
``AIdCredential.encrypted_token`` (actr's field name; the token is signed, not encrypted:
it holds nothing secret) with the key id also in ``token_key_id``.

Because a token verifies with the key alone, a server restarted with the same keys
recognises the credentials it issued before and gives re-registering actors their old
ids back. Keys come from a config dict or a key file; :meth:`KeyRing.generate` makes a
random one for an embedded server whose credentials need not outlive the process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ActrError, ConfigError, PermissionDenied, Unauthorized
from .._ids import ActrId, ActrType, Realm

__all__ = ["Credential", "KeyRing", "KeysLike", "load_keys", "write_key_file"]

log = logging.getLogger(__name__)

_FORMAT = 1
# format version, key id, realm id, serial number, expiry (unix ms)
_HEADER = struct.Struct(">BIIQq")
_TAG_BYTES = 32
_MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Credential:
    """A verified token's claims, or one just issued (``token`` holds its bytes)."""

    key_id: int
    actr_id: ActrId
    expires_at_ms: int
    token: bytes


class KeyRing:
    """The server's signing keys: ``key id -> secret``, one of them current.

    New tokens are signed with the current key; tokens signed with any key of the ring
    verify, so a key can be rotated by adding a new current key and keeping the old one
    until the credentials it signed have expired.
    """

    def __init__(self, keys: Mapping[int, bytes], current_key_id: int) -> None:
        if current_key_id not in keys:
            raise ValueError(f"current key id {current_key_id} is not among the keys")
        for key_id, secret in keys.items():
            if not 0 <= key_id < 2**32:
                raise ValueError(f"key id {key_id} out of range for uint32")
            if len(secret) < _MIN_SECRET_BYTES:
                raise ValueError(f"key {key_id} is shorter than {_MIN_SECRET_BYTES} bytes")
        self._keys = dict(keys)
        self.current_key_id = current_key_id

    def __repr__(self) -> str:
        # Never show the secrets.
        return f"KeyRing(ids={sorted(self._keys)}, current={self.current_key_id})"

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring with one random 32-byte key (id 1) from the OS's CSPRNG.

        For an embedded server: credentials it issues don't verify after a restart, so
        actors re-registering then get new ids.
        """
        return cls({1: secrets.token_bytes(32)}, 1)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, source: str = "<config>") -> KeyRing:
        """Build a ring from ``{"current_key_id": 1, "key": [{"id": 1, "secret_hex": ...}]}``.

        That is also the structure of a key file. Raises :class:`ConfigError` naming the
        offending key.
        """
        unknown = set(config) - {"current_key_id", "key"}
        if unknown:
            raise ConfigError(source, sorted(unknown)[0], "unknown key")
        entries = config.get("key")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(source, "key", "expected a non-empty array of [[key]] tables")
        keys: dict[int, bytes] = {}
        for i, entry in enumerate(entries):
            where = f"key[{i}]"
            if not isinstance(entry, Mapping) or set(entry) != {"id", "secret_hex"}:
                raise ConfigError(source, where, "expected exactly the keys 'id' and 'secret_hex'")
            key_id = entry["id"]
            if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id < 2**32:
                raise ConfigError(source, f"{where}.id", "expected an integer 0..4294967295")
            if key_id in keys:
                raise ConfigError(source, f"{where}.id", f"key id {key_id} given twice")
            try:
                secret = bytes.fromhex(entry["secret_hex"])
            except (TypeError, ValueError):
                raise ConfigError(source, f"{where}.secret_hex", "expected hex digits") from None
            if len(secret) < _MIN_SECRET_BYTES:
                raise ConfigError(
                    source, f"{where}.secret_hex", f"at least {_MIN_SECRET_BYTES} bytes needed"
                )
            keys[key_id] = secret
        current = config.get("current_key_id", max(keys))
        if current not in keys:
            raise ConfigError(source, "current_key_id", f"no key with id {current!r}")
        return cls(keys, current)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read a TOML key file (see :func:`write_key_file`); raises :class:`ConfigError`.

        Logs a warning when the file is readable by group or others.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(str(path), "", f"cannot read key file: {exc.strerror}") from None
        try:
            config = tomllib.loads(raw.decode("utf-8-sig"))  # (a BOM read past)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(path), "", f"not a valid TOML key file: {exc}") from None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is readable by group or others; chmod 600 it", path)
        return cls.from_config(config, source=str(path))

    def to_config(self) -> dict[str, Any]:
        """The dict :meth:`from_config` reads (holds the secrets: keep it private)."""
        return {
            "current_key_id": self.current_key_id,
            "key": [{"id": k, "secret_hex": s.hex()} for k, s in sorted(self._keys.items())],
        }

    # -- tokens ------------------------------------------------------------------------

    def issue(self, actr_id: ActrId, expires_at_ms: int) -> Credential:
        """Sign a token for ``actr_id`` valid until ``expires_at_ms`` (unix ms)."""
        body = (
            _HEADER.pack(
                _FORMAT,
                self.current_key_id,
                actr_id.realm.realm_id,
                actr_id.serial_number,
                expires_at_ms,
            )
            + str(actr_id.type).encode()
        )
        tag = hmac.new(self._keys[self.current_key_id], body, hashlib.sha256).digest()
        return Credential(self.current_key_id, actr_id, expires_at_ms, body + tag)

    def claims(
        self, token: bytes, key_id: int, *, now_ms: int, grace_ms: int = 0
    ) -> tuple[int, int, int, str]:
        """Check a token's signature and expiry; return (realm id, serial, expiry ms,
        type text) without building objects (the server calls this for every message).

        ``grace_ms`` accepts a token expired at most that long ago (re-registration).
        Raises :class:`Unauthorized` for a forged, malformed or expired token.
        """
        if len(token) < _HEADER.size + _TAG_BYTES + 3:
            raise Unauthorized("malformed credential")
        body, tag = token[:-_TAG_BYTES], token[-_TAG_BYTES:]
        version, token_key_id, realm_id, serial, expires_at_ms = _HEADER.unpack_from(body)
        secret = self._keys.get(token_key_id)
        if version != _FORMAT or token_key_id != key_id or secret is None:
            raise Unauthorized("credential signed with an unknown key")
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, tag):
            raise Unauthorized("credential signature does not verify")
        if expires_at_ms + grace_ms <= now_ms:
            raise Unauthorized(f"credential expired {(now_ms - expires_at_ms) / 1000:.1f} s ago")
        try:
            type_text = body[_HEADER.size :].decode()
        except UnicodeDecodeError:
            # Signed by us but unreadable: only possible with a bug, still refuse it.
            raise Unauthorized("malformed credential") from None
        return realm_id, serial, expires_at_ms, type_text

    def verify(self, token: bytes, key_id: int, *, now_ms: int, grace_ms: int = 0) -> Credential:
        """Check a token's signature and expiry; return its claims as a Credential.

        Raises :class:`Unauthorized` for a forged, malformed or expired token.
        """
        realm_id, serial, expires_at_ms, type_text = self.claims(
            token, key_id, now_ms=now_ms, grace_ms=grace_ms
        )
        try:
            actr_type = ActrType.parse(type_text)
        except ActrError:
            raise Unauthorized("malformed credential") from None
        return Credential(key_id, ActrId(Realm(realm_id), serial, actr_type), expires_at_ms, token)

    def check(self, token: bytes, key_id: int, claimed: ActrId, *, now_ms: int) -> Credential:
        """Verify a token and that it belongs to ``claimed`` (the message's source).

        Raises :class:`Unauthorized` (401) when the token is forged, expired or names
        another actor, :class:`PermissionDenied` (403) when it is valid but for another
        realm than the one the message claims.
        """
        cred = self.verify(token, key_id, now_ms=now_ms)
        if cred.actr_id.realm != claimed.realm:
            raise PermissionDenied(
                f"credential of realm {cred.actr_id.realm} used for realm {claimed.realm}"
            )
        if cred.actr_id != claimed:
            raise Unauthorized(f"credential belongs to {cred.actr_id}, not {claimed}")
        return cred


KeysLike = KeyRing | Mapping[str, Any] | str | os.PathLike[str] | None


def load_keys(keys: KeysLike) -> KeyRing:
    """A KeyRing from a ring, a config dict, a key file path, or None (random key)."""
    if isinstance(keys, KeyRing):
        return keys
    if isinstance(keys, Mapping):
        return KeyRing.from_config(keys)
    if keys is None:
        log.info("no signaling keys given: using a random key; credentials end with this process")
        return KeyRing.generate()
    return KeyRing.from_file(keys)


def write_key_file(path: str | os.PathLike[str], ring: KeyRing | None = None) -> KeyRing:
    """Write ``ring`` (default: a freshly generated one) as a TOML key file, mode 0600.

    The file is created exclusively: an existing file is never overwritten (raises
    ``FileExistsError``). Returns the ring written.
    """
    ring = ring or KeyRing.generate()
    lines = [
        "# actrhost signaling keys: keep this file private (mode 0600).",
        f"current_key_id = {ring.current_key_id}",
    ]
    for entry in ring.to_config()["key"]:
        lines += ["", "[[key]]", f"id = {entry['id']}", f'secret_hex = "{entry["secret_hex"]}"']
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ring
