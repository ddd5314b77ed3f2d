"""What a model lets a request carry beyond its dims: zero-sized dimensions, upper bounds of dynamic axes.

Read once at model load from config.pbtxt `parameters` (format in ortserve.protos.request_limits); a bad
value fails the load with ModelLoadError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ortserve.protos import model_config_pb2
from ortserve.protos.request_limits import (
    ALLOW_ZERO_SIZE_DIMS,
    MAX_INPUT_DIMS,
    NO_BOUND,
    parse_max_input_dims,
)

from .errors import ModelLoadError
from .model_config import TensorSpec


@dataclass(frozen=True)
class RequestLimits:
    """Per-model request limits; the default refuses zero-sized dimensions and bounds nothing else."""

    allow_zero_size_dims: bool = False
    """Whether a request tensor may have a 0 in its shape."""
    max_dims: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    """Input name -> upper bound of each non-batch dimension (-1: none); inputs not named are unbounded."""

    @classmethod
    def from_config(
        cls, config: model_config_pb2.ModelConfig, inputs: Mapping[str, TensorSpec]
    ) -> RequestLimits:
        """The limits a completed config sets; ModelLoadError when a parameter is malformed."""
        where = f"model '{config.name}'"
        allow_zero = False
        if ALLOW_ZERO_SIZE_DIMS in config.parameters:
            text = config.parameters[ALLOW_ZERO_SIZE_DIMS].string_value.strip().lower()
            if text not in ("true", "false"):
                raise ModelLoadError(f'{where}: parameter {ALLOW_ZERO_SIZE_DIMS} must be "true" or "false"')
            allow_zero = text == "true"
        max_dims: dict[str, tuple[int, ...]] = {}
        if MAX_INPUT_DIMS in config.parameters:
            try:
                parsed = parse_max_input_dims(config.parameters[MAX_INPUT_DIMS].string_value)
            except ValueError as exc:
                raise ModelLoadError(f"{where}: parameter {MAX_INPUT_DIMS}: {exc}") from None
            for name, bounds in parsed.items():
                max_dims[name] = _checked(where, name, bounds, inputs)
        return cls(allow_zero, MappingProxyType(max_dims))


def _checked(where: str, name: str, bounds: tuple[int, ...], inputs: Mapping[str, TensorSpec]):
    spec = inputs.get(name)
    if spec is None:
        raise ModelLoadError(
            f"{where}: parameter {MAX_INPUT_DIMS} names input '{name}', not in {list(inputs)}"
        )
    if len(bounds) != len(spec.dims):
        raise ModelLoadError(
            f"{where}: input '{name}': parameter {MAX_INPUT_DIMS} gives {len(bounds)} bounds, "
            f"expected one per dim of {list(spec.dims)} (the batch dimension excluded)"
        )
    for dim, bound in zip(spec.dims, bounds, strict=True):
        if bound != NO_BOUND and dim != -1 and dim > bound:
            raise ModelLoadError(
                f"{where}: input '{name}': parameter {MAX_INPUT_DIMS} bounds a dim of fixed size {dim} "
                f"to {bound}"
            )
    return bounds
