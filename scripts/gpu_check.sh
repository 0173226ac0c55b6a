#!/usr/bin/env bash
# GPU check for a bare CUDA machine with no network (the device tool's H200/H100 machines).
#   1. installs the wheels carried in .whl/ (scripts/gpu_wheels.sh downloads them) into /tmp/site;
#   2. runs the gpu-marked tests (pytest -m gpu);
#   3. runs scripts/bench/gpu.py (GEMM ceiling, indexing img/s fp32/fp16/bf16, FAISS GPU vs CPU
#      search and k-means, ITM k = 128 latency).
# Results land in OUT_DIR (default: $OUT when set, else bench-results/gpu): gpu.json, tests.log,
# summary.json. Where no CUDA device is visible it says so, writes summary.json with
# "skipped": true and exits 0.
#   scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--budget-s SECONDS] [--quick] [--no-tests] [--no-bench]
# The device tool sends the working tree; carry .whl and run:
#   bash scripts/gpu_check.sh --budget-s 420
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-results/gpu}
wheels=.whl
budget=420
quick=()
tests=1
bench=1
usage() { sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; }
# need OPTION VALUE WHAT: refuse an option given without its value (one line, exit 2)
need() { [[ -n $2 && $2 != --* ]] || { echo "gpu_check: $1 needs $3" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) need --out "${2-}" "a folder"; out=$2; shift 2 ;;
    --wheels) need --wheels "${2-}" "a folder"; wheels=$2; shift 2 ;;
    --budget-s)
      need --budget-s "${2-}" "a number of seconds"
      budget=$2
      [[ $budget =~ ^[0-9]+$ && $budget -gt 0 ]] || { echo "gpu_check: --budget-s takes a positive whole number of seconds, not '$budget'" >&2; exit 2; }
      shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --no-tests) tests=0; shift ;;
    --no-bench) bench=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
mkdir -p "$out" || { echo "gpu_check: cannot create '$out'" >&2; exit 2; }
t0=$(date +%s)
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
    || { echo "gpu_check: installing the wheels in $wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
reason=$("$PY" -c 'import sys; sys.path.insert(0, "scripts/bench"); from gpu import cuda_reason; print(cuda_reason() or "")' 2>&1 | tail -1)
if [[ -n $reason ]]; then
  echo "gpu_check: skipped: $reason"
  "$PY" - "$out/summary.json" "$reason" <<'PYEOF'
import json, sys
open(sys.argv[1], "w").write(json.dumps({"skipped": True, "reason": sys.argv[2]}, indent=2))
PYEOF
  exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$out/nvidia-smi.txt"
tests_rc=skipped
if [[ $tests == 1 ]]; then
  timeout $((budget / 3 + 30)) "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_embeddings.py tests/test_itm.py \
    >"$out/tests.log" 2>&1
  tests_rc=$?
  tail -3 "$out/tests.log"
fi
bench_rc=skipped
if [[ $bench == 1 ]]; then
  left=$((budget - ($(date +%s) - t0)))
  ((left > 30)) || left=30
  "$PY" scripts/bench/gpu.py --out "$out/gpu.json" --budget-s "$left" "${quick[@]}"
  bench_rc=$?
fi
"$PY" - "$out/summary.json" "$tests_rc" "$bench_rc" "$(($(date +%s) - t0))" <<'PYEOF'
import json, sys
path, tests, bench, wall = sys.argv[1:]
open(path, "w").write(json.dumps({"skipped": False, "tests_rc": tests, "bench_rc": bench, "wall_s": int(wall)}, indent=2))
PYEOF
echo "gpu_check: tests rc=$tests_rc bench rc=$bench_rc; results in $out"
[[ $tests_rc == 0 || $tests_rc == skipped ]] && [[ $bench_rc == 0 || $bench_rc == skipped ]]
