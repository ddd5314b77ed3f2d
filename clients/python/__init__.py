"""Thin KServe v2 gRPC client for ortserve (and Triton): image recognition, predict, asyncio.

    from ortserve.client import InferenceClient

    with InferenceClient("localhost:8001", timeout=10) as client:
        client.classify("digits_resnet", "seven.png", top_k=3)       # [("7", 0.98), ("1", 0.01), ...]
        client.infer("digits_mlp", pixels)                            # {"logits": array([...])}
        client.predict_sequences("digits_rnn", [seq_a, seq_b])      # [row_a, row_b], input order
        with client.sequence("digits_lstm_step") as sequence:         # streaming, state kept between steps
            sequence.step(rows[:1])                                   # {"logits": ...} for the prefix

- Runtime needs: grpcio, protobuf and numpy. Pillow (`pip install 'ortserve[image]'`) is imported only
  when an image must be decoded or resized: file paths, encoded bytes and PIL images, and numpy arrays
  whose height and width differ from the model's. Model-sized numpy arrays need no Pillow.
- Only the standard KServe v2 protocol and Triton's classification extension are used, so the same
  client works against Triton.
- `classify` returns the list of (label, score) pairs of the one image it was given, or a list of such
  lists, in input order, when it was given a list (a numpy array is always one image).
- Failures raise InferenceServerError (`.code`: grpc.StatusCode, `.message`: the server's details).
  Calls that fail with UNAVAILABLE are retried (RetryPolicy: 3 attempts, backoff 0.05 s doubling up to
  1 s, jittered), inference included (`retry_infer=False` turns that off, e.g. for stateful models);
  loading and unloading models are never retried. `timeout` bounds a whole call, retries included.
"""

from .async_client import AsyncInferenceClient
from .core import Classification, ModelIndexEntry
from .errors import InferenceServerError, SequenceError
from .options import RetryPolicy
from .sync_client import InferenceClient

__all__ = [
    "AsyncInferenceClient",
    "Classification",
    "InferenceClient",
    "InferenceServerError",
    "ModelIndexEntry",
    "RetryPolicy",
    "SequenceError",
]
