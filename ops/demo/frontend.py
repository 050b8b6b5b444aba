"""A search frontend's view of student-inference: gRPC Score calls, as a Scorer."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc

from services.core.grpc_security import client_channel
from services.core.settings import get_settings

MAX_PRODUCTS_PER_REQUEST = 256


def score_product(product: Mapping[str, Any]) -> student_inference_pb2.ScoreProduct:
    return student_inference_pb2.ScoreProduct(
        product_id=product["product_id"],
        title=product["title"],
        product_type=product.get("product_type") or "",
        brand=product.get("brand") or "",
    )


class GrpcStudentScorer:
    """Scores pairs through `relevance.v1.StudentInference/Score`, one request per query."""

    def __init__(self, address: str, name: str = "served", timeout_s: float = 10.0) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.model = ""
        self.serving_version = ""  # the model version that answered the last request
        self._channel = client_channel(address, get_settings())
        self._stub = student_inference_pb2_grpc.StudentInferenceStub(self._channel)

    def __enter__(self) -> GrpcStudentScorer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    def score(self, query: str, products: Sequence[Mapping[str, Any]]) -> list[float]:
        reply = self._stub.Score(
            student_inference_pb2.ScoreRequest(
                query=query, products=[score_product(p) for p in products]
            ),
            timeout=self.timeout_s,
        )
        # The training run that scored, and the Triton deployment that served it.
        self.serving_version = reply.serving.version
        self.model = (
            f"{reply.model.name}:{reply.model.version} "
            f"(served by {reply.serving.backend} {reply.serving.model}:{reply.serving.version})"
        )
        return [s.score for s in reply.scores]

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        scores: list[float] = []
        pairs = list(zip(queries, products, strict=True))
        for query, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
            grouped = [product for _, product in group]
            for start in range(0, len(grouped), MAX_PRODUCTS_PER_REQUEST):
                scores += self.score(query, grouped[start : start + MAX_PRODUCTS_PER_REQUEST])
        return np.asarray(scores, dtype=np.float64)

    def examples(self, dataset: Path, count: int) -> list[dict[str, Any]]:
        """The top product of a few test queries, as a frontend would show them."""
        from training.data import storage

        queries = storage.read_table(dataset, "queries", ["query_id", "query"], "test").to_pylist()[
            :count
        ]
        judgments = storage.read_table(
            dataset, "judgments", ["query_id", "product_id"], "test"
        ).to_pylist()
        products = {p["product_id"]: p for p in storage.read_table(dataset, "products").to_pylist()}
        shown = []
        for query in queries:
            pool = [
                products[j["product_id"]] for j in judgments if j["query_id"] == query["query_id"]
            ]
            scores = self.score(query["query"], pool)
            top = int(np.argmax(scores))
            shown.append(
                {
                    "query": query["query"],
                    "top_title": pool[top]["title"],
                    "top_score": scores[top],
                    "model": self.model,
                }
            )
        return shown
