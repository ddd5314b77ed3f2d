"""The repository on a real volume: lost+found, hidden folders, stray files, an empty repository, and paths
that lead outside a model's folder (symbolic links, '..', absolute paths in config.pbtxt)."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import onnx_models as models
import pytest
from kserve import outputs, request, stub
from serverproc import start_server

from ortserve.protos import grpc_service_pb2 as pb

X = np.ones((1, 4), np.float32)
LABELS = ["cat", "dog", "bird"]
CLASSIFIER = 'max_batch_size: 8\noutput [ { name: "logits" label_filename: "%s" } ]\n'


@pytest.fixture
def without_root_file_access(tmp_path, monkeypatch):
    """Start servers without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so that a folder with mode 000 is as
    unreadable to them as to the non-root user a volume's lost+found is unreadable to (tests run as root)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's file-access capabilities")
    wrapper = tmp_path / "python-without-dac"
    wrapper.write_text(
        f'#!/bin/sh\nexec {setpriv} --bounding-set -dac_override,-dac_read_search {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))  # start_server runs sys.executable


def _index(client) -> dict[str, list[tuple[str, str, str]]]:
    rows: dict[str, list[tuple[str, str, str]]] = {}
    for m in client.RepositoryIndex(pb.RepositoryIndexRequest()).models:
        rows.setdefault(m.name, []).append((m.version, m.state, m.reason))
    return rows


def test_folders_that_are_not_models_are_skipped_and_never_block_readiness(
    tmp_path, without_root_file_access
):
    repo = tmp_path / "volume"
    models.write_model(repo, "clf", models.linear_classifier(), CLASSIFIER % "labels.txt", labels=LABELS)
    lost = repo / "lost+found"
    (lost / "#1234").mkdir(parents=True)
    models.write_model(repo, ".hidden", models.linear_classifier())
    (repo / "notes").mkdir()  # a folder without config.pbtxt or a version folder
    (repo / "README.md").write_text("models for the cluster\n")
    lost.chmod(0o000)
    try:
        with start_server(repo) as server:
            client = stub(server.grpc_address)
            assert client.ServerReady(pb.ServerReadyRequest()).ready, server.stderr()
            assert list(_index(client)) == ["clf"]
            log = server.stderr()
            assert "skipping 'lost+found': unreadable folder: Permission denied" in log
            assert "skipping '.hidden': hidden" in log
            assert "skipping 'notes': not a model: no config.pbtxt and no numeric version folder" in log
            assert "skipping 'README.md': not a folder" in log
            assert log.count("skipping 'lost+found'") == 1  # once, however often the index is asked for
            assert "Traceback" not in log
            response = client.ModelInfer(
                request("clf", {"input": X}, ["logits"], classification={"logits": 1})
            )
            assert outputs(response)["logits"][0, 0].decode().endswith(":2:bird")
    finally:
        lost.chmod(0o755)


@pytest.mark.parametrize("content", ["nothing", "only lost+found"])
def test_a_repository_without_a_model_is_not_ready(tmp_path, content):
    repo = tmp_path / "volume"
    repo.mkdir()
    if content != "nothing":
        (repo / "lost+found").mkdir()
    with start_server(repo) as server:
        client = stub(server.grpc_address)
        assert client.ServerLive(pb.ServerLiveRequest()).live
        assert not client.ServerReady(pb.ServerReadyRequest()).ready
        assert list(client.RepositoryIndex(pb.RepositoryIndexRequest()).models) == []
        assert "holds no model" in server.stderr() and "ServerReady stays false" in server.stderr()


@pytest.fixture(scope="module")
def escapes(tmp_path_factory):
    """A repository whose models each try to read something outside their folder, beside good ones."""
    base = tmp_path_factory.mktemp("escapes")
    repo, outside = base / "models", base / "outside"
    classifier = models.linear_classifier()
    models.write_model(outside, "elsewhere", classifier, labels=["secret"])
    models.write_model(repo, "clf", classifier, "max_batch_size: 8")
    # Symbolic links inside the model folder are fine.
    models.write_model(
        repo, "inside_links", classifier, CLASSIFIER % "names.txt", labels=LABELS, labels_filename="real.txt"
    )
    (repo / "inside_links" / "names.txt").symlink_to("real.txt")
    (repo / "inside_links" / "weights").mkdir()
    (repo / "inside_links" / "1" / "model.onnx").rename(repo / "inside_links" / "weights" / "model.onnx")
    (repo / "inside_links" / "1" / "model.onnx").symlink_to("../weights/model.onnx")
    # Each of these leads outside.
    (repo / "linked_folder").symlink_to(outside / "elsewhere")
    (repo / "linked_version" / "1").parent.mkdir()
    (repo / "linked_version" / "1").symlink_to(outside / "elsewhere" / "1")
    (repo / "linked_file" / "1").mkdir(parents=True)
    (repo / "linked_file" / "1" / "model.onnx").symlink_to(outside / "elsewhere" / "1" / "model.onnx")
    models.write_model(repo, "labels_up", classifier, CLASSIFIER % "../../../etc/passwd")
    models.write_model(repo, "labels_absolute", classifier, CLASSIFIER % "/etc/passwd")
    models.write_model(repo, "labels_linked", classifier, CLASSIFIER % "labels.txt")
    (repo / "labels_linked" / "labels.txt").symlink_to("/etc/passwd")
    for name, filename in (("file_up", "../../clf/1/model.onnx"), ("file_absolute", str(outside))):
        models.write_model(repo, name, classifier, f'default_model_filename: "{filename}"')
    (repo / "config_linked" / "1").mkdir(parents=True)
    (repo / "config_linked" / "config.pbtxt").symlink_to(outside / "config.pbtxt")
    (outside / "config.pbtxt").write_text("max_batch_size: 8\n")
    with start_server(repo, "--strict-readiness", "false") as server:
        yield server


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("linked_folder", "model folder 'linked_folder' leads outside the model folder (symbolic link)"),
        ("linked_version", "version folder '1' leads outside the model folder (symbolic link)"),
        ("linked_file", "default_model_filename 'model.onnx' leads outside the model folder"),
        ("labels_up", "label_filename '../../../etc/passwd' must be a relative path inside the model folder"),
        ("labels_absolute", "label_filename '/etc/passwd' must be a relative path inside the model folder"),
        ("labels_linked", "label_filename 'labels.txt' leads outside the model folder (symbolic link)"),
        ("file_up", "default_model_filename '../../clf/1/model.onnx' must be a relative path inside"),
        ("file_absolute", "default_model_filename '/"),
        ("config_linked", "config.pbtxt 'config.pbtxt' leads outside the model folder (symbolic link)"),
    ],
)
def test_paths_leading_outside_the_model_folder_are_refused_with_the_reason(escapes, name, reason):
    client = stub(escapes.grpc_address)
    rows = _index(client)[name]
    assert len(rows) == 1 and rows[0][1] == "UNAVAILABLE" and reason in rows[0][2], rows
    assert "secret" not in rows[0][2] and "root:" not in rows[0][2]
    assert not client.ModelReady(pb.ModelReadyRequest(name=name)).ready


def test_links_inside_the_model_folder_are_followed(escapes):
    client = stub(escapes.grpc_address)
    assert _index(client)["inside_links"] == [("1", "READY", "")]
    assert _index(client)["clf"] == [("1", "READY", "")]
    response = client.ModelInfer(
        request("inside_links", {"input": X}, ["logits"], classification={"logits": 3})
    )
    labels = [item.decode().rsplit(":", 1)[1] for item in outputs(response)["logits"][0]]
    assert sorted(labels) == sorted(LABELS)
