#!/usr/bin/env bash
# relevance-kd GPU measurements on one H100, in about 5-6 minutes:  cd gpu && bash run_gpu.sh
# Results: $OUT/gpu_results.json (written part by part) and $OUT/gpu_log.txt.
# Each part is its own process under `timeout`; a failed or hung part is recorded and the
# next one runs. The parts share one time budget (GPU_BUDGET_S, default 330 s) so the
# whole command ends in under 6 minutes. GPU_SMOKE=1 shrinks everything for a CPU run.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE" || exit 1
# The project: a copy in ./project if present, else the checkout this folder was copied into.
PROJECT=${PROJECT:-$([ -d "$HERE/project" ] && echo "$HERE/project" || dirname "$HERE")}
export OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_log.txt") 2>&1
START=$(date +%s)
BUDGET=${GPU_BUDGET_S:-330}
CAP_SCALE=${GPU_CAP_SCALE:-1}  # multiplies each part's cap (slow CPU smoke runs)
PY=${PY:-python3}
SITE=${GPU_SITE:-/tmp/site}
export GPU_WORK=${GPU_WORK:-/tmp/gpuwork}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
echo "run_gpu.sh $(date -u +%FT%TZ) budget=${BUDGET}s smoke=${GPU_SMOKE:-0} python=$($PY -V 2>&1)"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader 2>&1 | head -3

# Wheels the image lacks: pydantic, pydantic-core, pydantic-settings, annotated-types,
# typing-inspection, python-dotenv; typing-extensions only where the image's is < 4.16.
if [ "${GPU_SKIP_WHEELS:-0}" != 1 ]; then
  WHEELS=$(ls whl/*.whl | grep -v typing_extensions)
  if ! $PY -c 'import importlib.metadata as m, sys; v = tuple(int(x) for x in m.version("typing_extensions").split(".")[:2]); sys.exit(v < (4, 16))' 2>/dev/null; then
    WHEELS="$WHEELS $(ls whl/typing_extensions-*.whl)"
  fi
  # shellcheck disable=SC2086
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" $WHEELS || echo "WARNING: wheel install failed (rc=$?)"
  export PYTHONPATH=$SITE:$PROJECT:$PROJECT/proto${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PROJECT:$PROJECT/proto${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c 'import relevance.v1.common_pb2, pydantic, pydantic_settings, torch, transformers, sentence_transformers, peft; print("imports ok: pydantic", pydantic.VERSION, "torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "st", sentence_transformers.__version__, "peft", peft.__version__)' \
  || echo "WARNING: import check failed"

run_part() {  # run_part NAME CAP_SECONDS
  local name=$1 cap=$2 now left limit rc
  now=$(date +%s)
  left=$((BUDGET - (now - START)))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: skipped, ${left}s of the budget left"
    $PY bench_gpu.py mark "$name" skipped "budget: ${left}s left"
    return
  fi
  cap=$((cap * CAP_SCALE))
  limit=$((cap < left ? cap : left))
  echo "=== $name: start at +$((now - START))s, timeout ${limit}s"
  PART_TIMEOUT=$limit timeout -k 5 "$limit" $PY bench_gpu.py "$name"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    local status=failed
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; fi
    echo "=== $name: $status (rc=$rc)"
    $PY bench_gpu.py mark "$name" "$status" "rc=$rc after $(( $(date +%s) - now ))s (limit ${limit}s)"
  fi
  echo "=== $name: end at +$(( $(date +%s) - START ))s"
}

# Priority order of the brief: serving (eager, then compiled), student training, teacher.
for spec in ${GPU_PARTS:-setup:90 serve:100 assembly:40 student:110 teacher:120 generative:90 compile:100 profile:120}; do
  run_part "${spec%%:*}" "${spec##*:}"
done

$PY bench_gpu.py finish "$(( $(date +%s) - START ))"
rm -f "$OUT/gpu_results.json.tmp"
echo "run_gpu.sh done in $(( $(date +%s) - START ))s; files: $(ls "$OUT" | tr '\n' ' ')"
sleep 1  # let tee flush the log
