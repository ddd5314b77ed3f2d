"""Channel settings shared by the sync and asyncio clients: retries, keepalive, TLS, message sizes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# The server's default limit in both directions; larger tensors need the limit raised on both sides.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls that failed with a retryable code, with exponential backoff and jitter.

    Only idempotent calls are retried: health, metadata, config, repository index and (unless
    `retry_infer` is False) inference. Loading and unloading models are never retried.
    """

    max_attempts: int = 3
    """Tries per call, the first included; 1 disables retries."""
    initial_backoff_s: float = 0.05
    """Upper bound of the wait before the first retry."""
    max_backoff_s: float = 1.0
    """Upper bound of any single wait."""
    multiplier: float = 2.0
    """Growth of the wait bound per retry."""
    retry_infer: bool = True
    """Retry ModelInfer too: inference on ortserve's stateless models has no side effects."""
    retry_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )
    """Status codes that mean "the request did not get through; try again"."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("RetryPolicy backoffs must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number `retry` (0-based): "equal jitter" within [bound/2, bound]."""
        bound = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry)
        return random.uniform(bound / 2, bound)


NO_RETRIES = RetryPolicy(max_attempts=1)


def channel_options(
    retries: RetryPolicy,
    max_message_bytes: int,
    keepalive_time_ms: int | None,
    keepalive_timeout_ms: int,
    keepalive_permit_without_calls: bool,
    http2_max_pings_without_data: int,
) -> list[tuple[str, int]]:
    """gRPC channel arguments (long-standing names only, so that old grpcio releases accept them)."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # A failed connection is retried by the channel on its own schedule (1 s at first by default);
        # align it with our backoff so that a retry finds a fresh connection attempt, not the old failure.
        # (Not grpc.min_reconnect_backoff_ms: gRPC uses it as the minimum connect timeout, 20 s.)
        ("grpc.initial_reconnect_backoff_ms", max(1, int(retries.initial_backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(retries.max_backoff_s * 1000))),
    ]
    if keepalive_time_ms is not None:
        options += [
            ("grpc.keepalive_time_ms", keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(keepalive_permit_without_calls)),
            ("grpc.http2.max_pings_without_data", http2_max_pings_without_data),
        ]
    return options


def _pem(value: str | Path | bytes | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(value)!r}: {exc.strerror or exc}") from exc


def channel_credentials(
    root_certificates: str | Path | bytes | None,
    private_key: str | Path | bytes | None,
    certificate_chain: str | Path | bytes | None,
) -> grpc.ChannelCredentials:
    """TLS credentials: a custom root (else the system roots), plus a client key and chain for mTLS."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("mutual TLS needs both private_key and certificate_chain")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates, "root certificates"),
        private_key=_pem(private_key, "private key"),
        certificate_chain=_pem(certificate_chain, "certificate chain"),
    )
