"""Triton Python-backend model: tokenizes (query, product text) pairs for the ONNX step.

GPU variant's first ensemble step. Inputs (no batch dimension; one request = one
query): ``query`` BYTES [1], ``product_text`` BYTES [-1], optional ``product_id`` BYTES
[-1] (keys the product token cache; without it the text does). Outputs: INT64 [-1, -1]
tensors named after the ONNX graph's inputs (``input_ids``, ``attention_mask`` and, for
BERT-like models, ``token_type_ids``), listed in ``serving.json``.
"""

import json
import sys
from functools import partial
from pathlib import Path

import triton_python_backend_utils as pb_utils

# pair_tokens.py is copied next to this file (the version directory).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pair_tokens import PairAssembler, ProductTokenCache, request_rows


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((version_dir / "serving.json").read_text())
        self.input_names = serving["input_names"]
        # Products are tokenized once (keyed by product id and text hash); a request
        # tokenizes only its query.
        self.assembler = PairAssembler(
            str(version_dir / "tokenizer.json"), serving["max_length"], serving["pad_id"]
        )
        self.products = ProductTokenCache(self.assembler)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                rows = request_rows(
                    self.products,
                    partial(pb_utils.get_input_tensor_by_name, request),
                )
                outputs = [pb_utils.Tensor(name, rows[name]) for name in self.input_names]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as err:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
