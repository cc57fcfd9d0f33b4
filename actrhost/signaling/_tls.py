"""TLS for signaling (``wss://``): the server's certificate, and what clients trust.

Signaling carries every actor's credential, so a server reached over a network that is
not trusted should use TLS: ``actrhost signal --tls-cert cert.pem --tls-key key.pem``
serves ``wss://``, and nodes trust its certificate through the system's CA store or,
for a self-signed or private-CA certificate, ``[signaling] ca_file``. WebRTC itself is
always encrypted (DTLS), whatever signaling uses.
"""

from __future__ import annotations

import os
import ssl

from websockets.exceptions import InvalidHandshake

from .._errors import ConfigError, Unavailable

__all__ = ["client_context", "connect_error_text", "server_context"]

PathLike = str | os.PathLike[str]


def server_context(cert_file: PathLike, key_file: PathLike | None = None) -> ssl.SSLContext:
    """A server context from a PEM certificate chain and its private key (``key_file``
    None: the key is in ``cert_file``). Raises :class:`ConfigError` naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            if exc.reason == "KEY_VALUES_MISMATCH":
                problem = f"the key in {os.fspath(key_file or cert_file)} is not this certificate's"
                raise ConfigError(os.fspath(cert_file), "", problem) from None
            # OpenSSL says only "PEM lib": find out which of the two files it could not use.
            if not _holds_certificate(cert_file):
                raise ConfigError(os.fspath(cert_file), "", "holds no PEM certificate") from None
            if key_file is None:
                problem = "holds a certificate but no private key: give the key's file too"
                raise ConfigError(os.fspath(cert_file), "", problem) from None
            raise ConfigError(os.fspath(key_file), "", "holds no PEM private key") from None
        where = exc.filename or cert_file
        raise ConfigError(os.fspath(where), "", f"cannot read it: {exc.strerror}") from None
    return context


def _holds_certificate(path: PathLike) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(path)
    except (OSError, ValueError):
        return False
    return True


def client_context(url: str, ca_file: PathLike | None = None) -> ssl.SSLContext | None:
    """What a ``wss://`` server's certificate must chain to: the certificates in
    ``ca_file``, else the system's CA store; None for ``ws://``."""
    if not url.startswith("wss://"):
        return None
    return ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)


def certificate_error(
    url: str, exc: ssl.SSLCertVerificationError, ca_file: str | None
) -> Unavailable:
    """The error of a server certificate that did not verify, with what to do: give
    its CA, or (one was given) that it is not the one (QA: the hint said to give one)."""
    hint = (
        f"it does not chain to the CA in {ca_file} ([signaling] ca_file, --ca-file)"
        if ca_file
        else "for a self-signed or private-CA certificate, give its CA: [signaling] "
        "ca_file, or --ca-file"
    )
    return Unavailable(
        f"the certificate of signaling server {url} failed verification: "
        f"{exc.verify_message} ({hint})"
    )


def connect_error_text(url: str, exc: BaseException) -> str:
    """What a failed connection attempt says, with a hint when the URL's scheme and the
    server disagree about TLS (a common slip: each side only sees garbage)."""
    text = str(exc) or type(exc).__name__
    if url.startswith("wss://") and isinstance(exc, (ConnectionResetError, ssl.SSLError)):
        return f"{text}; is it a ws:// server, without TLS?"
    if url.startswith("ws://") and isinstance(exc, InvalidHandshake) and "HTTP" in text:
        return f"{text}; is it a wss:// server, with TLS?"
    return text
