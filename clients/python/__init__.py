"""Thin KServe v2 gRPC client for ortserve (and Triton): image recognition, predict, asyncio."""
