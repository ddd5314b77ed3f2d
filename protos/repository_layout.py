"""The model repository contract that export writes and serve reads: names, file names, labels, versions,
and the rule that every path a model names stays inside its model folder.

Both sides import this module, so a repository that export accepts is served exactly as written.
Errors are ValueError subclasses; each side wraps them in its own error type.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

CONFIG_FILENAME = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
LABELS_FILENAME = "labels.txt"
MODEL_SUFFIX = ".onnx"
MAX_NAME_BYTES = 255  # one directory entry on Linux filesystems
# Canonical decimal only: "01" would name the same version as "1", and "²" passes str.isdigit().
_VERSION = re.compile(r"(?:0|[1-9][0-9]{0,17})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidModelName(ValueError):  # noqa: N818 - reads as the condition it reports
    """A model name that cannot be one directory entry of the repository."""


class InvalidLabels(ValueError):  # noqa: N818 - reads as the condition it reports
    """A labels file that cannot be read as one label per line."""


class PathOutsideModel(ValueError):  # noqa: N818 - reads as the condition it reports
    """A path named by a model (config, version folder, model file, labels) leads outside its folder."""


def model_name_problem(name: str) -> str | None:
    """Why `name` is not a valid model name, or None. The rule: one directory entry of at most 255 bytes
    UTF-8, no leading dot (hidden, '.', '..'), no path separator, no NUL or other control character."""
    if not name:
        return "the name is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"the name is {size} bytes long, at most {MAX_NAME_BYTES} are allowed"
    if name.startswith("."):
        return "the name starts with a dot"
    if "/" in name or "\\" in name:
        return "the name contains a path separator"
    if _CONTROL.search(name):
        return "the name contains a control character"
    return None


def check_model_name(name: str) -> None:
    """Raise InvalidModelName (message without the name itself: the caller cuts and adds it)."""
    problem = model_name_problem(name)
    if problem is not None:
        raise InvalidModelName(f"{problem}; a model name must be one directory name in the model repository")


def parse_version(text: str) -> int:
    """A version number as a folder or a client spells it (canonical decimal); ValueError otherwise."""
    if not _VERSION.fullmatch(text):
        raise ValueError(f"a version is a decimal number such as 1, got {text[:40]!r}")
    return int(text)


def version_folders(model_dir: Path) -> dict[int, Path]:
    """The numeric version folders of a model folder (symbolic links included; confinement is checked
    when a version is loaded). An unreadable folder raises OSError."""
    found = {}
    for entry in model_dir.iterdir():
        try:
            version = parse_version(entry.name)
        except ValueError:
            continue
        if entry.is_dir():
            found[version] = entry
    return dict(sorted(found.items()))


def is_model_folder(path: Path) -> bool:
    """A model is a folder with config.pbtxt or at least one numeric version folder. OSError if unreadable."""
    return (path / CONFIG_FILENAME).is_file() or bool(version_folders(path))


def read_labels(path: Path) -> list[str]:
    """One label per line, line N is class N; surrounding whitespace is stripped and trailing blank lines
    ignored. A blank line inside would shift every class index after it, so it is refused, as is an empty
    file. Raises InvalidLabels."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidLabels(f"cannot read labels file {path}: {exc}") from exc
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise InvalidLabels(f"labels file {path} is empty")
    blank = [number + 1 for number, label in enumerate(labels) if not label]
    if blank:
        raise InvalidLabels(f"labels file {path} has blank lines at {blank[:5]}")
    return labels


def format_labels(labels) -> str:
    """The text of a labels file that read_labels reads back as exactly `labels`; InvalidLabels when a
    label could not survive the round trip (blank, surrounding whitespace, a line break)."""
    labels = [str(label) for label in labels]
    if not labels:
        raise InvalidLabels("no labels given")
    for index, label in enumerate(labels):
        if not label or label != label.strip() or len(label.splitlines()) != 1:
            raise InvalidLabels(
                f"label {index} {label[:40]!r} must be one line of text without surrounding whitespace"
            )
    return "\n".join(labels) + "\n"


def inside(folder: Path, relative: str, what: str, bound: Path | None = None) -> Path:
    """`folder / relative` resolved; PathOutsideModel when `relative` is absolute, climbs with '..', or
    leads through a symbolic link to somewhere outside `bound` (default `folder`). Links that stay inside
    are fine. The message names `what` and `relative`, never where a link leads (clients see it)."""
    pure = PurePath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\0" in relative:
        raise PathOutsideModel(f"{what} {relative[:200]!r} must be a relative path inside the model folder")
    base = (folder if bound is None else bound).resolve()
    target = (folder / pure).resolve()
    if target != base and base not in target.parents:
        raise PathOutsideModel(f"{what} {relative[:200]!r} leads outside the model folder (symbolic link)")
    return target
