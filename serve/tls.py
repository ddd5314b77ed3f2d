"""The gRPC listener's TLS credentials, checked with the ssl module first so that a bad file is named.

grpc only says "Failed to bind to address" for a certificate or key it cannot use; ssl says why.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from .settings import ServerSettings


class TlsError(ValueError):
    """A certificate or key cannot be used; the message names the flag, the file and the reason."""


def _read(flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"--{flag} {path}: cannot read: {exc.strerror or exc}") from None


def _check_certificates(flag: str, path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(
            f"--{flag} {path}: not a PEM certificate ({getattr(exc, 'reason', None) or exc})"
        ) from None


def _check_pair(cert: str, key: str, key_pem: bytes) -> None:
    if b"-----BEGIN" not in key_pem or b"PRIVATE KEY-----" not in key_pem:
        raise TlsError(f"--grpc-server-key {key}: not a PEM private key")

    def refuse_password() -> str:
        raise TlsError(f"--grpc-server-key {key}: the key is encrypted (give it unencrypted)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=refuse_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError(f"--grpc-server-key {key}: key does not match certificate {cert}") from None
        raise TlsError(
            f"--grpc-server-key {key}: not a usable PEM private key ({exc.reason or exc})"
        ) from None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials:
    """grpc.ssl_server_credentials for the settings' files; raises TlsError naming what is wrong."""
    chain = _read("grpc-server-cert", settings.grpc_server_cert)
    key = _read("grpc-server-key", settings.grpc_server_key)
    _check_certificates("grpc-server-cert", settings.grpc_server_cert)
    _check_pair(settings.grpc_server_cert, settings.grpc_server_key, key)
    root = None
    if settings.grpc_root_cert:
        root = _read("grpc-root-cert", settings.grpc_root_cert)
        _check_certificates("grpc-root-cert", settings.grpc_root_cert)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=root, require_client_auth=settings.grpc_use_ssl_mutual
    )
