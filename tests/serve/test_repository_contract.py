"""The repository contract both export and serve use (ortserve.protos.repository_layout), and how the
server answers client-supplied names and versions that break it."""

from __future__ import annotations

import grpc
import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb
from ortserve.protos import repository_layout as layout

X = np.ones((1, 4), np.float32)
CLASSIFIER = 'max_batch_size: 8\noutput [ { name: "logits" label_filename: "labels.txt" } ]\n'


@pytest.mark.parametrize(
    "name", ["clf", "my model", "résumé", "a.b-c_d", "x" * 255, "é" * 127, "1", "lost+found"]
)
def test_valid_model_names(name):
    assert layout.model_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        (".", "starts with a dot"),
        ("..", "starts with a dot"),
        (".git", "starts with a dot"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("/etc", "path separator"),
        ("a\0b", "control character"),
        ("a\nb", "control character"),
        ("x" * 256, "256 bytes long, at most 255"),
        ("é" * 128, "256 bytes long"),
        ("\udcff", "not valid UTF-8"),
    ],
)
def test_invalid_model_names(name, problem):
    assert problem in layout.model_name_problem(name)
    with pytest.raises(layout.InvalidModelName, match="one directory name"):
        layout.check_model_name(name)


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("1", 1), ("10", 10), ("123456789", 123456789)])
def test_versions_parse(text, number):
    assert layout.parse_version(text) == number


@pytest.mark.parametrize(
    "text", ["", "²", "１", "01", "-1", "+1", "1.0", " 1", "1 ", "one", "9" * 19, "9" * 5000]
)
def test_malformed_versions_are_value_errors(text):
    with pytest.raises(ValueError, match="decimal number"):
        layout.parse_version(text)


def test_version_folders_are_canonical_numeric_folders(tmp_path):
    for name in ("1", "2", "10", "²", "01", "notes", "-3"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a folder")
    (tmp_path / "4").symlink_to("2")
    assert list(layout.version_folders(tmp_path)) == [1, 2, 4, 10]
    assert layout.is_model_folder(tmp_path)
    assert not layout.is_model_folder(tmp_path / "notes")


def test_labels_are_stripped_trailing_blank_lines_ignored(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b" cat\r\ndog  \n\tbird\n\n  \n")
    assert layout.read_labels(path) == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("text", "message"), [("cat\n\ndog\n", r"blank lines at \[2\]"), ("", "is empty"), ("\n \n", "is empty")]
)
def test_labels_with_holes_are_refused(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(layout.InvalidLabels, match=message):
        layout.read_labels(path)


def test_undecodable_labels_are_refused(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(layout.InvalidLabels, match="cannot read"):
        layout.read_labels(path)


def test_written_labels_read_back_identically(tmp_path):
    labels = ["cat", "hot dog", "ünïcode"]
    path = tmp_path / "labels.txt"
    path.write_text(layout.format_labels(labels), encoding="utf-8")
    assert layout.read_labels(path) == labels
    for bad in (["cat", ""], [" cat"], ["a\nb"], ["a\rb"], []):
        with pytest.raises(layout.InvalidLabels):
            layout.format_labels(bad)


def test_inside_allows_links_that_stay_in_the_folder(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "f").write_text("x")
    (tmp_path / "m" / "link").symlink_to("sub/f")
    (tmp_path / "m" / "out").symlink_to(tmp_path)
    assert layout.inside(tmp_path / "m", "link", "file") == (tmp_path / "m" / "sub" / "f").resolve()
    assert layout.inside(tmp_path / "m" / "sub", "f", "file", bound=tmp_path / "m").name == "f"
    for relative in ("", "../m/link", "/etc/passwd", "sub/../link", "out", "out/x", "a\0b"):
        with pytest.raises(layout.PathOutsideModel):
            layout.inside(tmp_path / "m", relative, "file")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("contract") / "models"
    models.write_model(repo, "clf", models.linear_classifier(), CLASSIFIER, labels=[" cat ", "dog\t", "bird"])
    models.write_model(repo, "holes", models.linear_classifier(), CLASSIFIER, labels=["cat", "", "bird"])
    with start_server(repo, "--model-control-mode", "explicit", "--load-model", "clf") as process:
        yield process


def _rpc_error(call, message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(message)
    return error.value


def _still_answers(client) -> None:
    response = client.ModelInfer(request("clf", {"input": X}, ["logits"], classification={"logits": 3}))
    labels = [item.decode().rsplit(":", 1)[1] for item in outputs(response)["logits"][0]]
    assert labels == ["bird", "dog", "cat"]  # best first; the file's " cat " and "dog\t" come stripped


def test_serve_reads_labels_as_export_writes_them(server):
    client = stub(server.grpc_address)
    _still_answers(client)  # " cat " and "dog\t" were stripped
    error = _rpc_error(client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="holes"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output 'logits'" in error.details() and "blank lines at [2]" in error.details()


@pytest.mark.parametrize("name", ["x" * 256, "é" * 200, "n" * 100_000, "a/" * 50_000])
def test_long_or_bad_model_names_are_invalid_argument_and_cut(server, name):
    client = stub(server.grpc_address)
    for call, message in (
        (client.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name)),
        (client.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name)),
    ):
        error = _rpc_error(call, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "invalid model name" in error.details() and len(error.details()) < 300
    error = _rpc_error(client.ModelInfer, request(name, {"input": X}))
    assert error.code() == grpc.StatusCode.NOT_FOUND and len(error.details()) < 200
    _still_answers(client)


@pytest.mark.parametrize("version", ["²", "１", "01", "-1", "1.0", "v1", "9" * 5000])
def test_malformed_versions_are_invalid_argument(server, version):
    client = stub(server.grpc_address)
    for call, message in (
        (client.ModelInfer, request("clf", {"input": X}, version=version)),
        (client.ModelMetadata, pb.ModelMetadataRequest(name="clf", version=version)),
        (client.ModelConfig, pb.ModelConfigRequest(name="clf", version=version)),
        (client.ModelStatistics, pb.ModelStatisticsRequest(name="clf", version=version)),
    ):
        error = _rpc_error(call, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "is not a version number" in error.details() and len(error.details()) < 300
    assert not client.ModelReady(pb.ModelReadyRequest(name="clf", version=version)).ready
    _still_answers(client)


def test_unknown_versions_are_not_found(server):
    client = stub(server.grpc_address)
    error = _rpc_error(client.ModelInfer, request("clf", {"input": X}, version="7"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "version 7" in error.details()
    assert client.ModelInfer(request("clf", {"input": X}, version="1")).model_version == "1"


def test_load_requests_with_huge_names_and_parameters_get_short_messages(server):
    client = stub(server.grpc_address)
    message = pb.RepositoryModelLoadRequest(model_name="n" * 100_000, repository_name="r" * 100_000)
    error = _rpc_error(client.RepositoryModelLoad, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(error.details()) < 300
    message = pb.RepositoryModelLoadRequest(model_name="n" * 100_000)
    message.parameters["p" * 100_000].bool_param = True
    error = _rpc_error(client.RepositoryModelLoad, message)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and len(error.details()) < 300
    _still_answers(client)
