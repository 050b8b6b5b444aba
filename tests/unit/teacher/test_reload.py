"""teacher-labeling loads a new teacher written into its checkpoint directory without a
restart, labels each call with one teacher, and keeps the old one if the new fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from contracts.artifacts import TEACHER_JSON
from services.teacher_labeling.service import ReloadingLabeler, current_labeler


def test_a_new_teacher_json_is_loaded_in_place(llama_teacher: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "teacher"
    shutil.copytree(llama_teacher, checkpoint)
    reloading = ReloadingLabeler(checkpoint, check_s=0.0)
    first = current_labeler(reloading)
    pair = [("acme sofa", {"product_id": "p", "title": "acme red sofa"})]
    assert len(first.label(pair)) == 1

    spec = json.loads((checkpoint / TEACHER_JSON).read_text())
    spec["version"] = "rolled-out"
    (checkpoint / TEACHER_JSON).write_text(json.dumps(spec))
    second = current_labeler(reloading)
    assert second is not first and second.version == "rolled-out"
    assert first.version != "rolled-out"  # a call that holds the old teacher keeps it

    (checkpoint / TEACHER_JSON).write_text("{not json")  # a rollout caught half-written
    assert current_labeler(reloading) is second
