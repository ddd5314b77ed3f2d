"""KServe v2 datatypes: one table to numpy, the inverses derived from it, and BYTES tensor coding.

Shared by the server and the client (numpy is a core dependency; nothing heavy is imported here).
"""

from __future__ import annotations

import struct

import numpy as np

# KServe v2 datatype -> numpy dtype. BYTES travels as 4-byte little-endian length-prefixed items.
KSERVE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_KSERVE: dict[np.dtype, str] = {dtype: name for name, dtype in KSERVE_TO_NUMPY.items()}

# KServe datatype -> the InferTensorContents field that carries it typed (FP16 has none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# Triton model_config DataType enum names -> KServe datatype (Triton calls BYTES "STRING" there).
CONFIG_TO_KSERVE: dict[str, str] = {
    ("TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"): name for name in KSERVE_TO_NUMPY
}
KSERVE_TO_CONFIG: dict[str, str] = {kserve: config for config, kserve in CONFIG_TO_KSERVE.items()}


def numpy_to_kserve(dtype: np.dtype) -> str:
    """The KServe datatype of a numpy dtype; strings and bytes map to BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return NUMPY_TO_KSERVE[dtype.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no KServe v2 datatype") from None


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Flatten a BYTES tensor (bytes, str or objects) into length-prefixed raw contents."""
    parts = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes, count: int | None = None) -> np.ndarray:
    """Parse length-prefixed raw contents into a flat object array of bytes.

    Raises ValueError when the buffer is truncated or (with `count`) holds another number of items.
    """
    items: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise ValueError(f"BYTES contents truncated at offset {offset}: no room for a 4-byte length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise ValueError(f"BYTES contents truncated: item of {length} bytes at offset {offset - 4}")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if count is not None and len(items) != count:
        raise ValueError(f"BYTES contents hold {len(items)} items, shape needs {count}")
    result = np.empty(len(items), dtype=object)
    result[:] = items
    return result
