"""Run in the tritonclient venv: stream sequences with tritonclient's own sequence API against a server.

    python tritonclient_sequence_check.py SPEC.json   # prints {"answers": {...}, "errors": {...}} as JSON

SPEC: {"url", "model", "sequences": {name: {"id": int|str, "chunks": [[T, F] lists...]}}}. The sequences'
steps are sent interleaved (step 0 of each, then step 1 ...); `errors` holds what the protocol checks got.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    client = grpcclient.InferenceServerClient(spec["url"])
    model, sequences = spec["model"], spec["sequences"]
    answers: dict[str, list] = {name: [] for name in sequences}
    steps = max(len(s["chunks"]) for s in sequences.values())
    for index in range(steps):
        for name, sequence in sequences.items():
            chunks = sequence["chunks"]
            if index >= len(chunks):
                continue
            x = np.asarray(chunks[index], dtype=np.float32)[None]
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer(
                model,
                [tensor],
                sequence_id=sequence["id"],
                sequence_start=index == 0,
                sequence_end=index == len(chunks) - 1,
            )
            answers[name].append(result.as_numpy("output").tolist())
    errors = {}
    x = np.zeros((1, 1, len(next(iter(sequences.values()))["chunks"][0][0])), np.float32)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    for what, kwargs in {
        "ended": {"sequence_id": next(iter(sequences.values()))["id"]},
        "no_id": {},
    }.items():
        try:
            client.infer(model, [tensor], **kwargs)
            errors[what] = "no error"
        except InferenceServerException as exc:
            errors[what] = f"{exc.status()}: {exc.message()}"
    metadata = client.get_server_metadata()
    print(json.dumps({"answers": answers, "errors": errors, "extensions": list(metadata.extensions)}))


if __name__ == "__main__":
    main()
