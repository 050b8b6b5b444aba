"""Triton Python-backend model: a cross-encoder student scoring one query's products.

Inputs (no batch dimension; one request = one query):
  ``query`` BYTES [1], ``product_text`` BYTES [-1], optional ``product_id`` BYTES [-1]
  (keys the product token cache; without it the text does).
Outputs: ``score`` FP32 [-1] (grade units: expected grade plus the free score logit),
``grade_probs`` FP32 [-1, 4].
Tokenization (``tokenizers``; each product once, see ``pair_tokens.py``) and the ONNX
graph (``onnxruntime``, CPU) both run here, so the model serves on a Triton without the
ONNX Runtime backend.
"""

import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# pair_tokens.py is copied next to this file (the version directory).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pair_tokens import PairAssembler, ProductTokenCache, request_rows


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        serving = json.loads((version_dir / "serving.json").read_text())
        parameters = json.loads(args["model_config"]).get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "1"))
        # Products are tokenized once (keyed by product id and text hash); a request
        # tokenizes only its query.
        self.assembler = PairAssembler(
            str(version_dir / "tokenizer.json"), serving["max_length"], serving["pad_id"]
        )
        self.products = ProductTokenCache(self.assembler)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: they share the cores with the
        # server's own threads (measured on 2 loaded cores: 16 % less CPU per request
        # and a lower median, docs/triton.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(version_dir / serving["onnx"]), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _score(self, request):
        rows = request_rows(self.products, partial(pb_utils.get_input_tensor_by_name, request))
        if not len(rows["input_ids"]):
            return np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
        feeds = {name: rows[name] for name in self.input_names}
        score, grade_probs = self.session.run(["score", "grade_probs"], feeds)
        return score.astype(np.float32), grade_probs.astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                score, grade_probs = self._score(request)
                outputs = [
                    pb_utils.Tensor("score", score),
                    pb_utils.Tensor("grade_probs", grade_probs),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as err:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
