"""A node's identity between gateways: one DTLS certificate, and the node id it proves.

Gateways learn which node hosts which actor from signaling relays, and a relay's
session id names the sending node (``pc|<offering node>|<answering node>|…``). The
server authenticates the *actor* that relays, not the node it names, so a node id that
is only chosen at random could be named by anyone in the realm: a node could send an
offer in another node's name, and the receiver, believing that node had started over,
would drop the real connection and route the other node's traffic to the impostor.

So a node id is derived from a key only that node holds: it is the first
:data:`NODE_ID_HEX` hex digits (128 bits) of the SHA-256 fingerprint of the node's DTLS
certificate, the one every peer connection of the node uses. An offer or answer in the
name of node N is accepted only if its SDP's certificate fingerprints are N's
(:func:`sdp_proves_node`), and aiortc's DTLS handshake then checks that the peer holds
that certificate's private key. Nothing changes in signaling.

The supervisor creates the identity when the node starts (:func:`create_identity`,
a PEM file readable by the node's user only, in its run dir); a restarted gateway loads
it again, so it keeps its node id and its peers reconnect to it. A node started again
is a new node, with a new identity. This module imports ``cryptography`` only (not
aiortc): the supervisor uses it.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: Hex digits of a node id: 128 bits of the certificate's SHA-256 fingerprint, so that
#: making a certificate with another node's id is out of reach.
NODE_ID_HEX = 32
#: The certificate's validity (aiortc does not check it; WebRTC peers may).
VALID_DAYS = 3650


def create_identity(path: Path) -> str:
    """Make a key and a self-signed certificate (ECDSA P-256, as aiortc's own), write
    both to ``path`` (mode 0600) and return the node id."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "actrhost node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return node_id_of(cert)


def load_identity(path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The key and certificate :func:`create_identity` wrote; ``ValueError`` if the file
    does not hold them."""
    data = path.read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key, x509.load_pem_x509_certificate(data)


def node_id_of(cert: x509.Certificate) -> str:
    """The node id that ``cert`` proves."""
    return cert.fingerprint(hashes.SHA256()).hex()[:NODE_ID_HEX]


def sdp_proves_node(sdp: str, node_id: str) -> bool:
    """Whether ``sdp`` offers node ``node_id``'s certificate, and only it.

    Every part of the SDP (the session part and each media section) that names
    certificate fingerprints must name a SHA-256 one, and every SHA-256 fingerprint must
    be the node's. aiortc's handshake fails unless the peer's certificate matches every
    fingerprint of the section it uses, so the peer must hold the node's key. (Checking
    only that *some* SHA-256 line matches would not do: a section with a SHA-384 line
    alone would let another certificate through.)
    """
    if len(node_id) != NODE_ID_HEX:
        return False
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        elif line.startswith("a=fingerprint:"):
            sections[-1].append(line.removeprefix("a=fingerprint:").strip())
    named = [fingerprints for fingerprints in sections if fingerprints]
    if not named:
        return False
    for fingerprints in named:
        sha256 = [
            value.replace(":", "").lower()
            for algorithm, _, value in (f.partition(" ") for f in fingerprints)
            if algorithm.lower() == "sha-256"
        ]
        if not sha256 or not all(value.startswith(node_id) for value in sha256):
            return False
    return True
