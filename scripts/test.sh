#!/usr/bin/env bash
# The test command: installs what is missing, lints, then runs the whole suite.
# Arguments go to pytest (e.g. `-k bus`) and then run as one pytest process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RELKD_CHECKOV="${RELKD_CHECKOV:-$PWD/.checkov-venv/bin/checkov}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ $# -gt 0 ]; then
  exec .venv/bin/pytest -q "$@"
fi
# kserve and tritonclient.grpc register the same protobuf symbols and cannot share a
# process, so the KServe rollout tests get a pytest process of their own.
.venv/bin/pytest -q --ignore=tests/integration/rollout
exec .venv/bin/pytest -q tests/integration/rollout
