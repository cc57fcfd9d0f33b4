"""A node's id is proved by its DTLS certificate (``gateway/_identity.py``)."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from actrhost.gateway._identity import (
    NODE_ID_HEX,
    create_identity,
    load_identity,
    node_id_of,
    sdp_proves_node,
)


def fingerprint_line(path: Path, algorithm: str = "sha-256") -> str:
    """``a=fingerprint:...`` of the certificate at ``path``, as aiortc writes it."""
    _key, cert = load_identity(path)
    digest = {"sha-256": hashes.SHA256(), "sha-384": hashes.SHA384()}[algorithm]
    value = cert.fingerprint(digest).hex().upper()
    return f"a=fingerprint:{algorithm} " + ":".join(
        value[i : i + 2] for i in range(0, len(value), 2)
    )


def sdp(*sections: list[str]) -> str:
    """A session part and media sections, each a list of attribute lines."""
    session, *media = sections
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", *session]
    for index, attributes in enumerate(media):
        lines += [f"m=application {9 + index} DTLS/SCTP 5000", *attributes]
    return "\r\n".join(lines) + "\r\n"


def test_the_node_id_is_the_certificates_fingerprint_and_the_file_is_private(tmp_path):
    path = tmp_path / "id.pem"
    node_id = create_identity(path)
    _key, cert = load_identity(path)
    assert node_id == node_id_of(cert) == cert.fingerprint(hashes.SHA256()).hex()[:NODE_ID_HEX]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_identity(tmp_path / "other.pem") != node_id


def test_an_sdp_proves_a_node_only_with_that_nodes_certificate_everywhere(tmp_path):
    mine, theirs = tmp_path / "mine.pem", tmp_path / "theirs.pem"
    node_id = create_identity(mine)
    create_identity(theirs)
    ours_256, ours_384 = fingerprint_line(mine), fingerprint_line(mine, "sha-384")
    theirs_256, theirs_384 = fingerprint_line(theirs), fingerprint_line(theirs, "sha-384")
    # As aiortc writes it: every algorithm in every media section.
    assert sdp([], [ours_256, ours_384], [ours_256, ours_384]).count("fingerprint") == 4
    assert sdp_proves_node(sdp([], [ours_256, ours_384], [ours_256, ours_384]), node_id)
    assert sdp_proves_node(sdp([ours_256], []), node_id)  # at session level
    assert sdp_proves_node(sdp([], [ours_256.lower()]), node_id)
    # Refused: another certificate, anywhere; a section without a SHA-256 fingerprint
    # (aiortc would take the SHA-384 one alone); no fingerprint; a malformed node id.
    assert not sdp_proves_node(sdp([], [theirs_256, theirs_384]), node_id)
    assert not sdp_proves_node(sdp([], [ours_256], [theirs_256]), node_id)
    assert not sdp_proves_node(sdp([], [ours_256, theirs_256]), node_id)
    assert not sdp_proves_node(sdp([], [ours_256], [theirs_384]), node_id)
    assert not sdp_proves_node(sdp([ours_256], [theirs_384]), node_id)
    assert not sdp_proves_node(sdp([], []), node_id)
    assert not sdp_proves_node(sdp([], [ours_256]), node_id[:12])
    assert not sdp_proves_node(sdp([], [ours_256]), "")
