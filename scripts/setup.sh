#!/usr/bin/env bash
# Installs everything the platform needs into .venv (idempotent): the project with
# its dev tools, torch 2.13.0 (CPU), the separate Triton environment, and checkov.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first and pinned exactly: letting pip pick it pulls several GB of CUDA wheels.
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e ".[dev]"
# Triton's Python backend needs numpy<2, so it lives in its own environment.
.venv/bin/python -m services.student_inference.triton_runtime setup
# checkov (the manifests' security linter) pins packages the platform needs newer.
[ -x .checkov-venv/bin/checkov ] || {
  "$python" -m venv .checkov-venv
  .checkov-venv/bin/pip install --quiet "checkov>=3.2,<4"
}
