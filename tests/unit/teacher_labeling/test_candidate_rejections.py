"""Candidate batches that cannot be labeled are rejected (dead-lettered by the loop),
naming the field, before anything is labeled or published."""

from __future__ import annotations

from relevance.v1 import common_pb2, topics_pb2

from services.core import bus
from services.teacher_labeling.service import CandidateLabelingHandler


class _Untouchable:
    """Stands in for the labeler and the publisher: any use fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"{name} used for a batch that should have been rejected")


def test_unlabelable_batches_are_rejected_naming_the_field() -> None:
    product = common_pb2.Product(product_id="p1", title="Grey sofa")
    batches = {
        "products: must hold at least one product": topics_pb2.CandidateBatch(
            query_id="q1", query="grey sofa"
        ),
        "query_id: must not be empty": topics_pb2.CandidateBatch(
            query="grey sofa", products=[product]
        ),
        "query: must not be empty": topics_pb2.CandidateBatch(
            query_id="q2", query="  ", products=[product]
        ),
    }
    handler = CandidateLabelingHandler(_Untouchable(), _Untouchable())  # type: ignore[arg-type]
    deliveries = [bus.Delivery(None, batch) for batch in batches.values()]  # type: ignore[arg-type]
    rejected = handler(deliveries)
    assert [r.reason for r in rejected] == list(batches)  # 3 in, 3 rejections out
    assert all(r.error_type == "ValidationError" for r in rejected)
