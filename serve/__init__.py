"""The ortserve inference server: KServe v2 gRPC over onnxruntime, with dynamic batching and metrics."""
