"""Samples served Score requests to ``relevance.served.v1`` for the disagreement monitor.

Kept apart from the Score path: sampling is one random draw per request, and a
sampled request costs one asynchronous, non-blocking publish (the producer batches
and sends on its own thread). A sample lost in a crash is just a smaller sample.
"""

from __future__ import annotations

import logging
import random

from relevance.v1 import student_inference_pb2, topics_pb2

from contracts.text import query_id_for
from contracts.topics import SERVED
from services.core import bus

log = logging.getLogger(__name__)

PRODUCER = "student-inference"


def served_sample(
    request: student_inference_pb2.ScoreRequest, response: student_inference_pb2.ScoreResponse
) -> topics_pb2.ServedSample:
    return topics_pb2.ServedSample(
        meta=bus.event_meta(PRODUCER),
        request_id=response.request_id,
        query_id=query_id_for(request.query),
        query=request.query,
        products=[
            topics_pb2.ServedProduct(
                product_id=p.product_id,
                title=p.title,
                product_type=p.product_type,
                brand=p.brand,
                score=s.score,
            )
            for p, s in zip(request.products, response.scores, strict=True)
        ],
        student=response.model,
    )


class ServedSampler:
    """Publishes a `rate` share of served requests, drawn independently per request."""

    def __init__(self, publisher: bus.Publisher, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"served_sample_rate: must be in [0, 1], got {rate}")
        self.publisher = publisher
        self.rate = rate
        self._rng = random.Random(seed)

    def offer(
        self,
        request: student_inference_pb2.ScoreRequest,
        response: student_inference_pb2.ScoreResponse,
    ) -> bool:
        """Publishes the request and its scores with probability `rate`; True when it did."""
        if self._rng.random() >= self.rate:
            return False
        sample = served_sample(request, response)
        try:
            self.publisher.publish(SERVED, sample.query_id, sample)
        except Exception:
            # A sample is never worth failing the shopper's request over.
            log.exception("served sample not published", extra={"query_id": sample.query_id})
            return False
        return True

    def close(self) -> None:
        self.publisher.close()
