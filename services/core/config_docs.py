"""Renders docs/configuration.md from the settings classes, so the docs cannot drift.

python -m services.core.config_docs > docs/configuration.md
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic_settings import BaseSettings

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every settings class of the platform, in the order the docs list them.
SETTINGS_CLASSES = (
    ("Platform core", "services.core.settings", "Settings"),
    ("Candidate generation", "services.candidate_generation.settings", "CandidateSettings"),
    ("Teacher labeling", "services.teacher_labeling.service", "TeacherLabelingSettings"),
    ("Label store", "services.label_store.settings", "LabelStoreSettings"),
    ("Distillation controller", "services.controller.settings", "ControllerSettings"),
    ("Student inference", "services.student_inference.service", "StudentInferenceSettings"),
    ("Disagreement monitor", "services.disagreement_monitor.service", "MonitorSettings"),
    (
        "Student inference: Triton backend",
        "services.student_inference.backends",
        "TritonBackendSettings",
    ),
    (
        "Student inference: two-tower backend",
        "services.student_inference.backends",
        "TwoTowerSettings",
    ),
    ("Embedded Triton server", "services.student_inference.triton_runtime", "TritonSettings"),
    ("KServe rollout", "ops.rollout.settings", "RolloutSettings"),
    ("Kubernetes jobs and offline checks", "ops.jobs.settings", "K8sSettings"),
    ("Data", "training.data.settings", "DataSettings"),
)


def _default(field) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is None or value == "":
        return "(unset)"
    # Defaults computed from the checkout's location read the same in every clone.
    if isinstance(value, Path) and value.is_absolute():
        if value.is_relative_to(REPO_ROOT):
            return f"`<repo>/{value.relative_to(REPO_ROOT)}`"
        if value.is_relative_to(REPO_ROOT.parent):
            return f"`<repo>/../{value.relative_to(REPO_ROOT.parent)}`"
    return f"`{value}`"


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable with the `RELKD_` prefix. This page is",
        "generated from the settings classes (`python -m services.core.config_docs`);",
        "a test fails when it is out of date.",
    ]
    for title, module, name in SETTINGS_CLASSES:
        cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
        prefix = cls.model_config.get("env_prefix", "")
        lines += ["", f"## {title}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for field_name, field in cls.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{(prefix + field_name).upper()}` | {_default(field)} | {description} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
