"""One error hierarchy: every failure the user can fix is an ExportError with a clear message."""

from __future__ import annotations


class ExportError(Exception):
    """Base class: the export was refused and nothing was written to the repository."""


class SpecError(ExportError):
    """The export specification (shapes, names, axes, tolerances) is inconsistent."""


class CheckpointError(ExportError):
    """The checkpoint file is missing, unreadable, truncated or holds no usable weights."""


class ArchitectureError(ExportError):
    """The architecture or factory could not be built."""


class ArchitectureMismatchError(ExportError):
    """The checkpoint does not fit the architecture: missing, unexpected or mis-shaped parameters."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        architecture: str = "the model",
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatches = list(shape_mismatches)
        lines = [f"checkpoint does not fit {architecture}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {_shorten(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): {_shorten(self.unexpected)}")
        if self.shape_mismatches:
            shown = [
                f"{key}: checkpoint {list(got)} vs model {list(want)}"
                for key, got, want in self.shape_mismatches
            ]
            lines.append(f"  shape mismatches ({len(shown)}): {_shorten(shown)}")
        super().__init__("\n".join(lines))


class ExporterError(ExportError):
    """torch.onnx.export failed with every exporter that was tried."""


class ValidationError(ExportError):
    """The ONNX model does not reproduce the PyTorch model; carries every mismatch found."""

    def __init__(
        self,
        mismatches: list[str],
        report: object | None = None,
        header: str = "",
        notes: list[str] | None = None,
    ) -> None:
        self.mismatches = list(mismatches)
        self.report = report
        head = header or f"ONNX model failed validation ({len(self.mismatches)} problem(s)):"
        lines = [head, *(f"  - {line}" for line in self.mismatches)]
        lines += [f"  note: {note}" for note in notes or []]
        super().__init__("\n".join(lines))


class CalibrationError(ExportError):
    """The int8 calibration or validation data is missing, empty, unreadable or does not fit the model."""


class QuantizationError(ExportError):
    """The int8 graph could not be made, or failed its proof (agreement, speed); carries every problem."""

    def __init__(self, problems: list[str], report: object | None = None, header: str = "") -> None:
        self.problems = list(problems)
        self.report = report
        head = header or f"refusing to write the int8 model ({len(self.problems)} problem(s)):"
        super().__init__("\n".join([head, *(f"  - {line}" for line in self.problems)]))


class RepositoryError(ExportError):
    """The model repository, model name or labels cannot be written as asked."""


def _shorten(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")
