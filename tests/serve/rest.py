"""A few lines of KServe v2 REST with the standard library, for the server tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from ortserve.protos.datatypes import KSERVE_TO_NUMPY

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json()["error"]


def call(
    base: str,
    path: str,
    body: bytes | dict | list | None = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Answer:
    """One HTTP request; any status comes back as an Answer (no exception for 4xx/5xx)."""
    headers = dict(headers or {})
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Answer(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, dict(error.headers), error.read())


def binary_infer_body(
    inputs: dict[str, np.ndarray], datatypes: dict[str, str], outputs: list[str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A binary tensor extension body (JSON header + raw tensors) and its headers; outputs asked binary."""
    header = {
        "inputs": [],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs or []],
    }
    chunks = []
    for name, array in inputs.items():
        raw = np.ascontiguousarray(array).tobytes()
        header["inputs"].append(
            {"name": name, "datatype": datatypes[name], "shape": list(array.shape),
             "parameters": {"binary_data_size": len(raw)}}
        )  # fmt: skip
        chunks.append(raw)
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {
        HEADER_LENGTH: str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def binary_outputs(answer: Answer) -> dict[str, np.ndarray]:
    """The outputs of a binary answer (numeric datatypes) as numpy arrays."""
    length = int(answer.headers[HEADER_LENGTH])
    header = json.loads(answer.body[:length])
    offset, result = length, {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw = answer.body[offset : offset + size]
        offset += size
        dtype = KSERVE_TO_NUMPY[output["datatype"]]
        result[output["name"]] = np.frombuffer(raw, dtype=dtype).reshape(output["shape"])
    assert offset == len(answer.body), "bytes left over after the outputs"
    return result
