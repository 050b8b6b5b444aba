#!/usr/bin/env bash
# Assemble .gpu-check/ (ignored by git) for a GPU run: this folder's scripts, the
# MiniLM config and wheels from ../shared/tools/gpu-check, and a protobuf wheel the GPU
# image lacks at the version of the checked-in proto gencode. Run from the checkout:
#   bash bench/gpu/prepare.sh
# then, on the GPU machine:  cd .gpu-check && bash run_gpu.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${GPU_CHECK_SHARED:-$ROOT/../shared/tools/gpu-check}
DEST=$ROOT/.gpu-check
PY=${PY:-$ROOT/.venv/bin/python}
[ -d "$SHARED" ] || { echo "prepare.sh: $SHARED not found (set GPU_CHECK_SHARED)" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST"
cp -r "$SHARED/model" "$SHARED/whl" "$DEST/"
chmod -R u+w "$DEST"
cp "$ROOT/bench/gpu/bench_gpu.py" "$ROOT/bench/gpu/run_gpu.sh" "$DEST/"
# The gencode checks its runtime: protobuf >= the version that generated it.
VERSION=$(sed -n 's/^# Protobuf Python Version: //p' "$ROOT/proto/relevance/v1/common_pb2.py")
"$PY" -m pip download -q "protobuf==$VERSION" --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version 312 -d "$DEST/whl"
grep -qx '/.gpu-check/' "$ROOT/.gitignore" || echo "prepare.sh: note: .gpu-check/ should be ignored"
echo "prepared $DEST: $(ls "$DEST/whl" | wc -l) wheels"
