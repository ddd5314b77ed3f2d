"""Protocol contracts (KServe v2 / Triton gRPC) and their generated Python bindings."""
