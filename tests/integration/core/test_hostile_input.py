"""Hostile input against the three real service processes: undecodable bytes, caps on
every repeated field, duplicates, and a property-based fuzz (hypothesis) over the
request messages and raw bytes that asserts no UNKNOWN or INTERNAL answer and a live
server afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relevance.v1 import (
    candidate_generation_pb2,
    common_pb2,
    student_inference_pb2,
    teacher_labeling_pb2,
)
from service_processes import start_service, stop_service

from ops.stack import health_status
from services.core.broker import free_port
from services.student_inference.backends import two_tower_env
from training.export.exporter import export_student

pytestmark = pytest.mark.integration

# Small caps, so that generated requests cross them often.
CAP = 6
CAPS = {
    "RELKD_MAX_PRODUCTS": str(CAP),
    "RELKD_LABEL_MAX_PAIRS": str(CAP),
    "RELKD_LABEL_MAX_PRODUCT_ITEMS": str(CAP),
    "RELKD_CANDIDATE_MAX_BATCH_QUERIES": str(CAP),
    "RELKD_CANDIDATE_UPSERT_MAX_PRODUCTS": str(CAP),
    "RELKD_KAFKA_BOOTSTRAP": "",
}
# Any of these is a proper answer to a request; UNKNOWN or INTERNAL is a bug.
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}
SCORE = "/relevance.v1.StudentInference/Score"
LABEL = "/relevance.v1.TeacherLabeling/Label"
GENERATE = "/relevance.v1.CandidateGeneration/Generate"
GENERATE_BATCH = "/relevance.v1.CandidateGeneration/GenerateBatch"
UPSERT = "/relevance.v1.CandidateGeneration/UpsertProducts"
STREAMING = {GENERATE_BATCH}


@dataclass
class Servers:
    addresses: dict[str, str]
    channels: dict[str, grpc.Channel]

    def call(self, method: str, payload: bytes) -> grpc.StatusCode:
        """Sends raw request bytes to `method`; the status code of the answer."""
        channel = self.channels[method]
        try:
            if method in STREAMING:
                for _ in channel.unary_stream(method)(payload, timeout=10):
                    pass
            else:
                channel.unary_unary(method)(payload, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def servers(
    two_tower_checkpoint: Path, products_parquet: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    """The three services as processes: the student with a real two-tower export, the
    teacher without a model, candidate generation without an index."""
    export_dir = tmp_path_factory.mktemp("hostile") / "two-tower"
    export_student(two_tower_checkpoint, export_dir, int8=False, products=products_parquet)
    processes: list[subprocess.Popen[bytes]] = []
    addresses = {}
    try:
        for name, methods, env in (
            ("student-inference", (SCORE,), two_tower_env(export_dir)),
            ("teacher-labeling", (LABEL,), {}),
            ("candidate-generation", (GENERATE, GENERATE_BATCH, UPSERT), {}),
        ):
            port = free_port()
            processes.append(start_service(name, port, {**CAPS, **env}))
            for method in methods:
                addresses[method] = f"127.0.0.1:{port}"
        channels = {method: grpc.insecure_channel(a) for method, a in addresses.items()}
        yield Servers(addresses, channels)
        for channel in channels.values():
            channel.close()
    finally:
        for process in processes:
            assert stop_service(process) == 0, "SIGTERM must stop the service cleanly"


def details(servers: Servers, method: str, request: Message) -> tuple[grpc.StatusCode, str]:
    channel = servers.channels[method]
    try:
        if method in STREAMING:
            list(channel.unary_stream(method)(request.SerializeToString(), timeout=10))
        else:
            channel.unary_unary(method)(request.SerializeToString(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("method", [SCORE, LABEL, GENERATE, GENERATE_BATCH, UPSERT])
@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x02\xc3\x28"])
def test_undecodable_bytes_are_invalid_argument(
    servers: Servers, method: str, payload: bytes
) -> None:
    # Truncated varint tag; a length-delimited field longer than the payload; a string
    # field that is not UTF-8.
    assert servers.call(method, payload) == grpc.StatusCode.INVALID_ARGUMENT


def test_undecodable_health_check_is_invalid_argument(servers: Servers) -> None:
    channel = servers.channels[SCORE]
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/grpc.health.v1.Health/Check")(b"\xff", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def product(i: int) -> dict[str, str]:
    return {"product_id": f"p{i}", "title": f"product {i}"}


def label_pair(i: int, **product_fields: object) -> teacher_labeling_pb2.LabelPair:
    return teacher_labeling_pb2.LabelPair(
        query="sofa", product=common_pb2.Product(**product(i), **product_fields)
    )


@pytest.mark.parametrize(
    ("method", "request_", "field", "problem"),
    [
        (
            SCORE,
            student_inference_pb2.ScoreRequest(
                query="sofa", products=[product(i) for i in range(CAP + 1)]
            ),
            "products",
            f"at most {CAP} per request (RELKD_MAX_PRODUCTS)",
        ),
        (
            SCORE,
            student_inference_pb2.ScoreRequest(
                query="sofa", products=[product(0), product(1), product(0)]
            ),
            "products[2].product_id",
            "duplicate 'p0'",
        ),
        (
            LABEL,
            teacher_labeling_pb2.LabelRequest(pairs=[label_pair(i) for i in range(CAP + 1)]),
            "pairs",
            f"at most {CAP} per request (RELKD_LABEL_MAX_PAIRS)",
        ),
        (
            LABEL,
            teacher_labeling_pb2.LabelRequest(pairs=[label_pair(0), label_pair(0)]),
            "pairs[1]",
            "duplicate of pairs[0]",
        ),
        (
            LABEL,
            teacher_labeling_pb2.LabelRequest(pairs=[label_pair(0, features=["x"] * (CAP + 1))]),
            "pairs[0].product.features",
            f"at most {CAP} (RELKD_LABEL_MAX_PRODUCT_ITEMS)",
        ),
        (
            LABEL,
            teacher_labeling_pb2.LabelRequest(
                pairs=[label_pair(0, attributes={str(i): "x" for i in range(CAP + 1)})]
            ),
            "pairs[0].product.attributes",
            f"at most {CAP} (RELKD_LABEL_MAX_PRODUCT_ITEMS)",
        ),
        (
            GENERATE_BATCH,
            candidate_generation_pb2.GenerateBatchRequest(
                queries=[f"q{i}" for i in range(CAP + 1)], per_query=4
            ),
            "queries",
            f"at most {CAP} per request (RELKD_CANDIDATE_MAX_BATCH_QUERIES)",
        ),
        (
            GENERATE_BATCH,
            candidate_generation_pb2.GenerateBatchRequest(
                queries=["sofa", "desk", " sofa "], per_query=4
            ),
            "queries[2]",
            "duplicate of queries[0]",
        ),
        (
            UPSERT,
            candidate_generation_pb2.UpsertProductsRequest(
                products=[common_pb2.Product(product_id=f"p{i}", title="t") for i in range(CAP + 1)]
            ),
            "products",
            f"at most {CAP} per request (RELKD_CANDIDATE_UPSERT_MAX_PRODUCTS)",
        ),
        (
            UPSERT,
            candidate_generation_pb2.UpsertProductsRequest(
                products=[
                    common_pb2.Product(product_id="p1", title="sofa"),
                    common_pb2.Product(product_id="p1", title="sofa again"),
                ]
            ),
            "products[1].product_id",
            "duplicate 'p1'",
        ),
    ],
)
def test_caps_and_duplicates_name_the_field(
    servers: Servers, method: str, request_: Message, field: str, problem: str
) -> None:
    code, message = details(servers, method, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(f"{field}: "), message
    assert problem in message


texts = st.text(max_size=40)
product_ids = st.sampled_from(["p0", "p1", "p2", "p3", "p4", "", "unknown"])
score_products = st.builds(
    student_inference_pb2.ScoreProduct,
    product_id=product_ids | texts,
    title=texts,
    product_type=texts,
    brand=texts,
)
catalog_products = st.builds(
    common_pb2.Product,
    product_id=product_ids,
    title=texts,
    brand=texts,
    features=st.lists(texts, max_size=CAP + 2),
    attributes=st.dictionaries(texts, texts, max_size=CAP + 2),
)
REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    SCORE: st.builds(
        student_inference_pb2.ScoreRequest,
        query=texts,
        products=st.lists(score_products, max_size=CAP + 2),
        request_id=texts,
    ),
    LABEL: st.builds(
        teacher_labeling_pb2.LabelRequest,
        pairs=st.lists(
            st.builds(teacher_labeling_pb2.LabelPair, query=texts, product=catalog_products),
            max_size=CAP + 2,
        ),
        explain=st.booleans(),
    ),
    GENERATE: st.builds(
        candidate_generation_pb2.GenerateRequest,
        query=texts,
        k=st.integers(-(2**31), 2**31 - 1),
        query_id=texts,
    ),
    GENERATE_BATCH: st.builds(
        candidate_generation_pb2.GenerateBatchRequest,
        queries=st.lists(texts, max_size=CAP + 2),
        per_query=st.integers(-(2**31), 2**31 - 1),
    ),
    UPSERT: st.builds(
        candidate_generation_pb2.UpsertProductsRequest,
        products=st.lists(catalog_products, max_size=CAP + 2),
    ),
}


def _mutated(data: st.DataObject, payload: bytes) -> bytes:
    """A valid message's bytes with a few bytes flipped, cut or appended."""
    raw = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if action == "flip" and raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


PAYLOADS: dict[str, Callable[[st.DataObject, str], bytes]] = {
    "message": lambda data, method: data.draw(REQUESTS[method]).SerializeToString(),
    "mutated": lambda data, method: _mutated(data, data.draw(REQUESTS[method]).SerializeToString()),
    "bytes": lambda data, method: data.draw(st.binary(max_size=256)),
}


@pytest.mark.parametrize("kind", PAYLOADS)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_requests_get_a_proper_answer(servers: Servers, kind: str, data: st.DataObject):
    method = data.draw(st.sampled_from(sorted(REQUESTS)))
    payload = PAYLOADS[kind](data, method)
    code = servers.call(method, payload)
    assert code in ANSWERS, f"{method} answered {code.name} to {payload!r}"


def test_servers_alive_and_answering_after_the_fuzz(servers: Servers) -> None:
    # Runs last in this module (pytest keeps file order): the fuzz left them serving.
    for method, address in servers.addresses.items():
        assert health_status(address) == "SERVING", method
    request = student_inference_pb2.ScoreRequest(
        query="grey sofa", products=[product(0), product(3)]
    )
    code, message = details(servers, SCORE, request)
    assert code == grpc.StatusCode.OK, message
