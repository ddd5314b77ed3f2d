"""One loaded model version: its completed config, sessions, labels, scheduler and recorder."""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ortserve.protos import model_config_pb2
from ortserve.protos import repository_layout as layout

from . import memory, runtime
from .batcher import INLINE_INFER_S, Batcher
from .errors import ModelLoadError
from .model_config import OnnxTensor, TensorSpec, complete_io, tensor_specs
from .request_limits import RequestLimits
from .scheduling import BatchPolicy, batch_policy
from .sequence_state import SequencePolicy, sequence_policy
from .sequences import SequenceBatcher
from .statistics import ModelRecorder

log = logging.getLogger(__name__)
PROVIDER_PARAMETER = "execution_provider"
# Below this a batch-1 run is too short for a second intra-op thread to repay its wake-up (the LSTM: 0.1 ms,
# its 2-3-row batches ran faster on one); a small ResNet at 1.7 ms ran at half speed on one thread.
ONE_THREAD_RUN_S = 0.0005


@dataclass(frozen=True)
class LoadOptions:
    """What the repository passes down when loading a version."""

    strict: bool = False
    default_max_batch_size: int = 32
    max_batch_size_given: bool = False
    max_request_memory_bytes: int = 1 << 30


@dataclass(eq=False)
class ModelVersion:
    """A model version that loaded and warmed up; `start` gives it its scheduler in the event loop."""

    name: str
    version: int
    config: model_config_pb2.ModelConfig
    sessions: list
    provider: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    labels: dict[str, list[str]] = field(default_factory=dict)
    warmup_notes: list[str] = field(default_factory=list)
    spinning: str = "0"
    """How onnxruntime's threads wait: "0", "1" or runtime.SPIN_IN_RUNS (config allow_spinning, or chosen)."""
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    seconds_per_element: float | None = None
    """onnxruntime's time per input element at warm-up (batch 1), the batcher's first cost estimate."""
    memory_guard: memory.MemoryGuard | None = None
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    """Zero-sized dims and dynamic-axis bounds requests are checked against (config parameters)."""
    batcher: Batcher | None = None
    recorder: ModelRecorder | None = None
    sequence_policy: SequencePolicy | None = None
    """Set for a stateful model (config sequence_batching): its implicit state pairs and limits."""
    sequences: SequenceBatcher | None = None

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @functools.cached_property
    def version_label(self) -> str:
        """The version as the protocol spells it (a string)."""
        return str(self.version)

    @classmethod
    def load(
        cls,
        model_dir: Path,
        version: int,
        base: model_config_pb2.ModelConfig,
        options: LoadOptions,
        version_dir: Path | None = None,
    ):
        """Create the sessions, complete the config from the model, read labels, warm up, measure memory
        (blocking; one version at a time, see serve.memory). `version_dir` defaults to model_dir/VERSION
        (a bare model file is its own model folder's version)."""
        with memory.LOAD_LOCK:
            return cls._load(model_dir, version, base, options, version_dir)

    @classmethod
    def _load(cls, model_dir, version, base, options, version_dir):
        config = copy.deepcopy(base)
        where = f"model '{config.name}' version {version}"
        version_dir = model_dir / str(version) if version_dir is None else version_dir
        model_path = _model_file(model_dir, version_dir, config.default_model_filename, where)
        specs = runtime.instance_specs(config)
        choice = runtime.spinning_choice(config)
        spinning = choice if choice != "auto" else (runtime.SPIN_IN_RUNS if len(specs) == 1 else "0")
        session_options = runtime.session_options(config, version_dir, spinning)
        sessions = [runtime.create_session(model_path, specs[0], session_options, config.name)]
        onnx_inputs = [OnnxTensor.from_node_arg(arg) for arg in sessions[0].get_inputs()]
        onnx_outputs = [OnnxTensor.from_node_arg(arg) for arg in sessions[0].get_outputs()]
        complete_io(
            config,
            onnx_inputs,
            onnx_outputs,
            max_batch_size_given=options.max_batch_size_given,
            strict=options.strict,
            default_max_batch_size=options.default_max_batch_size,
        )
        sessions += [
            runtime.create_session(model_path, spec, session_options, config.name) for spec in specs[1:]
        ]
        providers = sorted({spec.provider for spec in specs})
        config.parameters[PROVIDER_PARAMETER].string_value = ",".join(providers)
        labels = {
            output.name: _labels(model_dir, output, where)
            for output in config.output
            if output.label_filename
        }
        inputs = tensor_specs(config.input)
        model = cls(
            config.name,
            version,
            config,
            sessions,
            ",".join(providers),
            inputs,
            tensor_specs(config.output),
            labels,
            spinning=spinning,
            sequence_policy=sequence_policy(config, onnx_inputs, onnx_outputs),
            request_limits=RequestLimits.from_config(config, inputs),
        )
        first_run_s = model.warm_up()
        one_thread = first_run_s < ONE_THREAD_RUN_S and "intra_op_thread_count" not in config.parameters
        on_cpu = all(spec.provider == runtime.CPU for spec in specs)
        if on_cpu and first_run_s < INLINE_INFER_S and (spinning == runtime.SPIN_IN_RUNS or one_thread):
            # A quick model's batches are a few rows: spinning pool threads take the cores the event loop
            # and gRPC need, and for a tiny one waking a second thread costs more than it saves.
            model.spinning = "0" if spinning == runtime.SPIN_IN_RUNS else spinning
            quick = runtime.session_options(config, version_dir, model.spinning, one_thread=one_thread)
            log.info(
                "%s: %.2f ms a run, a quick model: %s intra-op thread(s), spinning %s",
                where,
                first_run_s * 1e3,
                quick.intra_op_num_threads or "onnxruntime's default",
                model.spinning,
            )
            model.sessions = [runtime.create_session(model_path, spec, quick, config.name) for spec in specs]
            first_run_s = model.warm_up()
        model.policy = batch_policy(config)
        first = model.warmup_feeds(model.warmup_batch_sizes()[0])
        if math.isfinite(first_run_s):
            model.seconds_per_element = first_run_s / max(memory.elements_of(first), 1)
        model.memory_guard = model.measure_memory(options.max_request_memory_bytes, specs)
        return model

    def warmup_batch_sizes(self) -> list[int | None]:
        """Batch 1, max_batch_size and each preferred size the batcher can form (None: not batched)."""
        if self.max_batch_size == 0:
            return [None]
        sizes = {1, self.max_batch_size}
        if self.config.HasField("dynamic_batching"):
            sizes.update(self.config.dynamic_batching.preferred_batch_size)
        return sorted(sizes)

    def warmup_feeds(self, size: int | None, length: int = 1) -> dict:
        """runtime.warmup_feeds plus zero sequence state (stateful models)."""
        feeds = runtime.warmup_feeds(self.inputs, size, length)
        for pair in self.sequence_policy.states if self.sequence_policy else ():
            feeds[pair.input_name] = pair.zeros(size)
        return feeds

    def warm_up(self) -> float:
        """Run each session once per warm-up batch size (the first size twice); shapes that cannot be formed
        are noted. Returns the seconds of the second run at the first size (inf when it could not run)."""
        variable = any(dim < 0 for spec in self.inputs.values() for dim in spec.dims)
        first_run_s = math.inf
        self.warmup_notes.clear()
        for index, size in enumerate(self.warmup_batch_sizes()):
            feeds = self.warmup_feeds(size)
            for session in self.sessions:
                try:
                    session.run(None, feeds)
                    if index == 0 and session is self.sessions[0]:
                        started = time.perf_counter()
                        session.run(None, feeds)
                        first_run_s = time.perf_counter() - started
                except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
                    if not variable:
                        raise ModelLoadError(
                            f"model '{self.name}' version {self.version}: "
                            f"warm-up at batch size {size} failed: {exc}"
                        ) from exc
                    note = (
                        f"warm-up at batch size {size} skipped (variable dims set to 1 do not fit the model)"
                    )
                    log.warning("model %s version %d: %s: %s", self.name, self.version, note, exc)
                    self.warmup_notes.append(note)
                    break
        return first_run_s

    def measure_memory(self, budget_bytes: int, specs: list[runtime.InstanceSpec]) -> memory.MemoryGuard:
        """Give back what warm-up left in the arenas, so an idle model holds no more than one small run
        needs, and estimate bytes per input element (module serve.memory)."""
        sizes = self.warmup_batch_sizes()
        small = self.warmup_feeds(sizes[0])
        shrink: list = []
        for session, spec in zip(self.sessions, specs, strict=True):
            options = memory.shrink_options(runtime.arena_devices(spec))
            try:
                session.run(None, small, options)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; serving goes on
                log.warning("model %s version %d: arenas not shrunk: %s", self.name, self.version, exc)
                options = None
            shrink.append(options)
        probes = [self.warmup_feeds(sizes[-1])]
        dynamic = max((sum(dim < 0 for dim in spec.dims) for spec in self.inputs.values()), default=0)
        if dynamic and not self.warmup_notes:
            target = max(round(memory.PROBE_ELEMENTS_PER_ROW_DIMS ** (1 / dynamic)), 1)
            length = self._probe_length(sizes[0], target)
            if length > 1:
                probes.append(self.warmup_feeds(sizes[0], length))
        per_element, known = None, memory.elements_of(probes[0])
        if shrink[0] is not None:
            per_element, known = memory.probe_bytes_per_element(self.sessions[0], shrink[0], small, probes)
        log.info(
            "model %s version %d: about %s bytes of memory per input element",
            self.name,
            self.version,
            "unknown" if per_element is None else f"{per_element:.0f}",
        )
        memory.trim_heap()  # what session creation and warm-up freed
        name = f"'{self.name}' version {self.version}"
        return memory.MemoryGuard(name, budget_bytes, per_element, known, tuple(shrink), small)

    def _probe_length(self, size: int | None, target: int) -> int:
        """The longest dynamic length up to `target` whose run stays under memory.PROBE_MAX_S: lengths grow 8x
        while the last run, times 8, fits (a run's fixed overhead makes that guess high, never low), so a
        slow model is not run for minutes at load."""
        length = 1
        while length < target:
            longer = min(length * 8, target)
            started = time.perf_counter()
            try:
                self.sessions[0].run(None, self.warmup_feeds(size, length))
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the probe is optional
                log.debug("model %s: probe timing at length %d failed: %s", self.name, length, exc)
                return 1
            if (time.perf_counter() - started) * longer / length > memory.PROBE_MAX_S:
                log.info(
                    "model %s version %d: memory probe stops at length %d (longer runs are slow)",
                    self.name,
                    self.version,
                    length,
                )
                return length
            length = longer
        return length

    def start(self, recorder: ModelRecorder) -> None:
        """Create the scheduler (inside the running event loop)."""
        self.recorder = recorder
        self.batcher = Batcher(
            f"'{self.name}' version {self.version}",
            self.sessions,
            self.policy,
            recorder.batch_executed,
            seconds_per_element=self.seconds_per_element,
            memory=self.memory_guard,
            on_shrink=recorder.metrics.arena_shrunk,
        )
        if self.sequence_policy is not None:
            self.sequences = SequenceBatcher(
                f"'{self.name}' version {self.version}", self.sequence_policy, self.batcher, recorder.metrics
            )
        recorder.metrics.set_ready(self.provider, True)

    async def stop(self) -> None:
        """Let queued and running requests finish, then release the sessions (live sequences are dropped)."""
        if self.sequences is not None:
            await self.sequences.close()
        if self.batcher is not None:
            await self.batcher.close()
        self.sessions.clear()


def _model_file(model_dir: Path, version_dir: Path, filename: str, where: str) -> Path:
    """The version's model file, refused when it (or its version folder) leads outside the model folder."""
    relative = version_dir.relative_to(model_dir).as_posix()
    try:
        if relative != ".":
            layout.inside(model_dir, relative, "version folder")
        path = layout.inside(version_dir, filename, "default_model_filename", bound=model_dir)
    except layout.PathOutsideModel as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if not path.is_file():
        shown = filename if relative == "." else f"{relative}/{filename}"
        raise ModelLoadError(f"{where}: no model file {shown}")
    return path


def _labels(model_dir: Path, output, where: str) -> list[str]:
    """The output's labels file, read by the repository's one reader, from inside the model folder."""
    try:
        path = layout.inside(model_dir, output.label_filename, "label_filename")
        if not path.is_file():
            raise ModelLoadError(
                f"{where}: output '{output.name}': label file {output.label_filename} not found"
            )
        return layout.read_labels(path)
    except (layout.PathOutsideModel, layout.InvalidLabels) as exc:
        raise ModelLoadError(f"{where}: output '{output.name}': {exc}") from None
