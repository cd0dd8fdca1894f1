"""PyTorch definitions of the networks whose checkpoints are exported to ONNX at install."""
