#!/usr/bin/env bash
# Builds the kernels and their tests with CUDA on a GPU machine, runs the GPU tests and the GPU
# benchmark, and prints a summary table last. Made for the lent GPU node of the device tool
# (CUDA, CMake, ninja and gcc, but none of our Debian packages: OpenBLAS and GoogleTest come
# from the bundle that scripts/make-device-bundle.sh makes, carried as .device-bundle), and
# usable on any GPU box. See docs/gpu.md.
#
#   scripts/device-check.sh                  OpenBLAS + GoogleTest from .device-bundle
#   scripts/device-check.sh --no-bundle      from the system (scripts/setup.sh's packages)
#   options: --build-dir DIR (default build-device)   --archs LIST (default: the GPU's own, else 90)
#            --budget SECONDS (default 450: the whole run, steps shortened to fit)
#            --quick (bench_gpu --quick)              --no-bench
#
# Steps: env (nvidia-smi, nvcc, cmake, compiler), bundle (unpack), configure
# (HYMBA_KERNELS_ONLY=ON, HYMBA_CUDA=ON, Release), build (test_cuda test_core test_kernels
# bench_gpu), test_cuda, test_core, bench_gpu. Each step is timed and has a timeout; a failed
# step is reported and the next one still runs where it can (a failed test does not stop the
# benchmark). Logs and gtest XML go to $OUT when set (the device tool copies it back), else to
# DIR/device-check-out. Exit status 0 only when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=build-device
ARCHS=""
BUDGET=450
USE_BUNDLE=1
BENCH=1
BENCH_ARGS=()
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    --no-bundle) USE_BUNDLE=0 ;;
    --build-dir) BUILD=${2:?--build-dir needs a folder}; shift ;;
    --archs) ARCHS=${2:?--archs needs a list such as 90 or \"80;90\"}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --quick) BENCH_ARGS+=(--quick) ;;
    --no-bench) BENCH=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "device-check: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

BUNDLE_TAR=$ROOT/.device-bundle/hymba-device-bundle.tar.gz
# Unpacked into the build folder: anything left inside .device-bundle would travel with the
# next call of the device tool (the working tree it sends is limited to 64 MiB).
BUNDLE_ROOT=$ROOT/$BUILD/device-bundle
LOGS=${OUT:-$ROOT/$BUILD/device-check-out}
mkdir -p "$LOGS"
# The device tool brings back at most 8 files from $OUT; these are all there will be.
MAIN_LOG=$LOGS/device-check.log
BUILD_LOG=$LOGS/build.log
: >"$MAIN_LOG"
: >"$BUILD_LOG"
exec > >(tee -a "$MAIN_LOG") 2>&1
TEE_PID=$!

START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
remaining() { echo $((BUDGET - $(elapsed))); }
say() { echo "device-check [$(date -u +%H:%M:%S) +$(elapsed)s] $*"; }

# ---- step bookkeeping ----
STEP_NAMES=()
STEP_STATUS=()
STEP_SECS=()
FAILED=()
record() {  # name status seconds
  STEP_NAMES+=("$1")
  STEP_STATUS+=("$2")
  STEP_SECS+=("$3")
  case $2 in ok*) ;; *) FAILED+=("$1") ;; esac
}
# Seconds a step may take: at most $1, leaving $2 seconds for the steps after it. Both are
# written for the default budget of 450 s and scale with another (a slower box gets longer).
step_limit() {
  local max=$(($1 * BUDGET / 450)) reserve=$(($2 * BUDGET / 450)) left
  left=$(($(remaining) - reserve))
  [ "$left" -lt "$max" ] && max=$left
  echo "$max"
}
# run_step NAME MAX RESERVE OUT CMD...: runs the program CMD under timeout (which ends its
# whole process group: cmake's ninja and nvcc too), records status and time. OUT: "-" for the
# console, file:PATH to append to a file only, tee:PATH for both.
run_step() {
  local name=$1 max=$2 reserve=$3 out=$4 limit t0 secs rc=0 status
  shift 4
  limit=$(step_limit "$max" "$reserve")
  if [ "$limit" -lt 5 ]; then
    say "$name: skipped (the ${BUDGET}s budget is spent)"
    record "$name" "skipped: out of time" 0
    return 1
  fi
  say "$name: start (timeout ${limit}s)"
  t0=$(date +%s)
  case $out in
    -) timeout -k 10 "$limit" "$@" || rc=$? ;;
    file:*) timeout -k 10 "$limit" "$@" >>"${out#file:}" 2>&1 || rc=$? ;;
    tee:*) timeout -k 10 "$limit" "$@" 2>&1 | tee -a "${out#tee:}" || rc=$? ;;
  esac
  secs=$(($(date +%s) - t0))
  if [ "$rc" -eq 0 ]; then
    status=ok
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status="TIMEOUT after ${limit}s"
  else
    status="FAILED (exit $rc)"
  fi
  say "$name: $status in ${secs}s"
  record "$name" "$status" "$secs"
  [ "$rc" -eq 0 ]
}

