"""onnxmod — decompose trained recurrent neural networks stored as ONNX into per-concern modules,
and compose modules back into one ONNX graph (Imtiaz et al., ICSE 2023, done on ONNX)."""
__version__ = "0.1.0"
