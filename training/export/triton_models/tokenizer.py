"""Triton Python-backend model: tokenizes (query, product text) pairs for the ONNX step.

GPU variant's first ensemble step. Inputs (no batch dimension; one request = one
query): ``query`` BYTES [1], ``product_text`` BYTES [-1]. Outputs: INT64 [-1, -1]
tensors named after the ONNX graph's inputs (``input_ids``, ``attention_mask`` and, for
BERT-like models, ``token_type_ids``), listed in ``serving.json``.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

_ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}


def _strings(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"input {name!r} is missing")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy()]


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((version_dir / "serving.json").read_text())
        self.input_names = serving["input_names"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(serving["max_length"], strategy="longest_first")
        self.tokenizer.enable_padding(pad_id=serving["pad_id"], pad_token=serving["pad_token"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                query = _strings(request, "query")
                if len(query) != 1:
                    raise ValueError(f"input 'query' must hold exactly 1 string, got {len(query)}")
                texts = _strings(request, "product_text")
                encodings = self.tokenizer.encode_batch([(query[0], text) for text in texts])
                width = len(encodings[0].ids) if encodings else 0
                outputs = [
                    pb_utils.Tensor(
                        name,
                        np.asarray(
                            [getattr(e, _ENCODING_FIELDS[name]) for e in encodings], np.int64
                        ).reshape(len(encodings), width),
                    )
                    for name in self.input_names
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as err:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
