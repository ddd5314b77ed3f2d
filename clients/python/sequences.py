"""Variable-length sequence prediction: group sequences by length into batched requests, keep input order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ortserve.protos import datatypes
from ortserve.protos import model_config_pb2 as mc


@dataclass(frozen=True)
class SequenceSpec:
    """What the [T, F] input of a sequence model expects."""

    model: str
    """Model name, for messages."""
    input_name: str
    """The sequence input tensor."""
    dtype: np.dtype
    """Element type the input takes; sequences are cast to it."""
    features: int
    """F, or -1 when the model accepts any."""
    max_batch_size: int
    """Sequences per request (0: the model does not batch)."""
    batch_dim: bool
    """Whether the input tensor has a leading batch dimension."""
    default_output: str
    """The output returned when the caller names none: the model's first."""

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> SequenceSpec:
        """Read the sequence input from a ModelConfig."""
        if len(config.input) != 1 or not config.output:
            raise ValueError(
                f"model {config.name!r} is not a sequence model: predict_sequences needs one [T, F] input "
                f"and an output, it has {len(config.input)} inputs and {len(config.output)} outputs"
            )
        tensor = config.input[0]
        dims = list(tensor.dims)
        batch_dim = config.max_batch_size > 0 or len(dims) == 3
        if len(dims) == 3:
            dims = dims[1:]
        if len(dims) != 2:
            raise ValueError(f"model {config.name!r} input {tensor.name!r} has dims {dims}; expected [T, F]")
        return cls(
            model=config.name,
            input_name=tensor.name,
            dtype=datatypes.KSERVE_TO_NUMPY[datatypes.CONFIG_TO_KSERVE[mc.DataType.Name(tensor.data_type)]],
            features=dims[1],
            max_batch_size=max(config.max_batch_size, 0),
            batch_dim=batch_dim,
            default_output=config.output[0].name,
        )

    def batches(self, sequences: Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
        """(input positions, input tensor) per request: same-length sequences stacked, at most
        max_batch_size rows each (one sequence per request when the model does not batch)."""
        by_length: dict[int, list[int]] = {}
        arrays = []
        for position, sequence in enumerate(sequences):
            array = np.asarray(sequence)
            if array.ndim != 2 or (self.features >= 0 and array.shape[1] != self.features):
                want = "F" if self.features < 0 else str(self.features)
                raise ValueError(
                    f"sequence {position} for model {self.model!r} has shape {list(array.shape)}; "
                    f"expected [T, {want}]"
                )
            arrays.append(array.astype(self.dtype, copy=False))
            by_length.setdefault(array.shape[0], []).append(position)
        size = self.max_batch_size or 1
        result = []
        for positions in by_length.values():
            for start in range(0, len(positions), size):
                chunk = positions[start : start + size]
                stacked = np.stack([arrays[p] for p in chunk])
                result.append((chunk, stacked if self.batch_dim else stacked[0]))
        return result


def scatter(
    results: list[np.ndarray | None], positions: list[int], output: np.ndarray, batched: bool
) -> None:
    """Put each row of a batched output back at its sequence's input position."""
    rows = output if batched else output[None]
    if len(rows) != len(positions):
        raise ValueError(f"the model returned {len(rows)} rows for a batch of {len(positions)} sequences")
    for position, row in zip(positions, rows, strict=True):
        results[position] = row
