"""The checked-in generated code must be exactly what the .proto sources produce."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    generated = _load_generator().generate(tmp_path)
    assert generated, "the generator produced nothing"
    checked_in = ROOT / "proto" / "relevance" / "v1"
    fresh_names = {p.name for p in generated}
    checked_names = {p.name for p in checked_in.glob("*_pb2*.py*")}
    assert fresh_names == checked_names, "run `python proto/generate.py`: files differ"
    for fresh in generated:
        assert fresh.read_bytes() == (checked_in / fresh.name).read_bytes(), (
            f"{fresh.name} drifted from its .proto source: run `python proto/generate.py`"
        )


def test_every_topic_payload_and_service_is_generated() -> None:
    from relevance.v1 import (
        candidate_generation_pb2,
        student_inference_pb2,
        teacher_labeling_pb2,
        topics_pb2,
    )

    services = {
        s.full_name
        for module in (candidate_generation_pb2, teacher_labeling_pb2, student_inference_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "relevance.v1.CandidateGeneration",
        "relevance.v1.TeacherLabeling",
        "relevance.v1.StudentInference",
    }
    assert {"CandidateBatch", "LabelRecord", "RelabelRequest", "DeadLetter"} <= set(
        topics_pb2.DESCRIPTOR.message_types_by_name
    )
