"""How our own clients (``recommend``, ``simulate``) reach a server: plaintext, or TLS against a CA."""

from __future__ import annotations

from pathlib import Path

import grpc

from kapparec.errors import KapparecError


def open_channel(server: str, tls_ca: Path | None = None) -> grpc.Channel:
    """A channel to ``server``; with ``tls_ca``, TLS that trusts the certificates that CA (PEM) issued."""
    if tls_ca is None:
        return grpc.insecure_channel(server)
    try:
        roots = tls_ca.read_bytes()
    except OSError as exc:
        raise KapparecError(f"--tls-ca {tls_ca}: {exc.strerror}") from None
    return grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=roots))


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
