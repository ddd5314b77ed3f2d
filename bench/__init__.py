"""Benchmarks: ortserve beside raw onnxruntime, MLServer and a bare gRPC server (`python -m bench.run`)."""
