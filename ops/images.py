"""The container images: which Dockerfile builds each, which dependency extra of
pyproject.toml it installs, and which code it runs.

This table is the one place an image's role is written down. The tests check it both
ways: every Dockerfile is listed here and installs exactly its extra and starts its
entry point (tests/k8s/test_dockerfiles.py), and everything each image's code imports,
inside functions too, is installed by its extra (tests/unit/packaging/test_extras.py).
``bench/bench_image_sizes.py`` measures each image's installed size from it.

A new image: add its Dockerfile and a row here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Image:
    name: str
    # Relative to the repository root.
    dockerfile: str
    # The pyproject.toml extra the image installs (`pip install ".[extra]"`); None
    # installs only the base dependencies.
    extra: str | None
    # Packages (or modules) the image runs: each of their modules and everything those
    # import, at module level or inside a function, must be installed by the extra.
    sources: tuple[str, ...]
    # The module the image's ENTRYPOINT starts; what it imports at module level must be
    # installed too (its functions serve other images).
    entrypoint: str
    # Distributions the image must not contain, not even as a dependency of a dependency.
    never: tuple[str, ...] = ()


# What every service image runs: `python -m services.serve NAME` imports only the service.
SERVE = "services.serve"

IMAGES: tuple[Image, ...] = (
    Image(
        "candidate-generation",
        "services/candidate_generation/Dockerfile",
        "candidates",
        ("services.candidate_generation",),
        SERVE,
    ),
    Image(
        "teacher-labeling",
        "services/teacher_labeling/Dockerfile",
        "labeling",
        ("services.teacher_labeling",),
        SERVE,
    ),
    Image(
        "student-inference",
        "services/student_inference/Dockerfile",
        "inference",
        ("services.student_inference",),
        SERVE,
        # The CPU front of Triton: tokenizes and calls Triton; the model is Triton's.
        never=("torch", "transformers", "kserve", "faiss-cpu", "peft", "matplotlib"),
    ),
    Image(
        "label-store",
        "services/label_store/Dockerfile",
        # Kafka, gRPC and Parquet: the base dependencies are all it needs.
        None,
        ("services.label_store",),
        SERVE,
        never=("torch", "transformers", "kserve", "tritonclient", "faiss-cpu", "matplotlib"),
    ),
    Image(
        "controller",
        "services/controller/Dockerfile",
        "controller",
        # Rounds: gate scoring and export (training), Jobs and KServe rollouts (ops.loop).
        ("services.controller", "ops.loop"),
        "ops.cli",
    ),
    Image(
        "disagreement-monitor",
        "services/disagreement_monitor/Dockerfile",
        # Kafka, gRPC to the teacher, the label store's Parquet snapshots: base only.
        None,
        ("services.disagreement_monitor",),
        SERVE,
        never=("torch", "transformers", "kserve", "tritonclient", "faiss-cpu", "matplotlib"),
    ),
    Image(
        "trainer",
        "training/Dockerfile",
        "train",
        ("training",),
        # Jobs run `relkd teacher train`, `relkd student train`, ... (ops.cli).
        "ops.cli",
        never=("kserve",),
    ),
)

# Files copied into a Triton model repository and run by Triton's Python backend, in
# Triton's own environment (docs/triton.md): no image imports them.
RUN_BY_TRITON = ("training.export.triton_models",)


def declared_requirements(extra: str | None) -> list[Requirement]:
    """pyproject.toml's requirements of an install with ``extra`` (None: the base only):
    the base dependencies and the extra's, with the project's own extras that it names
    resolved."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    own_name = canonicalize_name(project["name"])
    found = [Requirement(text) for text in project["dependencies"]]
    pending, seen = [extra] if extra else [], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in project["optional-dependencies"][name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == own_name:
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found
