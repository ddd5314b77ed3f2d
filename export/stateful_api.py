"""export_stateful: an nn.Module with LSTM/GRU modules becomes a proven step model in a model repository.

Two ways to serve the same ONNX file, chosen by ExportSpec.state (config.pbtxt is all that differs):
- "server": `sequence_batching` with Triton's implicit state; clients send only the user's input, the
  server keeps each sequence's state between requests (sticky: a sequence lives on one server).
- "client": a plain model whose state inputs and outputs are visible; the client carries the state, so
  any replica can continue any sequence.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ortserve.export.api import ExportResult, _check_labels, _combined, _one_line, record_provenance
from ortserve.export.errors import ExporterError, ExportError, RepositoryError, SpecError, ValidationError
from ortserve.export.precision import HalfPrecision
from ortserve.export.repository import (
    TensorInfo,
    build_config,
    check_model_name,
    graph_tensors,
    write_version,
)
from ortserve.export.spec import STATE_MODES, ExportSpec
from ortserve.export.stateful import StateInjection, StateTensor, export_step, state_tensors, zero_states
from ortserve.export.stateful_proof import StreamingProofError, validate_step
from ortserve.export.validate import ValidationReport, random_input
from ortserve.protos import model_config_pb2

logger = logging.getLogger(__name__)

MAX_SEQUENCE_IDLE_US = 60_000_000
MAX_CANDIDATE_SEQUENCES = 1024


def stateful_config(
    name: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    states: Sequence[StateTensor],
    *,
    mode: str,
    max_batch_size: int,
    parameters: dict[str, object],
    label_output: str | None,
) -> model_config_pb2.ModelConfig:
    """config.pbtxt for a step graph: server-held state (sequence_batching) or client-carried state."""
    if mode not in STATE_MODES:
        raise SpecError(f"state must be one of {STATE_MODES}, got {mode!r}")
    carried = {name for s in states for name in (s.input_name, s.output_name)}
    parameters = {**parameters, "stateful": {"state": mode, "states": [s.to_dict() for s in states]}}
    if mode == "client":
        return build_config(
            name,
            inputs,
            outputs,
            max_batch_size=max_batch_size,
            parameters=parameters,
            image_input=False,
            label_output=label_output,
        )
    config = build_config(
        name,
        [t for t in inputs if t.name not in carried],
        [t for t in outputs if t.name not in carried],
        max_batch_size=max_batch_size,
        parameters=parameters,
        image_input=False,
        label_output=label_output,
    )
    batching = config.sequence_batching  # replaces dynamic_batching (one scheduling_choice)
    batching.max_sequence_idle_microseconds = MAX_SEQUENCE_IDLE_US
    batching.oldest.max_candidate_sequences = MAX_CANDIDATE_SEQUENCES
    batching.oldest.max_queue_delay_microseconds = 0
    for state in states:
        entry = batching.state.add(
            input_name=state.input_name,
            output_name=state.output_name,
            data_type=model_config_pb2.TYPE_FP32,
            dims=state.dims,
        )
        entry.initial_state.add(
            data_type=model_config_pb2.TYPE_FP32, dims=state.dims, zero_data=True, name="zeros"
        )
    return config


def export_stateful(
    model: nn.Module,
    spec: ExportSpec,
    *,
    repository: str | Path,
    name: str,
    labels: Sequence[str] | None = None,
    source: str = "custom",
    checkpoint_sha256: str | None = None,
    max_batch_size: int = 32,
) -> ExportResult:
    """Export `model`'s step graph, prove it (whole sequences and streamed chunks) and write it.

    Raises SpecError (no recurrent module, a bidirectional one, a fixed time axis), StreamingProofError (the
    model's output is not a function of its recurrent state and the current chunk), ValidationError,
    ExporterError or RepositoryError; nothing is written unless every check passes.
    """
    started = time.monotonic()
    check_model_name(name)
    if max_batch_size < 1:
        raise RepositoryError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    if spec.kind != "sequence":
        raise SpecError("a stateful export needs a sequence model ([B, T, F] input)")
    if not spec.time_is_dynamic:
        raise SpecError("a stateful export needs a dynamic time axis: each request is a chunk of any length")
    mode = spec.state
    model.eval()
    states = state_tensors(model)
    network = HalfPrecision(model) if spec.precision == "fp16" else model

    time_length, note = spec.trace_time_length()
    notes = [note] if note else []
    trace_shape = (spec.trace_batch_size(), time_length, spec.example_shape[1])
    example = torch.from_numpy(random_input(np.random.default_rng(spec.seed + 1), trace_shape, spec))
    try:
        with torch.no_grad(), StateInjection(model, states) as injection:
            reference, _ = injection.run(example, None)
            from_zeros, _ = injection.run(example, zero_states(states, trace_shape[0]))
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model failing on the example is a user error
        raise ExportError(f"the model fails on the example input {list(trace_shape)}: {exc}") from exc
    _check_zero_start(reference, from_zeros, spec)
    if labels is not None:
        _check_labels(labels, reference[0].detach().numpy())

    with tempfile.TemporaryDirectory(prefix="ortserve-export-") as scratch:
        path, report = _export_and_prove(
            network, model, example, spec, states, trace_shape, notes, Path(scratch), len(reference)
        )
        onnx_model = onnx.load(str(path))
    inputs, outputs = graph_tensors(onnx_model)
    preprocessing = spec.preprocessing.to_dict(spec.kind)
    stateful = {"state": mode, "states": [s.to_dict() for s in states]}
    record_provenance(
        onnx_model,
        spec,
        report,
        source,
        checkpoint_sha256,
        preprocessing,
        stateful=json.dumps(stateful, sort_keys=True),
    )
    config = stateful_config(
        name,
        inputs,
        outputs,
        states,
        mode=mode,
        max_batch_size=max_batch_size,
        parameters={
            "preprocessing": preprocessing,
            "exporter": report.exporter,
            "kind": spec.kind,
            "precision": spec.precision,
            "source": source,
        },
        label_output=outputs[0].name if labels is not None else None,
    )
    written = write_version(repository, name, onnx_model, config, labels)
    visible = {t.name for t in config.input} | {t.name for t in config.output}
    return ExportResult(
        name=name,
        version=written.version,
        model_dir=written.model_dir,
        version_dir=written.version_dir,
        model_path=written.model_path,
        config_path=written.config_path,
        labels_path=written.labels_path,
        exporter=report.exporter,
        precision=spec.precision,
        report=report,
        inputs=tuple(t for t in inputs if t.name in visible),
        outputs=tuple(t for t in outputs if t.name in visible),
        seconds=time.monotonic() - started,
    )


def _check_zero_start(
    reference: list[torch.Tensor], from_zeros: list[torch.Tensor], spec: ExportSpec
) -> None:
    """A stream starts from zero state: a forward that gives its recurrent modules another initial state
    (a learned h0, say) would answer the first chunk differently from the model."""
    atol, rtol = spec.tolerance
    for index, (own, zeros) in enumerate(zip(reference, from_zeros, strict=True)):
        if not torch.allclose(own, zeros, atol=atol, rtol=rtol):
            raise SpecError(
                f"the model's forward starts its recurrent modules from a non-zero initial state (output "
                f"{index} differs by up to {float((own - zeros).abs().max()):.3g} from a start at zeros); a "
                "stream starts every sequence from zero state"
            )


def _export_and_prove(
    network: nn.Module,
    reference_net: nn.Module,
    example: torch.Tensor,
    spec: ExportSpec,
    states: Sequence[StateTensor],
    trace_shape: tuple[int, ...],
    notes: list[str],
    scratch: Path,
    n_outputs: int,
) -> tuple[Path, ValidationReport]:
    """Dynamo first, TorchScript if dynamo raised or failed validation (spec.exporter == "auto"); a model
    that cannot stream is refused at once, since no exporter can change that."""
    exporters = ["dynamo", "torchscript"] if spec.exporter == "auto" else [spec.exporter]
    failures: list[ExportError] = []
    for exporter in exporters:
        logger.info("exporting the step graph with the %s exporter (opset %d)", exporter, spec.opset)
        try:
            attempt = export_step(network, example, spec, states, exporter, scratch / exporter, n_outputs)
        except ExporterError as exc:
            logger.warning("%s", exc)
            failures.append(exc)
            continue
        logger.info(
            "proving the %s step graph against PyTorch (whole sequences and streamed chunks)", exporter
        )
        try:
            report = validate_step(
                attempt.path,
                reference_net,
                spec,
                states,
                exporter=exporter,
                trace_shape=trace_shape,
                n_outputs=n_outputs,
                notes=notes + attempt.notes,
            )
        except StreamingProofError:
            raise
        except ValidationError as exc:
            logger.warning("%s step graph failed validation (%d problem(s))", exporter, len(exc.mismatches))
            failures.append(exc)
            continue
        if failures:
            report.fallback_reason = "; ".join(_one_line(f) for f in failures)
        return attempt.path, report
    raise _combined(failures)
