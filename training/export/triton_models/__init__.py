"""Python-backend model sources copied into Triton model repositories.

They run inside Triton's own interpreter (the Triton virtual environment: numpy<2,
onnxruntime, tokenizers), never inside this project, so each file is self-contained
and imports nothing from it. Every version directory holds the model file as
``model.py`` next to ``serving.json`` (written by ``training.export.triton_repo``),
``tokenizer.json`` and, where used, the ONNX graph.
"""
