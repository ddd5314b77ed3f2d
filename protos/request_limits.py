"""The config.pbtxt parameters that bound what a request may carry: one home for exporter and server.

- `allow_zero_size_dims`: "true" lets requests carry tensors with a 0 in their shape; anything else (or
  absent) refuses them, since some exports abort the process on empty tensors (a bidirectional GRU on a
  zero-length sequence).
- `max_input_dims`: upper bounds of the non-batch dimensions of inputs, `NAME:D1,D2,...;NAME2:...`, one
  bound per dimension in config `dims` order (the batch dimension excluded), -1 for no bound, e.g.
  `input:4096,-1` (at most 4096 time steps). Inputs not named are unbounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ALLOW_ZERO_SIZE_DIMS = "allow_zero_size_dims"
MAX_INPUT_DIMS = "max_input_dims"
NO_BOUND = -1


def format_max_input_dims(bounds: Mapping[str, Sequence[int]]) -> str:
    """The `max_input_dims` value for {input name: bound per non-batch dim}."""
    return ";".join(f"{name}:{','.join(str(int(b)) for b in dims)}" for name, dims in bounds.items())


def parse_max_input_dims(text: str) -> dict[str, tuple[int, ...]]:
    """{input name: bound per non-batch dim} from a `max_input_dims` value; ValueError says what is wrong."""
    bounds: dict[str, tuple[int, ...]] = {}
    for entry in text.split(";"):
        if not entry.strip():
            continue
        name, colon, dims = entry.rpartition(":")
        name = name.strip()
        if not colon or not name:
            raise ValueError(f"entry {entry.strip()!r} is not NAME:D1,D2,...")
        if name in bounds:
            raise ValueError(f"input {name!r} is given twice")
        try:
            values = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            raise ValueError(f"entry {entry.strip()!r}: bounds must be integers (-1: no bound)") from None
        if any(value < 1 and value != NO_BOUND for value in values):
            raise ValueError(f"entry {entry.strip()!r}: bounds must be positive or -1 (no bound)")
        bounds[name] = values
    return bounds
