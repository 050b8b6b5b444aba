"""Triton Python-backend model: a cross-encoder student scoring one query's products.

Inputs (no batch dimension; one request = one query):
  ``query`` BYTES [1], ``product_text`` BYTES [-1].
Outputs: ``score`` FP32 [-1] (expected grade in [0, 3]), ``grade_probs`` FP32 [-1, 4].
Tokenization (``tokenizers``) and the ONNX graph (``onnxruntime``, CPU) both run here,
so the model serves on a Triton without the ONNX Runtime backend.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

# Tokenizer encoding attribute behind each ONNX input name.
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
        parameters = json.loads(args["model_config"]).get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "1"))
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(serving["max_length"], strategy="longest_first")
        self.tokenizer.enable_padding(pad_id=serving["pad_id"], pad_token=serving["pad_token"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(version_dir / serving["onnx"]), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _score(self, query, texts):
        if not texts:
            return np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
        encodings = self.tokenizer.encode_batch([(query, text) for text in texts])
        feeds = {
            name: np.asarray([getattr(e, _ENCODING_FIELDS[name]) for e in encodings], np.int64)
            for name in self.input_names
        }
        score, grade_probs = self.session.run(["score", "grade_probs"], feeds)
        return score.astype(np.float32), grade_probs.astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                query = _strings(request, "query")
                if len(query) != 1:
                    raise ValueError(f"input 'query' must hold exactly 1 string, got {len(query)}")
                score, grade_probs = self._score(query[0], _strings(request, "product_text"))
                outputs = [
                    pb_utils.Tensor("score", score),
                    pb_utils.Tensor("grade_probs", grade_probs),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as err:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
