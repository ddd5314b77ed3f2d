"""Export writes what serve reads: one model-name rule, one labels reader, one version listing
(ortserve.protos.repository_layout), and a config.pbtxt whose every field the server honours."""

from __future__ import annotations

from pathlib import Path

import onnx_models as models
import pytest

from ortserve.export.errors import RepositoryError
from ortserve.export.repository import (
    build_config,
    check_model_name,
    existing_versions,
    graph_tensors,
    read_labels,
    write_version,
)
from ortserve.protos import repository_layout as layout
from ortserve.serve import config_support


def _config(name: str, labels: bool = True):
    inputs, outputs = graph_tensors(models.linear_classifier())
    return build_config(
        name,
        inputs,
        outputs,
        max_batch_size=8,
        parameters={
            "preprocessing": {"scale": 1},
            "exporter": "dynamo",
            "kind": "image",
            "precision": "fp32",
        },
        image_input=True,
        label_output="logits" if labels else None,
    )


@pytest.mark.parametrize("name", ["clf", "my model", "résumé", "x" * 255])
def test_names_the_server_accepts_export_accepts(repo: Path, name: str) -> None:
    check_model_name(name)
    written = write_version(repo, name, models.linear_classifier(), _config(name), ["cat", "dog", "bird"])
    assert written.model_dir.name == name and layout.is_model_folder(written.model_dir)
    assert existing_versions(written.model_dir) == [1]
    assert layout.read_labels(written.labels_path) == ["cat", "dog", "bird"]


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "x" * 256, "é" * 128, "a\nb"])
def test_names_the_server_refuses_export_refuses(repo: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="must be a plain directory name"):
        check_model_name(name)
    assert layout.model_name_problem(name) is not None


@pytest.mark.parametrize("labels", [["cat", ""], [" cat", "dog"], ["a\nb"]])
def test_labels_the_server_would_read_differently_are_refused(repo: Path, labels: list[str]) -> None:
    with pytest.raises(RepositoryError, match="labels for 'clf'"):
        write_version(repo, "clf", models.linear_classifier(), _config("clf"), labels)
    assert not (repo / "clf").exists()


def test_the_labels_file_is_read_by_the_one_reader(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(" cat \ndog\n\n")
    assert read_labels(path) == layout.read_labels(path) == ["cat", "dog"]
    path.write_text("cat\n\ndog\n")
    with pytest.raises(RepositoryError, match="blank lines at"):
        read_labels(path)


def test_versions_are_listed_as_the_server_lists_them(repo: Path) -> None:
    for _ in range(2):
        write_version(repo, "clf", models.linear_classifier(), _config("clf", labels=False), None)
    (repo / "clf" / "²").mkdir()
    (repo / "clf" / "07").mkdir()
    assert existing_versions(repo / "clf") == list(layout.version_folders(repo / "clf")) == [1, 2]
    written = write_version(repo, "clf", models.linear_classifier(), _config("clf", labels=False), None)
    assert written.version == 3


def test_the_config_export_writes_is_fully_honoured_by_the_server() -> None:
    assert config_support.config_notes(_config("clf")) == []
