"""Student export: checked ONNX graphs, int8 variants and Triton model repositories."""
