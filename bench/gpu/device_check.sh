#!/usr/bin/env bash
# One prepared GPU check, for a lent GPU machine without network (Python 3.12,
# torch, cupy, pybind11, scikit-build-core, cmake, ninja, nvcc 13, pytest,
# pytest-benchmark preinstalled).  Budget: under 6 minutes.
#   build (sm_90 only, to save time) -> CUDA tests -> compute-sanitizer
#   (memcheck, racecheck, initcheck, synccheck) -> GPU benchmarks -> table.
# Writes JSON and logs under $OUT (default ./out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status() { printf '%-28s %s\n' "$1" "$2" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
GPU=$(head -1 "$OUT/gpu.txt")

t0=$(date +%s)
THYROFAST_CUDA=ON THYROFAST_CUDA_ARCHITECTURES="${THYROFAST_CUDA_ARCHITECTURES:-90}" \
  python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1
build_rc=$?
status build "rc=$build_rc ($(( $(date +%s) - t0 )) s)"
[ $build_rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
cd /tmp  # import the installed package, not the source tree
REPO="$OLDPWD"

python3 -c "import thyrofast, json; print(json.dumps(thyrofast.build_info()))" | tee "$OUT/build_info.json"

t0=$(date +%s)
python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_preprocess_cuda.py" -rs \
  --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1
tests_rc=$?
status "cuda tests" "rc=$tests_rc $(tail -1 "$OUT/cuda_tests.log") ($(( $(date +%s) - t0 )) s)"

# compute-sanitizer over a reduced matrix (each tool multiplies run time)
san_rc=0
for tool in memcheck racecheck initcheck synccheck; do
  t0=$(date +%s)
  timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
    python3 -m pytest -q -p no:cacheprovider -x "$REPO/tests/test_preprocess_cuda.py" \
    -k "poisoned or non_default or roi_and_bgr or (test_cuda_equals_cpu and 31x45)" > "$OUT/sanitizer_$tool.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || san_rc=$rc
  errs=$(grep -Eo "ERROR SUMMARY: [0-9]+ error" "$OUT/sanitizer_$tool.log" | tail -1)
  status "sanitizer $tool" "rc=$rc ${errs:-no summary} ($(( $(date +%s) - t0 )) s)"
done

t0=$(date +%s)
python3 -m thyrofast.cli bench preprocess --device cuda --rounds 50 --json "$OUT/bench_gpu.json" \
  > "$OUT/bench_gpu.log" 2>&1
bench_rc=$?
status "gpu bench" "rc=$bench_rc ($(( $(date +%s) - t0 )) s)"

echo
echo "== thyrofast device check on: $GPU =="
cat "$OUT/summary.txt"
echo
cat "$OUT/bench_gpu.log"
[ $build_rc -eq 0 ] && [ $tests_rc -eq 0 ] && [ $san_rc -eq 0 ] && [ $bench_rc -eq 0 ]