# ---- env ----
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
t0=$(date +%s)
env_ok=1
say "env: the machine and its tools"
echo "--- nvidia-smi"
timeout 30 nvidia-smi || { echo "(nvidia-smi failed)"; env_ok=0; }
echo "--- nvcc"
timeout 30 nvcc --version || { echo "(no nvcc on PATH or in /usr/local/cuda/bin)"; env_ok=0; }
echo "--- tools"
timeout 30 cmake --version | sed -n 1p || { echo "(no cmake)"; env_ok=0; }
if command -v ninja >/dev/null; then echo "ninja $(ninja --version)"; else echo "(no ninja: Unix Makefiles)"; fi
timeout 30 "${CXX:-c++}" --version | sed -n 1p || { echo "(no C++ compiler)"; env_ok=0; }
ldd --version 2>&1 | sed -n 1p || true
echo "cores: $(nproc)"
find /usr/local/cuda/lib64/ -maxdepth 1 -name 'libcublas.so*' 2>/dev/null | head -n 2 || true
if [ "$env_ok" -eq 1 ]; then record env ok $(($(date +%s) - t0)); else record env "FAILED (see above)" $(($(date +%s) - t0)); fi
GPU=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)
if [ -z "$ARCHS" ]; then
  cap=$(echo "$GPU" | awk -F', *' '{print $3}' | tr -d '.')
  ARCHS=${cap:-90}
fi
say "GPU: ${GPU:-none found}; building for sm_$ARCHS"

# ---- bundle ----
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DHYMBA_KERNELS_ONLY=ON -DHYMBA_CUDA=ON "-DHYMBA_CUDA_ARCHS=$ARCHS"
  -DHYMBA_BUILD_TESTS=ON -DHYMBA_BUILD_BENCH=ON
  # Test binaries are listed when ctest runs, not at link time: the build never runs them.
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST)
BUNDLE_ARG=""
if [ "$USE_BUNDLE" -eq 1 ]; then
  if [ ! -f "$BUNDLE_TAR" ]; then
    say "no $BUNDLE_TAR: run scripts/make-device-bundle.sh on the build machine and carry .device-bundle, or pass --no-bundle"
    record bundle "FAILED (missing)" 0
  else
    # Unpacked again only when the archive changed: fresh header times would rebuild everything.
    stamp=$(cksum <"$BUNDLE_TAR")
    if [ "$(cat "$BUNDLE_ROOT/.stamp" 2>/dev/null || true)" != "$stamp" ]; then
      rm -rf "$BUNDLE_ROOT"
      mkdir -p "$BUNDLE_ROOT"
    fi
    if [ -f "$BUNDLE_ROOT/.stamp" ]; then
      say "bundle: already unpacked in $BUNDLE_ROOT"
      record bundle ok 0
    elif run_step bundle 60 380 - tar -C "$BUNDLE_ROOT" -xzf "$BUNDLE_TAR"; then
      echo "$stamp" >"$BUNDLE_ROOT/.stamp"
    fi
    if [ -f "$BUNDLE_ROOT/.stamp" ]; then
      head -n 4 "$BUNDLE_ROOT/MANIFEST.txt"
      BUNDLE_ARG=$BUNDLE_ROOT
      # libopenblas loads libgfortran from the bundle too (an executable's RUNPATH does not
      # reach its libraries' own dependencies).
      export LD_LIBRARY_PATH=$BUNDLE_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      say "to run the binaries by hand: export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    fi
  fi
fi
# Always given, so that a bundle left in the cache by an earlier run is cleared when unused.
CMAKE_ARGS+=("-DHYMBA_DEVICE_BUNDLE=$BUNDLE_ARG")

# ---- configure and build ----
if command -v ninja >/dev/null; then
  CMAKE_ARGS+=(-G Ninja)
  KEEP_GOING=(-k 0)
else
  KEEP_GOING=(-k)
fi
TARGETS=(test_cuda test_core test_kernels bench_gpu)
show_build_errors() {
  echo "--- build.log: errors, then its last lines (full log in $BUILD_LOG):"
  grep -E -A3 'error:|FAILED: |CMake Error|undefined reference' "$BUILD_LOG" | head -n 60 || true
  tail -n 5 "$BUILD_LOG"
}
BUILD_OK=0
if run_step configure 150 300 "file:$BUILD_LOG" cmake -S "$ROOT" -B "$ROOT/$BUILD" "${CMAKE_ARGS[@]}"; then
  # Keeps going past a failing target, so a broken test file still leaves the other binaries.
  if run_step build 330 150 "file:$BUILD_LOG" cmake --build "$ROOT/$BUILD" -j "$(nproc)" \
    --target "${TARGETS[@]}" -- "${KEEP_GOING[@]}"; then
    BUILD_OK=1
  else
    show_build_errors
  fi
else
  show_build_errors
