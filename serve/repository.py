"""The model repository: Triton's directory layout, version policies, load/unload and per-version state.

A model that fails to load is reported with its reason and never takes others down; a failed reload
keeps the versions that were serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ortserve.protos import model_config_pb2
from ortserve.protos import repository_layout as layout

from .config_support import config_notes
from .errors import InvalidArgument, ModelLoadError, NotFound, Unavailable, clip
from .layouts import Layout
from .metrics import ServerMetrics
from .model import LoadOptions, ModelVersion
from .model_config import complete_static, read_config
from .runtime import complete_instance_groups
from .statistics import ModelRecorder

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index."""

    name: str
    version: str
    state: str
    reason: str


@dataclass(eq=False)
class ModelEntry:
    """Everything known about one model directory."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    transient: dict[int, str] = field(default_factory=dict)  # version -> LOADING / UNLOADING
    model_reason: str = "not loaded"  # why no version is listed (config error, unloaded...)
    wanted: bool = False  # asked to be loaded (counts for server readiness)
    recorders: dict[int, ModelRecorder] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    warned: set[str] = field(default_factory=set)  # config notes already logged (once per model)


def check_model_name(name: str) -> None:
    """The repository's one model-name rule (protos.repository_layout), as INVALID_ARGUMENT."""
    try:
        layout.check_model_name(name)
    except layout.InvalidModelName as exc:
        raise InvalidArgument(f"invalid model name '{clip(name)}': {exc}") from None


def parse_version(name: str, version: str) -> int | None:
    """A client's version string: None for '' (the newest), else its number; INVALID_ARGUMENT otherwise."""
    if not version:
        return None
    try:
        return layout.parse_version(version)
    except ValueError:
        raise InvalidArgument(
            f"model '{clip(name)}': version '{clip(version)}' is not a version number"
        ) from None


def select_versions(
    model_dir: Path, policy: model_config_pb2.ModelVersionPolicy, folders: dict[int, Path] | None = None
) -> list[int]:
    """The numeric version directories the policy picks (latest N by default)."""
    available = sorted(layout.version_folders(model_dir) if folders is None else folders)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = available
    elif choice == "specific":
        chosen = sorted(v for v in set(policy.specific.versions) if v in available)
    else:
        chosen = available[-max(policy.latest.num_versions, 1) :] if available else []
    if not chosen:
        raise ModelLoadError(
            f"model '{model_dir.name}': no version directory matches the version policy "
            f"(found {available or 'none'})"
        )
    return chosen


