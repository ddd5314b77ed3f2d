"""TLS and mutual TLS against a server started with certificates made by the openssl command line."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from serverproc import start_server

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceServerError, RetryPolicy, commands

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command is not installed"
)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-out", cert, "-extfile", ext)  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=ortserve-test-ca")  # fmt: skip
    server_cert, server_key = _signed(
        directory,
        "server",
        ca,
        ca_key,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client_cert, client_key = _signed(directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return {"ca": ca, "server_cert": server_cert, "server_key": server_key,
            "client_cert": client_cert, "client_key": client_key}  # fmt: skip


@pytest.fixture(scope="module")
def mtls_server(repository: Path, pki: dict[str, Path]):
    args = ["--grpc-use-ssl", "true", "--grpc-use-ssl-mutual", "true", "--grpc-root-cert", pki["ca"],
            "--grpc-server-cert", pki["server_cert"], "--grpc-server-key", pki["server_key"]]  # fmt: skip
    with start_server(repository, *map(str, args)) as running:
        yield running


def test_mutual_tls_with_paths_and_bytes(mtls_server, pki: dict[str, Path]):
    with InferenceClient(
        mtls_server.grpc_address,
        root_certificates=pki["ca"],
        private_key=str(pki["client_key"]),
        certificate_chain=pki["client_cert"].read_bytes(),
    ) as client:
        assert client.is_server_ready() is True
        assert len(client.classify("image_u8", np.zeros((16, 16), np.uint8))) == 5


def test_async_mutual_tls(mtls_server, pki: dict[str, Path]):
    async def live() -> bool:
        async with AsyncInferenceClient(
            mtls_server.grpc_address,
            ssl=True,
            root_certificates=pki["ca"],
            private_key=pki["client_key"],
            certificate_chain=pki["client_cert"],
        ) as client:
            return await client.is_server_live()

    assert asyncio.run(live()) is True


def test_missing_client_certificate_is_refused(mtls_server, pki: dict[str, Path]):
    no_retries = RetryPolicy(max_attempts=1)
    with InferenceClient(mtls_server.grpc_address, root_certificates=pki["ca"], retries=no_retries) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.is_server_live(timeout=10)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_cannot_talk_to_a_tls_server(mtls_server):
    with InferenceClient(mtls_server.grpc_address, retries=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(InferenceServerError) as caught:
            client.is_server_live(timeout=10)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_cli_flags_for_mutual_tls(mtls_server, pki: dict[str, Path], capsys: pytest.CaptureFixture):
    argv = ["--url", mtls_server.grpc_address, "--root-cert", str(pki["ca"]), "--client-cert",
            str(pki["client_cert"]), "--client-key", str(pki["client_key"])]  # fmt: skip
    assert commands.main(argv, command="health") == 0
    assert capsys.readouterr().out == "server live: yes\nserver ready: yes\n"