fi
# After a failed build, a binary left by an earlier run in the same folder may be stale: run
# only those that are up to date (ninja can tell; with make, trust none).
usable() {  # target binary
  [ -x "$2" ] || return 1
  [ "$BUILD_OK" -eq 1 ] && return 0
  command -v ninja >/dev/null && [ -f "$ROOT/$BUILD/build.ninja" ] &&
    ninja -C "$ROOT/$BUILD" -n "$1" 2>/dev/null | grep -q 'no work to do'
}

# ---- tests ----
declare -A T_PASS T_FAIL T_SKIP T_STATUS
run_tests() {  # binary max reserve
  local name=$1 bin=$ROOT/$BUILD/tests/$1 log=$LOGS/$1.log
  if ! usable "$name" "$bin"; then
    say "$name: not built"
    record "$name" "not built" 0
    T_STATUS[$name]="not built"
    return 0
  fi
  local ok=1
  : >"$log"
  run_step "$name" "$2" "$3" "file:$log" "$bin" --gtest_color=no "--gtest_output=xml:$LOGS/$name.xml" || ok=0
  # Per-test result lines carry a duration; the summary lines at the end do not.
  T_PASS[$name]=$(grep -c '^\[       OK \] .*([0-9]* ms)$' "$log" || true)
  T_FAIL[$name]=$(grep -c '^\[  FAILED  \] .*([0-9]* ms)$' "$log" || true)
  T_SKIP[$name]=$(grep -c '^\[  SKIPPED \] .*([0-9]* ms)$' "$log" || true)
  T_STATUS[$name]=${STEP_STATUS[-1]}
  # The CUDA tests skip only when they see no device: on a GPU machine that is a problem.
  if [ -n "$GPU" ] && [ "${T_SKIP[$name]}" -gt 0 ]; then
    T_STATUS[$name]="${T_STATUS[$name]}, but ${T_SKIP[$name]} skipped on a GPU machine"
  fi
  if [ "$ok" -eq 0 ]; then
    echo "--- $name: failures (full log in $log):"
    grep -E '^\[  FAILED  \] .*\([0-9]+ ms\)$|Failure$|^(Expected|Value of|Which is|  Actual)' "$log" | head -n 40 || true
    # A crash leaves a test started and never finished: name it.
    local last
    last=$(grep '^\[ RUN      \]' "$log" | tail -n 1 | sed 's/^\[ RUN      \] //' || true)
    if [ -n "$last" ] && ! grep -q -F "] $last (" "$log"; then echo "$name: crashed or hung in $last"; fi
    tail -n 5 "$log"
  fi
}
run_tests test_cuda 150 60
run_tests test_core 100 45

# ---- benchmark ----
BENCH_LOG=$LOGS/bench_gpu.log
: >"$BENCH_LOG"
if [ "$BENCH" -eq 1 ]; then
  if usable bench_gpu "$ROOT/$BUILD/bench/bench_gpu"; then
    # bench_gpu skips the cases that would start past its own budget, leaving time to report.
    budget=$(($(remaining) - 40))
    [ "$budget" -lt 10 ] && budget=10
    run_step bench_gpu 300 10 "tee:$BENCH_LOG" "$ROOT/$BUILD/bench/bench_gpu" --max-seconds "$budget" \
      "${BENCH_ARGS[@]}" || true
  else
    say "bench_gpu: not built"
    record bench_gpu "not built" 0
  fi
fi

# ---- summary, printed last ----
summary() {
  echo
  echo "==================== device check summary ===================="
  echo "machine: ${GPU:-no GPU found}; $(nproc) cores; $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc')"
  echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git') ; $(date -u +%Y-%m-%dT%H:%M:%SZ); total $(elapsed)s of ${BUDGET}s"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  local i
  for i in "${!STEP_NAMES[@]}"; do
    echo "| ${STEP_NAMES[$i]} | ${STEP_STATUS[$i]} | ${STEP_SECS[$i]} |"
  done
  echo
  echo "| tests | passed | failed | skipped | status |"
  echo "|---|---|---|---|---|"
  local t
  for t in test_cuda test_core; do
    echo "| $t | ${T_PASS[$t]:--} | ${T_FAIL[$t]:--} | ${T_SKIP[$t]:--} | ${T_STATUS[$t]:-not run} |"
  done
  for t in test_cuda test_core; do
    if [ "${T_FAIL[$t]:-0}" -gt 0 ]; then
      echo "$t failures (first 15; messages in $LOGS/$t.log):"
      grep '^\[  FAILED  \] .*([0-9]* ms)$' "$LOGS/$t.log" | head -n 15 || true
    fi
  done
  if [ -s "$BENCH_LOG" ]; then
    echo
    echo "bench_gpu (each baseline measured in the same run; ratio = achieved / baseline):"
    grep -E '^(#|\|)' "$BENCH_LOG" || tail -n 5 "$BENCH_LOG"
  fi
  echo
  if [ ${#FAILED[@]} -eq 0 ]; then
    echo "device-check: all steps passed"
  else
    echo "device-check: FAILED: ${FAILED[*]}"
  fi
}
summary | tee "$LOGS/summary.txt"

# Let tee finish writing the log before the exit status goes out.
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null || true
[ ${#FAILED[@]} -eq 0 ]
