"""Proof for a step graph: whole sequences match PyTorch, and so does every chunk of a streamed sequence.

The whole-sequence checks are today's validation (every batch size x time length, from zero state, outputs
and final states). The streaming proof feeds sequences in chunks (PROOF_CHUNKS steps, at PROOF_BATCHES
sequences at once) through onnxruntime, carrying the state from chunk to chunk, and compares every chunk's
outputs with the user's model on the whole prefix so far. A model whose output depends on more than its
recurrent state and the current chunk (one that averages over all steps, say) fails it and is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ortserve.export.errors import ValidationError
from ortserve.export.spec import ExportSpec
from ortserve.export.stateful import StateInjection, StateTensor, step_names
from ortserve.export.streaming import CarriedState
from ortserve.export.validate import OutputCheck, ValidationReport, _first_line, compare, random_input

PROOF_CHUNKS: tuple[int, ...] = (1, 3, 1, 17)
PROOF_BATCHES: tuple[int, ...] = (1, 2, 7)
NOT_STREAMABLE = (
    "refusing to write the model: its output is not a function of its recurrent state and the current "
    "chunk (streaming it chunk by chunk gives other outputs than PyTorch on the whole prefix)"
)


class StreamingProofError(ValidationError):
    """The step graph reproduces whole sequences, but not a sequence streamed in chunks."""


def load_session(path: str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def validate_step(
    path: Path,
    model: nn.Module,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    *,
    exporter: str,
    trace_shape: tuple[int, ...],
    n_outputs: int,
    notes: list[str] | None = None,
) -> ValidationReport:
    """Check the step graph at `path` against `model`; ValidationError (whole sequences) or
    StreamingProofError (only streamed chunks) listing every mismatch."""
    started = time.monotonic()
    atol, rtol = spec.tolerance
    report = ValidationReport(exporter, atol, rtol, list(trace_shape), notes=list(notes or []))
    problems: list[str] = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"onnx.checker/shape inference: {_first_line(exc)}")
    try:
        session = load_session(path)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several untyped errors on load
        problems.append(f"onnxruntime cannot load the model: {_first_line(exc)}")
        _finish(report, started, problems, None)
    problems += _check_interface(session, spec, states, n_outputs)
    _finish(report, started, problems, None)

    rng = np.random.default_rng(spec.seed)
    model.eval()
    with StateInjection(model, states) as injection:
        problems += _whole_sequences(session, injection, spec, states, rng, report)
        _finish(report, started, problems, None)
        exported, streamed_in_torch = _streamed(session, injection, spec, states, rng, report)
    # When PyTorch itself, streamed, misses its prefix output, the model cannot stream (the step graph then
    # misses it the same way: not listed twice); otherwise a mismatch is the exporter's.
    if streamed_in_torch:
        _finish(report, started, streamed_in_torch, StreamingProofError)
    _finish(report, started, exported, None)
    return report


def _check_interface(
    session: ort.InferenceSession, spec: ExportSpec, states: Sequence[StateTensor], n_outputs: int
) -> list[str]:
    want_inputs, want_outputs = step_names(spec, states, n_outputs)
    inputs = session.get_inputs()
    problems = []
    if [i.name for i in inputs] != want_inputs:
        problems.append(f"expected inputs {want_inputs}, the step graph has {[i.name for i in inputs]}")
    if [o.name for o in session.get_outputs()] != want_outputs:
        got = [o.name for o in session.get_outputs()]
        problems.append(f"expected outputs {want_outputs}, the step graph has {got}")
    if problems:
        return problems
    for tensor in inputs:
        if tensor.type != "tensor(float)":
            problems.append(f"input {tensor.name!r} has type {tensor.type}, expected tensor(float)")
    by_name = {t.name: t for t in [*inputs, *session.get_outputs()]}
    for state in states:
        for name in (state.input_name, state.output_name):
            shape = by_name[name].shape
            if len(shape) != 3 or isinstance(shape[0], int) or list(shape[1:]) != list(state.dims):
                problems.append(
                    f"state {name!r} has shape {shape}, expected [batch (dynamic), {state.dims[0]}, "
                    f"{state.dims[1]}]"
                )
    time_axis = inputs[0].shape[1] if len(inputs[0].shape) > 1 else None
    if isinstance(time_axis, int):
        problems.append(
            f"input {spec.input_name!r} axis 1 (time) was exported with the fixed size {time_axis}: a step "
            "graph must take chunks of any length"
        )
    return problems


def _whole_sequences(
    session: ort.InferenceSession,
    injection: StateInjection,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    rng: np.random.Generator,
    report: ValidationReport,
) -> list[str]:
    """Every batch size x time length from zero state: user outputs and final states against PyTorch."""
    problems: list[str] = []
    features = spec.example_shape[1]
    for batch in spec.batch_sizes:
        for length in spec.time_lengths:
            array = random_input(rng, (batch, length, features), spec)
            where = f"batch {batch}, time length {length} (whole sequence from zero state)"
            try:
                with torch.no_grad():
                    outputs, finals = injection.run(torch.from_numpy(array), None)
            except Exception as exc:  # noqa: BLE001 - the user's model failing is reported like a mismatch
                problems.append(f"{where}: the PyTorch model itself failed: {_first_line(exc)}")
                continue
            expected = [t.detach().numpy() for t in [*outputs, *finals]]
            problems += _compare_run(session, spec, states, array, expected, where, report, batch)
    return problems


def _compare_run(
    session: ort.InferenceSession,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    array: np.ndarray,
    expected: list[np.ndarray],
    where: str,
    report: ValidationReport,
    batch: int,
) -> list[str]:
    feeds = {spec.input_name: array}
    feeds.update({s.input_name: np.zeros((batch, *s.dims), np.float32) for s in states})
    try:
        got = session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - e.g. a Reshape baked with the trace-time length
        report.checks.append(OutputCheck(list(array.shape), "*", None, None, None, False, _first_line(exc)))
        return [f"{where}: onnxruntime failed: {_first_line(exc)}"]
    problems = []
    names = [o.name for o in session.get_outputs()]
    for name, onnx_out, torch_out in zip(names, got, expected, strict=True):
        check = compare(np.asarray(onnx_out), torch_out, spec, list(array.shape), name)
        report.checks.append(check)
        if not check.ok:
            problems.append(f"{where}, output {name!r}: {check.problem}")
    return problems


def _streamed(
    session: ort.InferenceSession,
    injection: StateInjection,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    rng: np.random.Generator,
    report: ValidationReport,
) -> tuple[list[str], list[str]]:
    """Chunks of PROOF_CHUNKS steps with the state carried, each against PyTorch on the whole prefix:
    (the step graph's mismatches, PyTorch's own mismatches when it streams the same chunks)."""
    exported: list[str] = []
    in_torch: list[str] = []
    features = spec.example_shape[1]
    total = sum(PROOF_CHUNKS)
    names = [o.name for o in session.get_outputs()][: len(session.get_outputs()) - len(states)]
    for batch in PROOF_BATCHES:
        sequence = random_input(rng, (batch, total, features), spec)
        stream = CarriedState(_runner(session), [s.to_dict() for s in states], spec.input_name)
        carried = [torch.zeros((batch, *s.dims)) for s in states]
        end = 0
        for number, length in enumerate(PROOF_CHUNKS, start=1):
            start, end = end, end + length
            chunk = np.ascontiguousarray(sequence[:, start:end])
            where = f"batch {batch}, chunk {number} of {len(PROOF_CHUNKS)} (steps {start + 1}..{end})"
            with torch.no_grad():
                prefix, _ = injection.run(torch.from_numpy(sequence[:, :end]), None)
                torch_chunk, carried = injection.run(torch.from_numpy(chunk), carried)
            expected = [t.detach().numpy() for t in prefix]
            for name, streamed, whole in zip(names, torch_chunk, expected, strict=True):
                streamed = streamed.detach().numpy()
                check = compare(streamed, _last_steps(whole, streamed, end, length), spec, [], name)
                if not check.ok:
                    in_torch.append(
                        f"{where}, output {name!r}: PyTorch fed the chunk and the carried state differs from "
                        f"PyTorch on the prefix of {end} steps: {check.problem}"
                    )
            try:
                streamed = stream.step(chunk)
                got = [streamed[name] for name in names]
            except Exception as exc:  # noqa: BLE001 - reported like any mismatch
                exported.append(f"{where}: onnxruntime failed: {_first_line(exc)}")
                break
            for name, onnx_out, whole in zip(names, got, expected, strict=True):
                aligned = _last_steps(whole, onnx_out, end, length)
                check = compare(onnx_out, aligned, spec, [batch, length, features], f"{name} (streamed)")
                report.checks.append(check)
                if not check.ok:
                    exported.append(
                        f"{where}, output {name!r} against PyTorch on the prefix of {end} steps: "
                        f"{check.problem}"
                    )
    return exported, in_torch


def _runner(session: ort.InferenceSession):
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feeds), strict=True))

    return run


def _last_steps(prefix_out: np.ndarray, chunk_out: np.ndarray, prefix_len: int, chunk_len: int) -> np.ndarray:
    """A per-step output (one axis of prefix length where the chunk has the chunk length) is compared on
    the chunk's own steps; any other output as a whole."""
    if prefix_out.shape == chunk_out.shape or prefix_out.ndim != chunk_out.ndim:
        return prefix_out
    differing = [a for a in range(prefix_out.ndim) if prefix_out.shape[a] != chunk_out.shape[a]]
    if len(differing) == 1:
        axis = differing[0]
        if prefix_out.shape[axis] == prefix_len and chunk_out.shape[axis] == chunk_len:
            index = [slice(None)] * prefix_out.ndim
            index[axis] = slice(prefix_len - chunk_len, prefix_len)
            return prefix_out[tuple(index)]
    return prefix_out


def _finish(
    report: ValidationReport, started: float, problems: list[str], error: type[ValidationError] | None
) -> None:
    """Raise `error` (ValidationError when None) listing `problems`, if there are any."""
    report.seconds = time.monotonic() - started
    if not problems:
        return
    if error is StreamingProofError:
        header = f"{NOT_STREAMABLE}; {len(problems)} problem(s), tolerance atol={report.atol:g}, " + (
            f"rtol={report.rtol:g}:"
        )
    else:
        header = (
            f"step graph from the {report.exporter} exporter failed validation "
            f"({len(problems)} problem(s), traced at {report.trace_shape}):"
        )
    raise (error or ValidationError)(problems, report, header=header, notes=report.notes)
