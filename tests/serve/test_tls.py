"""TLS and mutual TLS on the gRPC listener, with certificates made by the openssl CLI at test time."""

from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl CLI to make certificates"
)
X = np.ones((1, 4), np.float32)


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.pem, server.pem/server.key (for 127.0.0.1 and localhost), client.pem/client.key."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ortserve test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("tls") / "models"
    models.write_model(repo, "classifier", models.linear_classifier())
    return repo


def _read(pki, name: str) -> bytes:
    return (pki / name).read_bytes()


def test_tls_round_trip(pki, repo):
    args = ["--grpc-use-ssl", "true", "--grpc-server-cert", str(pki / "server.pem"),
            "--grpc-server-key", str(pki / "server.key")]  # fmt: skip
    with start_server(repo, *args) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=_read(pki, "ca.pem"))
        client = stub(server.grpc_address, credentials)
        got = outputs(client.ModelInfer(request("classifier", {"input": X})))
        np.testing.assert_allclose(got["logits"], models.classifier_reference(X)["logits"], rtol=1e-5)
        plaintext = stub(server.grpc_address)
        with pytest.raises(grpc.RpcError):
            plaintext.ServerLive(pb.ServerLiveRequest(), timeout=5)


def test_mutual_tls_needs_a_client_certificate(pki, repo):
    args = ["--grpc-use-ssl", "--grpc-use-ssl-mutual", "--grpc-server-cert", str(pki / "server.pem"),
            "--grpc-server-key", str(pki / "server.key"),
            "--grpc-root-cert", str(pki / "ca.pem")]  # fmt: skip
    with start_server(repo, *args) as server:
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=_read(pki, "ca.pem"),
            private_key=_read(pki, "client.key"),
            certificate_chain=_read(pki, "client.pem"),
        )
        client = stub(server.grpc_address, with_cert)
        assert client.ServerLive(pb.ServerLiveRequest()).live
        outputs(client.ModelInfer(request("classifier", {"input": X})))
        without_cert = stub(
            server.grpc_address, grpc.ssl_channel_credentials(root_certificates=_read(pki, "ca.pem"))
        )
        with pytest.raises(grpc.RpcError) as error:
            without_cert.ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def _serve_exit(repo, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ortserve.serve", "--model-repository", str(repo), "--grpc-port", "0",
               "--metrics-port", "0", "--grpc-use-ssl", "true", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def bad_files(pki):
    """not_pem.txt, an encrypted copy of server.key."""
    (pki / "not_pem.txt").write_text("this is not PEM\n")
    _openssl(
        "pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key", cwd=pki
    )
    return pki


@pytest.mark.parametrize(
    ("cert", "key", "root", "expected"),
    [
        ("server.pem", "not_pem.txt", None, "--grpc-server-key {key}: not a PEM private key"),
        ("server.pem", "client.key", None, "--grpc-server-key {key}: key does not match certificate {cert}"),
        ("server.pem", "encrypted.key", None, "--grpc-server-key {key}: the key is encrypted"),
        ("not_pem.txt", "server.key", None, "--grpc-server-cert {cert}: not a PEM certificate"),
        ("server.pem", "server.key", "not_pem.txt", "--grpc-root-cert {root}: not a PEM certificate"),
    ],
)
def test_a_bad_certificate_or_key_exits_2_with_the_reason(bad_files, repo, cert, key, root, expected):
    cert, key = str(bad_files / cert), str(bad_files / key)
    args = ["--grpc-server-cert", cert, "--grpc-server-key", key]
    if root is not None:
        root = str(bad_files / root)
        args += ["--grpc-use-ssl-mutual", "true", "--grpc-root-cert", root]
    result = _serve_exit(repo, *args)
    assert result.returncode == 2, result.stderr
    assert expected.format(cert=cert, key=key, root=root) in result.stderr
    assert "Failed to bind" not in result.stderr
    assert "Traceback" not in result.stderr
