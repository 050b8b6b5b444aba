"""The artifact contract: typed student/teacher specs round-trip, and bad files are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from relevance.v1 import common_pb2

from contracts.artifacts import (
    STUDENT_JSON,
    TEACHER_JSON,
    CrossEncoderSpec,
    TeacherSpec,
    TwoTowerSpec,
    read_student_spec,
    read_teacher_spec,
    student_spec,
    write_student_spec,
    write_teacher_spec,
)
from contracts.identity import ModelRef

TEACHER_FIELDS = {
    "name": "teacher",
    "version": "0123456789ab",
    "kind": "classifier",
    "backbone": "/models/minilm",
    "template": "{query} [SEP] {title}",
    "max_length": 128,
    "temperature": 1.3,
    # Training metadata is kept, not validated.
    "dev": {"ndcg@10": 0.71},
}


def test_student_specs_round_trip_with_training_metadata(tmp_path: Path) -> None:
    two_tower = student_spec(
        {
            "kind": "two-tower",
            "name": "tt",
            "version": "3",
            "max_length": 64,
            "text_fields": ["title", "brand"],
            "scale": 4.0,
            "bias": 1.5,
            "shared_towers": True,
            "dev": {"ndcg@10": 0.5},
        }
    )
    assert isinstance(two_tower, TwoTowerSpec) and two_tower.shared_towers
    write_student_spec(two_tower, tmp_path)
    again = read_student_spec(tmp_path)
    assert again == two_tower
    assert json.loads((tmp_path / STUDENT_JSON).read_text())["dev"] == {"ndcg@10": 0.5}
    assert again.model_ref == ModelRef(name="tt", version="3")

    cross = student_spec({"kind": "cross-encoder", "name": "ce", "version": "1", "max_length": 32})
    assert isinstance(cross, CrossEncoderSpec) and cross.text_fields == ["title"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "cross-encoder", "name": "ce", "version": "1"}, "max_length"),
        ({"kind": "rnn", "name": "ce", "version": "1", "max_length": 8}, "rnn"),
        ({"kind": "two-tower", "name": "tt", "version": "1", "max_length": 8}, "scale"),
        (
            {"kind": "cross-encoder", "name": "ce", "version": "1", "max_length": 8},
            None,
        ),
    ],
)
def test_a_bad_student_json_names_the_file_and_field(
    tmp_path: Path, fields: dict, problem: str | None
) -> None:
    (tmp_path / STUDENT_JSON).write_text(json.dumps(fields))
    if problem is None:
        assert read_student_spec(tmp_path).name == "ce"
        return
    with pytest.raises(ValueError, match=problem) as error:
        read_student_spec(tmp_path)
    assert str(tmp_path / STUDENT_JSON) in str(error.value)


def test_student_text_fields_must_be_product_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"text_fields \['colour'\]"):
        student_spec(
            {
                "kind": "cross-encoder",
                "name": "ce",
                "version": "1",
                "max_length": 8,
                "text_fields": ["title", "colour"],
            }
        )


def test_a_directory_without_student_json_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a student checkpoint"):
        read_student_spec(tmp_path)
    with pytest.raises(ValueError, match="not a teacher checkpoint"):
        read_teacher_spec(tmp_path)


def test_teacher_spec_round_trips(tmp_path: Path) -> None:
    spec = TeacherSpec.model_validate(TEACHER_FIELDS)
    write_teacher_spec(spec, tmp_path)
    again = read_teacher_spec(tmp_path)
    assert again == spec and again.num_grades == 4
    assert again.model_extra == {"dev": {"ndcg@10": 0.71}}
    assert str(again.model_ref) == "teacher:0123456789ab"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"kind": "ranker"}, "kind"),
        ({"version": ""}, "version"),
    ],
)
def test_a_bad_teacher_json_names_the_field(tmp_path: Path, change: dict, field: str) -> None:
    (tmp_path / TEACHER_JSON).write_text(json.dumps(TEACHER_FIELDS | change))
    with pytest.raises(ValueError, match=rf"invalid teacher spec: {field}:"):
        read_teacher_spec(tmp_path)


def test_model_ref_round_trips_the_wire_message() -> None:
    ref = ModelRef(name="relkd-student", version="7")
    message = ref.to_proto()
    assert message == common_pb2.ModelRef(name="relkd-student", version="7")
    assert ModelRef.from_proto(message) == ref
    with pytest.raises(ValueError, match="version"):
        ModelRef.from_proto(common_pb2.ModelRef(name="relkd-student"))
