"""Export PyTorch models to ONNX, prove the export is faithful, and write a Triton-layout model repository."""
