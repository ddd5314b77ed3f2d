"""The shape checks of one request tensor: rank and fixed dims, batch size, zero-sized dims, size, bounds.

Shapes come from the client as int64s: every product is computed with Python ints and bounded before
numpy sees the shape, and every shape in a message is clipped.
"""

from __future__ import annotations

import math

from ortserve.protos.request_limits import ALLOW_ZERO_SIZE_DIMS, MAX_INPUT_DIMS, NO_BOUND

from .errors import InvalidArgument, clip
from .model_config import TensorSpec
from .request_limits import RequestLimits

# protobuf messages cannot exceed 2 GiB, so no tensor a request can carry is larger (and numpy's reshape
# cannot even form some shapes with a zero in them, such as [1, 2**62, 0]).
MAX_TENSOR_BYTES = 2**31 - 1


def shape_text(dims) -> str:
    """[d0, d1, ...], clipped (a client may send a rank-10000 shape)."""
    return clip("[" + ", ".join(str(d) for d in dims) + "]")


def check_shape(
    where: str, spec: TensorSpec, shape: tuple[int, ...], max_batch_size: int, limits: RequestLimits
) -> int:
    """Refuse a shape this input cannot take; return its element count."""
    expected = spec.batched_dims if max_batch_size > 0 else spec.dims
    fits = len(shape) == len(expected) and all(
        got >= 0 and (want == -1 or want == got) for want, got in zip(expected, shape, strict=True)
    )
    if not fits:
        batch_note = " (first dimension is the batch)" if max_batch_size > 0 else ""
        raise InvalidArgument(
            f"{where}: expected shape {shape_text(expected)}{batch_note}, got {shape_text(shape)}"
        )
    if max_batch_size > 0 and not 1 <= shape[0] <= max_batch_size:
        raise InvalidArgument(f"{where}: batch size {shape[0]} is outside 1..max_batch_size {max_batch_size}")
    if 0 in shape and not limits.allow_zero_size_dims:
        raise InvalidArgument(
            f"{where}: expected no zero-sized dimension (the model does not declare parameter "
            f'{ALLOW_ZERO_SIZE_DIMS} "true"), got shape {shape_text(shape)}'
        )
    itemsize = max(spec.dtype.itemsize, 1) if spec.datatype != "BYTES" else 4
    if math.prod(d for d in shape if d) * itemsize > MAX_TENSOR_BYTES:
        raise InvalidArgument(
            f"{where}: expected a shape of at most {MAX_TENSOR_BYTES} bytes of {spec.datatype}, "
            f"got shape {shape_text(shape)}"
        )
    bounds = limits.max_dims.get(spec.name)
    if bounds:
        offset = 1 if max_batch_size > 0 else 0
        for axis, bound in enumerate(bounds, offset):
            if bound != NO_BOUND and shape[axis] > bound:
                raise InvalidArgument(
                    f"{where}: expected dim {axis} of at most {bound} (parameter {MAX_INPUT_DIMS}), "
                    f"got {shape[axis]} in shape {shape_text(shape)}"
                )
    return math.prod(shape)
