"""What --model-repository points at: a repository root, one model folder, or a bare .onnx file.

KServe's storage initializer puts any of the three at /mnt/models. The layout is decided once, at start:
1. the folder holds config.pbtxt or a numeric version folder: ONE MODEL FOLDER, served as --model-name;
2. else it holds .onnx files directly: exactly one, and no model folder beside it: a BARE MODEL FILE,
   served as version 1 of --model-name with its config completed from the ONNX graph;
3. else: a REPOSITORY ROOT whose model folders are the models.
--model-name defaults to the folder's own name. Anything else (several .onnx files, a .onnx file beside
model folders) is refused at start rather than guessed.

In a repository root, an entry is a model when it is a folder (not hidden, a valid model name) holding
config.pbtxt or a numeric version folder; anything else (lost+found, stray files, unreadable folders) is
skipped with one log line and never listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ortserve.protos import model_config_pb2
from ortserve.protos import repository_layout as layout

from .errors import ModelLoadError, NotFound, clip

log = logging.getLogger(__name__)

REPOSITORY, MODEL_FOLDER, MODEL_FILE = "repository root", "one model folder", "bare model file"


class LayoutError(ValueError):
    """--model-repository cannot be read as any of the three layouts; the message says why."""


@dataclass
class Layout:
    """The detected layout and, for a repository root, what was skipped (logged once per entry)."""

    kind: str
    root: Path
    model_name: str = ""
    model_file: str = ""
    _skipped: dict[str, str] = field(default_factory=dict)
    _said_empty: bool = False

    @classmethod
    def detect(cls, root: Path, model_name: str = "") -> Layout:
        """Decide the layout of `root` (see the module docstring); LayoutError when it is ambiguous."""
        try:
            entries = sorted(root.iterdir())
            single_folder = layout.is_model_folder(root)
        except OSError as exc:
            raise LayoutError(f"cannot read the model repository {root}: {exc.strerror or exc}") from None
        name = model_name or root.resolve().name
        if single_folder or any(p.suffix == layout.MODEL_SUFFIX and p.is_file() for p in entries):
            problem = layout.model_name_problem(name)
            if problem:
                raise LayoutError(f"model name {clip(name)!r} (--model-name) is not valid: {problem}")
        if single_folder:
            found = cls(MODEL_FOLDER, root, name)
        else:
            files = [p.name for p in entries if p.suffix == layout.MODEL_SUFFIX and p.is_file()]
            if len(files) > 1:
                raise LayoutError(
                    f"{root} holds several model files {files[:5]} and no config.pbtxt: put each model in "
                    "its own folder (NAME/1/model.onnx) to serve them as a repository"
                )
            folders = [p.name for p in entries if p.is_dir() and _is_model(p)]
            if files and folders:
                raise LayoutError(
                    f"{root} holds both a bare model file {files[0]} and model folders {folders[:5]}: "
                    "move the file into its own model folder"
                )
            found = cls(MODEL_FILE, root, name, files[0]) if files else cls(REPOSITORY, root)
        if found.kind == REPOSITORY:
            if model_name:
                log.info("%s is a repository root: its folders name the models (--model-name ignored)", root)
            else:
                log.info("%s is a repository root", root)
        elif found.kind == MODEL_FOLDER:
            log.info("serving one model directory %s as '%s'", root, name)
        else:
            log.info("serving one model file %s as '%s' version 1", root / found.model_file, name)
        return found

    def model_names(self) -> list[str]:
        """The models, sorted. A repository root's non-models are skipped (logged the first time)."""
        if self.kind != REPOSITORY:
            return [self.model_name]
        try:
            entries = sorted(self.root.iterdir())
        except OSError as exc:
            self._skip("", f"the model repository cannot be read: {exc.strerror or exc}")
            return []
        names = []
        for path in entries:
            reason = _not_a_model(path)
            if reason:
                self._skip(path.name, reason)
            else:
                names.append(path.name)
        if not names and not self._said_empty:
            self._said_empty = True
            log.error(
                "the model repository %s holds no model (a model is a folder with config.pbtxt or a "
                "numeric version folder): ServerReady stays false",
                self.root,
            )
        return names

    def _skip(self, name: str, reason: str) -> None:
        if self._skipped.get(name) != reason:
            self._skipped[name] = reason
            log.warning("model repository: skipping %r: %s", name, reason)

    def model_folder(self, name: str, confine: bool = True) -> Path:
        """The folder of model `name`: NotFound when there is no such model, ModelLoadError (with
        `confine`) when it leads outside the repository."""
        if self.kind != REPOSITORY:
            if name != self.model_name:
                raise NotFound(f"model '{clip(name)}' is not in the model repository")
            return self.root
        path = self.root / name
        reason = _not_a_model(path)
        if reason:
            raise NotFound(f"model '{clip(name)}' is not in the model repository ({reason})")
        try:
            if confine:
                layout.inside(self.root, name, "model folder")
        except layout.PathOutsideModel as exc:
            raise ModelLoadError(f"model '{name}': {exc}") from None
        return path

    def version_folders(self, folder: Path) -> dict[int, Path]:
        """Version number -> folder (a bare model file is version 1, in the folder itself)."""
        if self.kind == MODEL_FILE:
            return {1: folder}
        try:
            return layout.version_folders(folder)
        except OSError as exc:
            raise ModelLoadError(
                f"model folder {folder.name} cannot be read: {exc.strerror or exc}"
            ) from None

    def adapt_config(self, config: model_config_pb2.ModelConfig) -> None:
        """A single model's config: its name is --model-name (KServe's), a bare file is its model file."""
        if self.kind == REPOSITORY:
            return
        if config.name and config.name != self.model_name:
            log.warning(
                "config.pbtxt names the model '%s'; it is served as '%s' (--model-name)",
                config.name,
                self.model_name,
            )
        config.name = self.model_name
        if self.kind == MODEL_FILE:
            config.default_model_filename = self.model_file


def _is_model(path: Path) -> bool:
    return _not_a_model(path) is None


def _not_a_model(path: Path) -> str | None:
    """Why a repository root's entry is not a model, or None when it is one."""
    if path.name.startswith("."):
        return "hidden"
    problem = layout.model_name_problem(path.name)
    if problem:
        return f"not a model name: {problem}"
    if not path.is_dir():
        return "not a folder"
    try:
        if layout.is_model_folder(path):
            return None
    except OSError as exc:
        return f"unreadable folder: {exc.strerror or exc}"
    return f"not a model: no {layout.CONFIG_FILENAME} and no numeric version folder"
