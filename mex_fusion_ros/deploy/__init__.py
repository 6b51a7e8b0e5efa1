"""Onboard deployment: export (ONNX / TorchScript), inference backends and the pipeline benchmark."""
