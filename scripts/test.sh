#!/usr/bin/env bash
# The test command: installs what is missing, lints, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RELKD_CHECKOV="${RELKD_CHECKOV:-$PWD/.checkov-venv/bin/checkov}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest -q "$@"
