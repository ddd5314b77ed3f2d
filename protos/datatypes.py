"""KServe v2 datatypes: one table to numpy, the inverses derived from it, and BYTES tensor coding.

Shared by the server and the client (numpy is a core dependency; nothing heavy is imported here).
"""

from __future__ import annotations

import struct

import numpy as np

_PREFIX = struct.Struct("<I")

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


def deserialize_bytes_tensor(raw: bytes, count: int | None = None, *, text: bool = False) -> np.ndarray:
    """Parse length-prefixed raw contents into a flat object array of bytes (str with `text`: UTF-8).

    With `count`, the size is checked before any item is read (each item takes at least 4 bytes), exactly
    `count` items are read and any bytes after them are refused, so the work is bounded by the shape.
    Raises ValueError when the buffer is truncated, holds another number of items or (with `text`) an item
    that is not UTF-8.
    """
    raw = bytes(raw)
    size = len(raw)
    if count is None:
        return _parse_all(raw, text)
    if count * _PREFIX.size > size:
        raise ValueError(
            f"{count} items need at least {count * _PREFIX.size} bytes (a 4-byte length each), got {size}"
        )
    uniform = _uniform_items(raw, count)
    if uniform is not None:
        if not uniform[0]:  # all empty
            return np.full(count, "" if text else b"", dtype=object)
        return _as_array(uniform, text)
    items = [b""] * count
    unpack, offset = _PREFIX.unpack_from, 0
    try:
        for index in range(count):
            end = offset + 4 + unpack(raw, offset)[0]
            if end > size:
                raise ValueError(
                    f"item {index} of {end - offset - 4} bytes at offset {offset} runs past the end "
                    f"of the {size} bytes"
                )
            items[index] = raw[offset + 4 : end]
            offset = end
    except struct.error:
        raise ValueError(f"item {index} at offset {offset}: no room for its 4-byte length") from None
    if offset != size:
        raise ValueError(f"{size - offset} bytes left after the {count} items the shape holds")
    return _as_array(items, text)


def _uniform_items(raw: bytes, count: int) -> np.ndarray | list[bytes] | None:
    """Items of one length (fixed-width strings, empty items) cut out by numpy without a Python loop; None
    when the lengths differ or an item ends in NUL (numpy's fixed-width bytes would drop it)."""
    if count == 0 or len(raw) % count:
        return None
    stride = len(raw) // count
    length = stride - 4
    if length < 0 or _PREFIX.unpack_from(raw, 0)[0] != length:
        return None
    table = np.frombuffer(raw, np.uint8).reshape(count, stride)
    if not (table[:, :4] == table[0, :4]).all():
        return None
    if length == 0:
        return [b""] * count
    data = table[:, 4:]
    if not data[:, -1].all():
        return None
    return np.ascontiguousarray(data).view(f"S{length}").reshape(count).astype(object)


def _parse_all(raw: bytes, text: bool) -> np.ndarray:
    items, offset, size = [], 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise ValueError(f"BYTES contents truncated at offset {offset}: no room for a 4-byte length")
        (length,) = _PREFIX.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise ValueError(f"BYTES contents truncated: item of {length} bytes at offset {offset - 4}")
        items.append(raw[offset : offset + length])
        offset += length
    return _as_array(items, text)


def _as_array(items: list[bytes] | np.ndarray, text: bool) -> np.ndarray:
    if isinstance(items, np.ndarray) and not text:
        return items
    if text:
        try:
            items = [item.decode("utf-8") for item in items]
        except UnicodeDecodeError:
            for index, item in enumerate(items):
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"item {index} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    result = np.empty(len(items), dtype=object)
    result[:] = items
    return result
