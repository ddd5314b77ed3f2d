"""What the scheduler of one model version is told: its batch and queue policies (from config.pbtxt's
dynamic_batching) and each request's `priority` and `timeout` parameters (Triton's semantics).

Honoured dynamic_batching fields: preferred_batch_size (the size an idle instance waits for, with a delay),
max_queue_delay_microseconds, priority_levels, default_priority_level, default_queue_policy and
priority_queue_policy (max_queue_size, default_timeout_microseconds, timeout_action,
allow_timeout_override). Not honoured: preserve_ordering (answers go out as their batches finish).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortserve.protos import model_config_pb2

from .errors import InvalidArgument, ModelLoadError, clip


@dataclass(frozen=True)
class QueuePolicy:
    """The queue of one priority level (Triton's ModelQueuePolicy)."""

    max_queue_size: int = 0
    """Queued requests at most (0 = unbounded); more are refused with UNAVAILABLE."""
    timeout_s: float = 0.0
    """Time a request may wait in the queue (0 = forever)."""
    reject_on_timeout: bool = True
    """Timeout action REJECT (True) or DELAY (False: an expired request still runs)."""
    allow_timeout_override: bool = False
    """A request's `timeout` parameter replaces timeout_s (else it is ignored, as Triton does)."""


@dataclass(frozen=True)
class BatchPolicy:
    """How a model version queues and batches (from config max_batch_size and dynamic_batching)."""

    max_batch_size: int = 0
    """Rows per batch at most; 0 means the model does not batch (inputs have no batch dimension)."""
    dynamic: bool = False
    """Merge queued requests into one batch (dynamic_batching present)."""
    max_queue_size: int = 0
    """Queued requests at most per priority level (0 = unbounded); more are refused with UNAVAILABLE."""
    queue_timeout_s: float = 0.0
    """Time a request may wait in the queue (0 = forever)."""
    reject_on_timeout: bool = True
    """Timeout action REJECT (True) or DELAY (False: an expired request still runs)."""
    allow_timeout_override: bool = False
    """A request's `timeout` parameter replaces queue_timeout_s."""
    max_queue_delay_s: float = 0.0
    """How long an idle instance holding fewer rows than preferred_batch_size waits for more (0 = never)."""
    preferred_batch_size: tuple[int, ...] = ()
    """Batch sizes worth waiting for (with max_queue_delay_s); none: max_batch_size."""
    priority_levels: int = 0
    """Queues, one per level, level 1 taken first (0: one queue, `priority` parameters ignored)."""
    default_priority_level: int = 0
    """The level of a request without `priority` (or with priority 0)."""
    level_policies: dict[int, QueuePolicy] = field(default_factory=dict, hash=False)
    """priority_queue_policy: a level's own queue policy instead of the default one."""

    def queue_policy(self, level: int) -> QueuePolicy:
        """The queue policy of a priority level (1-based; 0 when there are no levels)."""
        own = self.level_policies.get(level)
        if own is not None:
            return own
        return QueuePolicy(
            self.max_queue_size, self.queue_timeout_s, self.reject_on_timeout, self.allow_timeout_override
        )

    @property
    def levels(self) -> int:
        """How many queues the scheduler keeps."""
        return max(self.priority_levels, 1)

    @property
    def batch_target(self) -> int:
        """The rows an idle instance waits for when max_queue_delay_s > 0."""
        sizes = [size for size in self.preferred_batch_size if size <= self.max_batch_size]
        return max(sizes) if sizes else self.max_batch_size


def _queue_policy(queue: model_config_pb2.ModelQueuePolicy) -> QueuePolicy:
    return QueuePolicy(
        queue.max_queue_size,
        queue.default_timeout_microseconds / 1e6,
        queue.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT,
        queue.allow_timeout_override,
    )


def batch_policy(config: model_config_pb2.ModelConfig) -> BatchPolicy:
    """The scheduler policy of a completed config; a priority setup that cannot work fails the load."""
    if config.HasField("sequence_batching"):
        # Steps of different sequences batch together (the oldest strategy); one sequence's never do.
        return BatchPolicy(max_batch_size=config.max_batch_size, dynamic=True)
    if not config.HasField("dynamic_batching"):
        return BatchPolicy(max_batch_size=config.max_batch_size)
    batching = config.dynamic_batching
    queue = _queue_policy(batching.default_queue_policy)
    levels = batching.priority_levels
    if levels and not 1 <= batching.default_priority_level <= levels:
        raise ModelLoadError(
            f"model '{config.name}': dynamic_batching.default_priority_level must be in 1..{levels} "
            f"(priority_levels), got {batching.default_priority_level}"
        )
    outside = sorted(level for level in batching.priority_queue_policy if not 1 <= level <= levels)
    if outside:
        raise ModelLoadError(
            f"model '{config.name}': priority_queue_policy names levels {outside} outside 1..{levels} "
            "(priority_levels)"
        )
    return BatchPolicy(
        max_batch_size=config.max_batch_size,
        dynamic=True,
        max_queue_size=queue.max_queue_size,
        queue_timeout_s=queue.timeout_s,
        reject_on_timeout=queue.reject_on_timeout,
        allow_timeout_override=queue.allow_timeout_override,
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        preferred_batch_size=tuple(batching.preferred_batch_size),
        priority_levels=levels,
        default_priority_level=batching.default_priority_level if levels else 0,
        level_policies={
            int(level): _queue_policy(policy) for level, policy in batching.priority_queue_policy.items()
        },
    )


@dataclass(frozen=True)
class Scheduling:
    """A request's place in the queues: its priority level and queue timeout (None: the level's own)."""

    level: int = 0
    timeout_s: float | None = None


_INTEGER_FIELDS = ("int64_param", "uint64_param")


def _unsigned(model: str, name: str, parameter) -> int:
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in _INTEGER_FIELDS:
        raise InvalidArgument(
            f"model '{model}': request parameter '{name}' must be an integer (int64_param or "
            f"uint64_param), got {kind or 'nothing'}"
        )
    value = getattr(parameter, kind)
    if value < 0:
        raise InvalidArgument(f"model '{model}': request parameter '{name}' must be >= 0, got {value}")
    return value


def request_scheduling(model: str, parameters, policy: BatchPolicy) -> Scheduling:
    """The `priority` and `timeout` (microseconds) request parameters, as Triton reads them: priority 0 is
    the default level, 1 the highest, above priority_levels is refused (Triton would quietly use the
    default); without priority_levels it is ignored. `timeout` counts only where the queue policy has
    allow_timeout_override (0 keeps the policy's timeout)."""
    level = policy.default_priority_level
    if "priority" in parameters:
        priority = _unsigned(model, "priority", parameters["priority"])
        if policy.priority_levels and priority:
            if priority > policy.priority_levels:
                raise InvalidArgument(
                    f"model '{model}': priority {clip(priority)} is above the model's "
                    f"{policy.priority_levels} priority levels (1 is the highest, 0 the default)"
                )
            level = priority
    timeout_s = None
    if "timeout" in parameters:
        timeout_us = _unsigned(model, "timeout", parameters["timeout"])
        if timeout_us and policy.queue_policy(level).allow_timeout_override:
            timeout_s = timeout_us / 1e6
    return Scheduling(level, timeout_s)
