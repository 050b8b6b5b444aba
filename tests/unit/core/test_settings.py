from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.config_docs import render
from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELKD_KAFKA_BOOTSTRAP", "kafka-0:9092")
    monkeypatch.setenv("RELKD_STUDENT_INFERENCE_PORT", "6000")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-0:9092"
    assert settings.student_inference_port == 6000
    assert Settings.model_fields["candidate_generation_port"].default == 50051


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELKD_TEACHER_LABELING_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="teacher_labeling_port"):
        Settings()


def test_configuration_docs_match_the_settings_classes() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert documented == render(), (
        "run `python -m services.core.config_docs > docs/configuration.md`"
    )
