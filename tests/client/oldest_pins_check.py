"""Run by test_client_oldest_pins.py inside a venv holding the oldest supported releases (not a test module).

Usage: python oldest_pins_check.py HOST:PORT GRPCIO PROTOBUF NUMPY
Exercises infer, classify, predict_sequences, models and the asyncio client against a running server,
and prints one line `OK ...` on success (any failure raises).
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np
from google import protobuf
from PIL import Image

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceServerError


def main(address: str, grpcio: str, protobuf_version: str, numpy_version: str) -> None:
    found = (grpc.__version__, protobuf.__version__, np.__version__)
    assert found == (grpcio, protobuf_version, numpy_version), f"unexpected versions {found}"
    with InferenceClient(address, timeout=60) as client:
        assert client.is_server_ready()
        assert "image_u8" in {entry.name for entry in client.models()}
        sequence = np.ones((2, 3, 4), np.float32)
        assert np.array_equal(
            client.infer("sequence", {"sequence": sequence})["summary"], sequence.sum(axis=1)
        )
        photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
        grey = np.zeros((8, 8), np.uint8)
        photo_top, grey_top = client.classify("image_u8", [photo, grey], top_k=3)
        assert len(photo_top) == 3 and len(grey_top) == 3
        lengths = [3, 1, 3, 2]
        sums = client.predict_sequences("sequence", [np.full((n, 4), n, np.float32) for n in lengths])
        assert [float(s[0]) for s in sums] == [float(n * n) for n in lengths]
        try:
            client.model_metadata("no_such_model")
            raise AssertionError("NOT_FOUND expected")
        except InferenceServerError as exc:
            assert exc.code == grpc.StatusCode.NOT_FOUND

    async def concurrent() -> list:
        async with AsyncInferenceClient(address, timeout=60) as client:
            return await asyncio.gather(
                *(client.infer("sequence", {"sequence": sequence * i}) for i in range(8))
            )

    results = asyncio.run(concurrent())
    assert [float(r["summary"][0, 0]) for r in results] == [3.0 * i for i in range(8)]
    sys.stdout.write(f"OK grpcio={found[0]} protobuf={found[1]} numpy={found[2]}\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