class ModelRepository:
    """Loads, serves and unloads the models of one repository directory. Use inside the event loop."""

    def __init__(
        self,
        root: Path,
        metrics: ServerMetrics,
        options: LoadOptions,
        on_change: Callable[[], None],
        *,
        model_name: str = "",
        strict_config_fields: bool = False,
    ):
        """`model_name`: the name of a single model folder or file (layouts.py); LayoutError if ambiguous."""
        self.root = root
        self.layout = Layout.detect(root, model_name)
        self._metrics = metrics
        self._options = options
        self._strict_config_fields = strict_config_fields
        self._on_change = on_change
        self._entries: dict[str, ModelEntry] = {}

    def model_names(self) -> list[str]:
        """The models in the repository, sorted (folders that are not models are skipped)."""
        return self.layout.model_names()

    def _entry(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = ModelEntry(name)
        return entry

    async def load(self, name: str) -> None:
        """Load (or reload) every version the policy picks. Raises ModelLoadError with the reason."""
        check_model_name(name)
        self.layout.model_folder(name, confine=False)  # NotFound before an entry is made
        entry = self._entry(name)
        async with entry.lock:
            entry.wanted = True
            try:
                model_dir = self.layout.model_folder(name)
                config, max_batch_size_given = read_config(model_dir, self._options.strict, name)
                self._check_fields(entry, config)
                self.layout.adapt_config(config)
                complete_static(config, name)
                complete_instance_groups(config)
                folders = self.layout.version_folders(model_dir)
                versions = select_versions(model_dir, config.version_policy, folders)
            except ModelLoadError as exc:
                entry.model_reason = str(exc)
                log.error("%s", exc)
                self._on_change()
                raise
            options = dataclasses.replace(self._options, max_batch_size_given=max_batch_size_given)
            chosen = {version: folders[version] for version in versions}
            loaded, failed = await self._load_versions(entry, model_dir, config, chosen, options)
            if failed and entry.versions:
                # A failed reload: what was serving keeps serving.
                for model in loaded.values():
                    await model.stop()
                entry.failed = failed
                self._on_change()
                raise ModelLoadError(_failure_message(name, failed) + "; the loaded versions keep serving")
            old = entry.versions
            for version, model in loaded.items():
                recorder = entry.recorders.get(version)
                if recorder is None:
                    recorder = entry.recorders[version] = ModelRecorder(
                        self._metrics.for_model(name, str(version))
                    )
                model.start(recorder)
            entry.versions, entry.failed, entry.model_reason = loaded, failed, ""
            self._on_change()
            await self._stop_versions(entry, old)
            if failed:
                raise ModelLoadError(_failure_message(name, failed))
            log.info(
                "model %s: versions %s ready on %s",
                name,
                sorted(loaded),
                ", ".join(sorted({m.provider for m in loaded.values()})),
            )

    def _check_fields(self, entry: ModelEntry, config: model_config_pb2.ModelConfig) -> None:
        """Warn (once per model) about what config.pbtxt sets that ortserve does not act on; refuse the load
        instead under --strict-config-fields."""
        notes = config_notes(config)
        if notes and self._strict_config_fields:
            raise ModelLoadError(
                f"model '{entry.name}': config.pbtxt: {'; '.join(notes)} (refused: --strict-config-fields)"
            )
        for note in notes:
            if note not in entry.warned:
                entry.warned.add(note)
                log.warning("model '%s': config.pbtxt: %s", entry.name, note)

    async def _load_versions(self, entry: ModelEntry, model_dir: Path, config, versions, options):
        loaded, failed = {}, {}
        for version, version_dir in versions.items():
            entry.transient[version] = LOADING
            try:
                loaded[version] = await asyncio.to_thread(
                    ModelVersion.load, model_dir, version, config, options, version_dir
                )
            except ModelLoadError as exc:
                failed[version] = str(exc)
            except Exception as exc:  # noqa: BLE001 - one broken model never takes the server down
                log.exception("model %s version %d: unexpected error while loading", entry.name, version)
                failed[version] = (
                    f"model '{entry.name}' version {version}: unexpected error while loading: {exc}"
                )
            finally:
                entry.transient.pop(version, None)
            if version in failed:
                log.error("%s", failed[version])
        return loaded, failed

    async def _stop_versions(self, entry: ModelEntry, versions: dict[int, ModelVersion]) -> None:
        for version, model in versions.items():
            if entry.versions.get(version) is model:
                continue
            entry.transient[version] = UNLOADING
            try:
                await model.stop()
            finally:
                entry.transient.pop(version, None)
            if version not in entry.versions and model.recorder is not None:
                # A reload of the same version keeps it marked ready.
                model.recorder.metrics.set_ready(model.provider, False)

    async def unload(self, name: str) -> None:
        """Stop serving every version of the model, after its queued and running requests finish."""
        check_model_name(name)
        entry = self._entries.get(name)
        if entry is None:
            self.layout.model_folder(name, confine=False)  # NotFound when there is no such model
            return
        async with entry.lock:
            old, entry.versions, entry.failed = entry.versions, {}, {}
            entry.wanted, entry.model_reason = False, "unloaded"
            self._on_change()
            await self._stop_versions(entry, old)
            self._on_change()

    async def unload_all(self) -> None:
        """Unload every model (shutdown)."""
        await asyncio.gather(*(self.unload(name) for name in list(self._entries)), return_exceptions=True)

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The ready version asked for (newest when empty); NotFound / Unavailable otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{clip(name)}'")
        number = parse_version(name, version)
        if number is None:
            if not entry.versions:
                raise Unavailable(
                    f"model '{name}' is not ready: "
                    f"{entry.model_reason or _failure_message(name, entry.failed)}"
                )
            return entry.versions[max(entry.versions)]
        model = entry.versions.get(number)
        if model is not None:
            return model
        if number in entry.failed or number in entry.transient:
            raise Unavailable(f"model '{name}' version {number} is not ready")
        raise NotFound(f"unknown model '{name}' version {number}")

    def recorders(self, name: str, version: str = "") -> list[tuple[str, int, ModelRecorder]]:
        """Statistics recorders: of every model, of every version of `name`, or of one version."""
        if name:
            entry = self._entries.get(name)
            if entry is None or (not entry.recorders and not entry.versions):
                raise NotFound(f"unknown model '{clip(name)}'")
            if version:
                self.resolve(name, version)
        entries = [self._entries[name]] if name else [self._entries[n] for n in sorted(self._entries)]
        return [
            (entry.name, v, recorder)
            for entry in entries
            for v, recorder in sorted(entry.recorders.items())
            if (not version or str(v) == version) and v in entry.versions
        ]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model directory with the state and reason of each version."""
        rows = []
        for name in sorted(set(self.model_names()) | set(self._entries)):
            entry = self._entries.get(name) or ModelEntry(name)
            states = {v: IndexEntry(name, str(v), READY, "") for v in entry.versions}
            states.update(
                {
                    v: IndexEntry(name, str(v), UNAVAILABLE, r)
                    for v, r in entry.failed.items()
                    if v not in states
                }
            )
            states.update({v: IndexEntry(name, str(v), s, "") for v, s in entry.transient.items()})
            if not states:
                states[-1] = IndexEntry(name, "", UNAVAILABLE, entry.model_reason)
            rows += [states[v] for v in sorted(states)]
        return [row for row in rows if row.state == READY] if ready_only else rows

    def ready_versions(self, name: str) -> list[int]:
        """Ready versions of a model, oldest first."""
        entry = self._entries.get(name)
        return sorted(entry.versions) if entry else []

    def is_ready(self) -> bool:
        """The repository holds a model, and every model asked to be loaded has all its versions ready.
        An empty repository is never ready: a server with nothing to serve must not take traffic."""
        if not self._entries and not self.model_names():
            return False
        return all(entry.versions and not entry.failed for entry in self._entries.values() if entry.wanted)

    def ready_names(self) -> dict[str, bool]:
        """Model name -> whether any version is ready (for the health service)."""
        return {name: bool(entry.versions) for name, entry in self._entries.items()}


def _failure_message(name: str, failed: dict[int, str]) -> str:
    details = "; ".join(f"version {v}: {reason}" for v, reason in sorted(failed.items()))
    return f"load failed for model '{name}': {details}" if failed else f"model '{name}' has no ready version"
