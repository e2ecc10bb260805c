#!/usr/bin/env bash
# One prepared GPU check, for a lent GPU machine without network (Python 3.12,
# torch, cupy, pybind11, scikit-build-core, cmake, ninja, nvcc 13, pytest,
# onnx, onnxruntime, opencv preinstalled; pydicom is not: carry it as a wheel
# in .whl/, see the device README).  Budget: under 6 minutes.
#   build (sm_90 only, to save time)
#   -> CUDA tests (kernel == CPU spec; torch CUDA engine; classifier end to end)
#      beside compute-sanitizer memcheck/racecheck/initcheck/synccheck over
#      bench/gpu/sanitize_case.py (every kernel path once, small frames)
#   -> GPU benchmarks (preprocess batch 64 / batch 1; end to end batch 1)
#   -> a short table, last.
# Writes at most 7 files under $OUT (default ./out): summary.txt, build_info.json,
# bench_preprocess.json, kernel_timing.txt, bench_e2e.json, logs.tar.gz, and nothing deeper.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
LOG="$(mktemp -d)"
export PYTHONUNBUFFERED=1
status() { printf '%-22s %s\n' "$1" "$2" >> "$LOG/summary.txt"; printf '%-22s %s\n' "$1" "$2"; }
: > "$LOG/summary.txt"
finish() {
  cp "$LOG/summary.txt" "$OUT/summary.txt"
  tar -C "$LOG" -czf "$OUT/logs.tar.gz" . 2>/dev/null
}
trap finish EXIT

if ls .whl/*.whl > /dev/null 2>&1; then  # wheels the machine lacks (pydicom)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

env | grep -iE "^(LDFLAGS|CXXFLAGS|CFLAGS|CXX|CC|CUDAHOSTCXX)=" > "$LOG/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$LOG/gpu.txt" 2>&1
GPU=$(head -1 "$LOG/gpu.txt")
status gpu "$GPU"
status cuda "$(nvcc --version | grep -o 'release [0-9.]*')"

t0=$(date +%s)
THYROFAST_CUDA=ON THYROFAST_CUDA_ARCHITECTURES="${THYROFAST_CUDA_ARCHITECTURES:-90}" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python3 -m pip install --no-build-isolation --no-deps -q . > "$LOG/build.log" 2>&1
build_rc=$?
status build "rc=$build_rc ($(( $(date +%s) - t0 )) s)"
[ $build_rc -eq 0 ] || { tail -40 "$LOG/build.log"; exit 1; }
cd /tmp  # import the installed package, not the source tree

python3 -c "import thyrofast, json; print(json.dumps(thyrofast.build_info()))" > "$OUT/build_info.json" 2>&1
cat "$OUT/build_info.json"
core_so=$(python3 -c "import glob, os, thyrofast; print(glob.glob(os.path.dirname(thyrofast.__file__) + '/_core*.so')[0])")
status "_core exports" "$(nm -D --defined-only "$core_so" | wc -l) symbols; libstdc++ $(ldd "$core_so" | grep -q stdc && echo shared || echo static)"
status torch "$(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>&1 | tail -1)"

# compute-sanitizer: the four tools side by side (each process is small), beside the tests
san_pids=()
SANITIZERS="${THYROFAST_SANITIZERS:-memcheck racecheck initcheck synccheck}"  # racecheck alone takes ~2 min
for tool in $SANITIZERS; do
  ( t0=$(date +%s)
    limit=""  # THYROFAST_RACECHECK_CASES=N: racecheck on the first N cases only (it is the slow one)
    [ "$tool" = racecheck ] && limit="${THYROFAST_RACECHECK_CASES:-}"
    SANITIZE_MAX_CASES="$limit" timeout "${THYROFAST_SANITIZER_TIMEOUT:-220}" compute-sanitizer --tool "$tool" \
      --error-exitcode 99 --print-limit 20 \
      python3 "$REPO/bench/gpu/sanitize_case.py" > "$LOG/sanitizer_$tool.log" 2>&1
    echo "$? $(( $(date +%s) - t0 ))" > "$LOG/sanitizer_$tool.rc" ) &
  san_pids+=($!)
done

t0=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs "$REPO/tests/preprocessing/test_preprocess_cuda.py" \
  "$REPO/tests/engines/test_engines_cuda.py" --junitxml="$LOG/cuda_tests.xml" > "$LOG/cuda_tests.log" 2>&1
tests_rc=$?
status "cuda tests" "rc=$tests_rc $(tail -1 "$LOG/cuda_tests.log") ($(( $(date +%s) - t0 )) s)"
skips=$(grep -c "^SKIPPED" "$LOG/cuda_tests.log")
[ "$skips" -eq 0 ] || { status "cuda tests" "$skips SKIPPED (a skip is not a pass)"; tests_rc=1; }

wait "${san_pids[@]}"
san_rc=0
for tool in $SANITIZERS; do
  read -r rc secs < "$LOG/sanitizer_$tool.rc"
  [ "$rc" -eq 0 ] || san_rc=$rc
  errs=$(grep -Eo "ERROR SUMMARY: [0-9]+ error" "$LOG/sanitizer_$tool.log" | tail -1)
  cases=$(grep -Eo "[0-9]+ cases, [0-9]+ mismatches" "$LOG/sanitizer_$tool.log" | tail -1)
  status "sanitizer $tool" "rc=$rc ${errs:-no summary}; ${cases:-no result} ($secs s)"
done

t0=$(date +%s)
timeout 120 python3 -m thyrofast.cli bench preprocess --device cuda --rounds 50 --json "$OUT/bench_preprocess.json" \
  > "$LOG/bench_preprocess.log" 2>&1
bench_rc=$?
status "bench preprocess" "rc=$bench_rc ($(( $(date +%s) - t0 )) s)"
t0=$(date +%s)
timeout 60 python3 "$REPO/bench/gpu/kernel_timing.py" > "$LOG/kernel_timing.log" 2>&1
status "kernel timing" "rc=$? ($(( $(date +%s) - t0 )) s)"
cp "$LOG/kernel_timing.log" "$OUT/kernel_timing.txt"
t0=$(date +%s)
timeout 120 python3 -m thyrofast.cli bench e2e --device cuda --rounds 200 --threads 8 --json "$OUT/bench_e2e.json" \
  > "$LOG/bench_e2e.log" 2>&1
e2e_rc=$?
status "bench e2e" "rc=$e2e_rc ($(( $(date +%s) - t0 )) s)"

echo
tail -25 "$LOG/cuda_tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -8
grep -h -B2 -A8 "ERROR SUMMARY: [1-9]\|MISMATCH\|Error" "$LOG"/sanitizer_*.log | head -40
echo
cat "$LOG/bench_preprocess.log" "$LOG/kernel_timing.log" "$LOG/bench_e2e.log"
echo
echo "== thyrofast device check on: $GPU =="
cat "$LOG/summary.txt"
[ $build_rc -eq 0 ] && [ $tests_rc -eq 0 ] && [ $san_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $e2e_rc -eq 0 ]
