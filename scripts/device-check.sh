#!/usr/bin/env bash
# Builds the whole framework with CUDA on a GPU machine, runs the GPU tests (kernels,
# training, NCCL), a short bf16 training run and the GPU benchmark, and prints a summary table
# last. Made for the lent GPU node of the device tool (CUDA, CMake, ninja and gcc, but none of
# our Debian packages: they come from the bundle that scripts/make-device-bundle.sh makes,
# carried as .device-bundle), and usable on any GPU box. See docs/gpu.md.
#
#   scripts/device-check.sh                  the whole tree, libraries from .device-bundle, no MPI
#   scripts/device-check.sh --kernels-only   only core/kernels/autograd (HYMBA_KERNELS_ONLY)
#   scripts/device-check.sh --no-bundle      libraries from the system (scripts/setup.sh's packages)
#   options: --build-dir DIR (default build-device)   --archs LIST (default: the GPU's own, else 90)
#            --budget SECONDS (default 450: the whole run, steps shortened to fit)
#            --quick (bench_gpu --quick)   --no-bench   --no-train
#            --bench-filter S (bench_gpu --filter S: only the cases whose name contains S)
#            --scan-baseline FILE (an earlier kernels/cuda/selective_scan_blocked.cu, inside the
#              tree or a carried folder such as .device-bundle: bench_gpu then times it beside
#              the current scan in the same run, its "A/B" cases; see docs/gpu.md)
#            --sanitize FILTER (after test_cuda: compute-sanitizer memcheck and racecheck on the
#              test_cuda cases FILTER selects, e.g. 'CudaAttention.MmaShapesBF16:CudaSelectiveScan.*')
#            --profile (after bench_gpu: Nsight Compute's speed-of-light, occupancy, memory and
#              warp-state sections of the fast scan and attention kernels at Hymba-1.5B sizes)
#            --source-profile (after that: per-SASS-instruction samples and stall reasons of the
#              f32 blocked scan forward and backward, and of two other forward shapes, into
#              scan-source.txt; scripts/sass-profile.py summarises it)
#
# Steps: env (nvidia-smi, nvcc, cmake, compiler), nccl (nccl.h and libnccl in the CUDA
# toolkit, else NCCL_ROOT, else the pip wheel nvidia-nccl-cu13), bundle (unpack), configure
# (HYMBA_CUDA=ON, Release, HYMBA_WITH_MPI=OFF with the bundle), build (only what the steps
# run), libs (ldd: every library resolves), test_cuda, test_cuda_train (CUDA training: fp32
# gradients, the bf16-vs-fp32 50-step loss curve, the trainer on the device, NCCL on 1 rank),
# test_cuda_train_reference (the same on the first, simple scan and attention kernels:
# kernels/cuda_impl.h),
# test_core, test_kernels, train_gpu (`hymba train` of the tiny Hymba in bf16 on the GPU on
# MQAR data made on the spot: tokens/s and MFU), bench_train_gpu (`hymba bench train` of
# Hymba-125M: tokens/s, MFU, the same-run GEMM rate), bench_gpu. Each step is timed and has a
# timeout; a failed step is reported and the next one still runs where it can. Logs go to
# $OUT when set (the device tool copies back at most 8 files: device-check.log, summary.txt,
# build.log, tests.log, train_gpu.log, bench_gpu.log), else to DIR/device-check-out; per-test
# logs and gtest XML stay in DIR/device-check-logs. Exit status 0 only when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=build-device
ARCHS=""
BUDGET=450
USE_BUNDLE=1
KERNELS_ONLY=0
BENCH=1
TRAIN=1
SANITIZE=""
PROFILE=0
SOURCE_PROFILE=0
BENCH_ARGS=()
SCAN_BASELINE=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    --no-bundle) USE_BUNDLE=0 ;;
    --kernels-only) KERNELS_ONLY=1 ;;
    --build-dir) BUILD=${2:?--build-dir needs a folder}; shift ;;
    --archs) ARCHS=${2:?--archs needs a list such as 90 or \"80;90\"}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --quick) BENCH_ARGS+=(--quick) ;;
    --bench-filter) BENCH_ARGS+=(--filter "${2:?--bench-filter needs a substring of case names}"); shift ;;
    --no-bench) BENCH=0 ;;
    --scan-baseline) SCAN_BASELINE=${2:?--scan-baseline needs an earlier selective_scan_blocked.cu}; shift ;;
    --no-train) TRAIN=0 ;;
    --sanitize) SANITIZE=${2:?--sanitize needs a gtest filter of test_cuda cases}; shift ;;
    --profile) PROFILE=1 ;;
    --source-profile) SOURCE_PROFILE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "device-check: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$SCAN_BASELINE" ]; then
  case $SCAN_BASELINE in /*) ;; *) SCAN_BASELINE=$ROOT/$SCAN_BASELINE ;; esac
  if [ ! -f "$SCAN_BASELINE" ]; then
    echo "device-check: --scan-baseline: no file $SCAN_BASELINE (expected an earlier kernels/cuda/selective_scan_blocked.cu)" >&2
    exit 2
  fi
fi

BUNDLE_TAR=$ROOT/.device-bundle/hymba-device-bundle.tar.gz
# Unpacked into the build folder: anything left inside .device-bundle would travel with the
# next call of the device tool (the working tree it sends is limited to 64 MiB).
BUNDLE_ROOT=$ROOT/$BUILD/device-bundle
OUTDIR=${OUT:-$ROOT/$BUILD/device-check-out}
LOGS=$ROOT/$BUILD/device-check-logs
mkdir -p "$OUTDIR" "$LOGS"
MAIN_LOG=$OUTDIR/device-check.log
BUILD_LOG=$OUTDIR/build.log
TESTS_LOG=$OUTDIR/tests.log
TRAIN_LOG=$OUTDIR/train_gpu.log
BENCH_LOG=$OUTDIR/bench_gpu.log
PROFILE_LOG=$OUTDIR/profile.log
SOURCE_LOG=$OUTDIR/scan-source.txt
for f in "$MAIN_LOG" "$BUILD_LOG" "$TESTS_LOG" "$TRAIN_LOG" "$BENCH_LOG" "$PROFILE_LOG" "$SOURCE_LOG"; do : >"$f"; done
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
if [ "$env_ok" -eq 1 ]; then record env ok $(($(date +%s) - t0)); else record env "FAILED (see above)" $(($(date +%s) - t0)); fi
GPU=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)
if [ -z "$ARCHS" ]; then
  cap=$(echo "$GPU" | awk -F', *' '{print $3}' | tr -d '.')
  ARCHS=${cap:-90}
fi
say "GPU: ${GPU:-none found}; building for sm_$ARCHS"

# ---- nccl: the whole tree needs it (train/nccl_communicator_cuda.cpp) ----
# Looked for in the CUDA toolkit (cmake/HymbaDeps.cmake does too), then $NCCL_ROOT, then the
# pip wheel nvidia-nccl-cu13 of the node's Python (include/nccl.h, lib/libnccl.so.2 only).
NCCL_DIR=""
has_nccl() {  # DIR: include/nccl.h and a libnccl.so* in lib/, lib64/ or targets/*/lib
  [ -f "$1/include/nccl.h" ] && compgen -G "$1/lib*/libnccl.so*" >/dev/null
}
if [ "$KERNELS_ONLY" -eq 0 ]; then
  t0=$(date +%s)
  cuda_home=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")
  where=""
  if has_nccl "$cuda_home" || has_nccl "$cuda_home/targets/$(uname -m)-linux"; then
    where="the CUDA toolkit ($cuda_home)"
  elif [ -n "${NCCL_ROOT:-}" ] && has_nccl "$NCCL_ROOT"; then
    NCCL_DIR=$NCCL_ROOT
    where="NCCL_ROOT=$NCCL_ROOT"
  else
    for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
      d=$("$py" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
      if [ -n "$d" ] && has_nccl "$d"; then NCCL_DIR=$d; break; fi
    done
    if [ -z "$NCCL_DIR" ]; then
      for d in /usr/local/lib/python3*/dist-packages/nvidia/nccl /usr/lib/python3*/dist-packages/nvidia/nccl \
        /usr/local/lib/python3*/site-packages/nvidia/nccl /opt/*/lib/python3*/site-packages/nvidia/nccl \
        "$HOME"/.local/lib/python3*/site-packages/nvidia/nccl; do
        if has_nccl "$d"; then NCCL_DIR=$d; break; fi
      done
    fi
    [ -n "$NCCL_DIR" ] && where="the pip wheel ($NCCL_DIR)"
  fi
  if [ -n "$where" ]; then
    say "nccl: from $where"
    record nccl ok $(($(date +%s) - t0))
  else
    say "nccl: not in the CUDA toolkit, NCCL_ROOT or a pip wheel (pip install nvidia-nccl-cu13); building kernels only"
    record nccl "FAILED (not found: kernels only)" $(($(date +%s) - t0))
    KERNELS_ONLY=1
  fi
fi

# ---- bundle ----
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DHYMBA_CUDA=ON "-DHYMBA_CUDA_ARCHS=$ARCHS"
  -DHYMBA_BUILD_TESTS=ON -DHYMBA_BUILD_BENCH=ON
  # Test binaries are listed when ctest runs, not at link time: the build never runs them.
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST)
if [ "$KERNELS_ONLY" -eq 1 ]; then
  CMAKE_ARGS+=(-DHYMBA_KERNELS_ONLY=ON)
else
  CMAKE_ARGS+=(-DHYMBA_KERNELS_ONLY=OFF "-DNCCL_ROOT=$NCCL_DIR")
  # The bundle carries no MPI: one process, NCCL on one GPU. From the system: MPI if found.
  if [ "$USE_BUNDLE" -eq 1 ]; then CMAKE_ARGS+=(-DHYMBA_WITH_MPI=OFF); else CMAKE_ARGS+=(-DHYMBA_WITH_MPI=AUTO); fi
fi
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
      if [ "$KERNELS_ONLY" -eq 0 ] && [ ! -f "$BUNDLE_ROOT/lib/hymba-bundle.cmake" ]; then
        say "bundle: a kernels-only bundle (remake it with scripts/make-device-bundle.sh); building kernels only"
        record bundle "FAILED (kernels-only bundle)" 0
        KERNELS_ONLY=1
        CMAKE_ARGS+=(-DHYMBA_KERNELS_ONLY=ON)
      fi
    fi
  fi
fi
# Always given, so that a bundle left in the cache by an earlier run is cleared when unused.
CMAKE_ARGS+=("-DHYMBA_DEVICE_BUNDLE=$BUNDLE_ARG")
# The same for the scan baseline (bench/CMakeLists.txt).
CMAKE_ARGS+=("-DHYMBA_SCAN_BASELINE=$SCAN_BASELINE")

# ---- configure and build ----
if command -v ninja >/dev/null; then
  CMAKE_ARGS+=(-G Ninja)
  KEEP_GOING=(-k 0)
else
  KEEP_GOING=(-k)
fi
# Only what the steps below run: the CPU benchmarks and test_layers/test_data/test_autograd
# are left out to keep the build near two minutes on 16 cores.
if [ "$KERNELS_ONLY" -eq 1 ]; then
  TARGETS=(test_cuda test_core test_kernels bench_gpu)
  TEST_BINS=(test_cuda test_core test_kernels)
else
  TARGETS=(hymba test_cuda test_cuda_train test_core test_kernels bench_gpu)
  TEST_BINS=(test_cuda test_cuda_train test_core test_kernels)
fi
show_build_errors() {
  echo "--- build.log: errors, then its last lines (full log in $BUILD_LOG):"
  grep -E -A3 'error:|FAILED: |CMake Error|undefined reference' "$BUILD_LOG" | head -n 60 || true
  tail -n 5 "$BUILD_LOG"
}
BUILD_OK=0
if run_step configure 90 330 "file:$BUILD_LOG" cmake -S "$ROOT" -B "$ROOT/$BUILD" "${CMAKE_ARGS[@]}"; then
  grep -E '^-- (hymba |NCCL|MPI|OpenBLAS)' "$BUILD_LOG" || true
  # Keeps going past a failing target, so a broken test file still leaves the other binaries.
  if run_step build 270 160 "file:$BUILD_LOG" cmake --build "$ROOT/$BUILD" -j "$(nproc)" \
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

# ---- libs: every shared library of the binaries resolves (bundle RUNPATHs, NCCL) ----
check_libs() {
  local bin missing=0
  for bin in "$ROOT/$BUILD/tests/test_cuda" "$ROOT/$BUILD/tests/test_cuda_train" "$ROOT/$BUILD/bin/hymba"; do
    [ -x "$bin" ] || continue
    echo "--- ldd $(basename "$bin") (libraries outside /lib, /usr/lib):"
    ldd "$bin" | grep -vE '=> /(usr/)?lib(64|/x86_64-linux-gnu|/aarch64-linux-gnu)?/|linux-vdso|ld-linux' || true
    if ldd "$bin" | grep -q 'not found'; then missing=1; fi
  done
  [ "$missing" -eq 0 ]
}
# run_step runs programs (under timeout): the shell functions go through bash -c.
export ROOT BUILD
export -f check_libs
if [ -x "$ROOT/$BUILD/tests/test_cuda" ] || [ -x "$ROOT/$BUILD/bin/hymba" ]; then
  run_step libs 20 200 - bash -c check_libs || true
fi

# ---- tests ----
declare -A T_PASS T_FAIL T_SKIP T_STATUS
run_tests() {  # binary max reserve [label VAR=value...]: a label runs the binary again with that environment
  local bin=$ROOT/$BUILD/tests/$1 max=$2 reserve=$3 name=${4:-$1}
  local log=$LOGS/$name.log
  local -a envs=()
  if [ $# -gt 4 ]; then envs=("${@:5}"); fi
  if ! usable "$name" "$bin"; then
    say "$name: not built"
    record "$name" "not built" 0
    T_STATUS[$name]="not built"
    return 0
  fi
  local ok=1
  : >"$log"
  run_step "$name" "$max" "$reserve" "file:$log" env "${envs[@]}" "$bin" --gtest_color=no \
    "--gtest_output=xml:$LOGS/$name.xml" || ok=0
  { echo "==================== $name ===================="; cat "$log"; } >>"$TESTS_LOG"
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
    echo "--- $name: failures (full log in $TESTS_LOG):"
    grep -E '^\[  FAILED  \] .*\([0-9]+ ms\)$|Failure$|^(Expected|Value of|Which is|  Actual)' "$log" | head -n 40 || true
    # A crash leaves a test started and never finished: name it.
    local last
    last=$(grep '^\[ RUN      \]' "$log" | tail -n 1 | sed 's/^\[ RUN      \] //' || true)
    if [ -n "$last" ] && ! grep -q -F "] $last (" "$log"; then echo "$name: crashed or hung in $last"; fi
    tail -n 5 "$log"
  fi
}
# GPU tests first (the point of the run), then the CPU ones; each max/reserve leaves room for
# the training run and the benchmark.
run_tests test_cuda 90 190
# compute-sanitizer on a few cases (it runs 10-100x slower): out-of-bounds and uninitialized
# accesses (memcheck), shared-memory races (racecheck). Logged in tests.log.
if [ -n "$SANITIZE" ]; then
  if command -v compute-sanitizer >/dev/null && usable test_cuda "$ROOT/$BUILD/tests/test_cuda"; then
    for tool in memcheck racecheck; do
      run_step "sanitize_$tool" 120 250 "file:$TESTS_LOG" compute-sanitizer --tool "$tool" --error-exitcode 1 \
        "$ROOT/$BUILD/tests/test_cuda" --gtest_color=no "--gtest_filter=$SANITIZE" || true
    done
  else
    say "sanitize: compute-sanitizer or test_cuda missing"
    record sanitize "not run" 0
  fi
fi
if [ "$KERNELS_ONLY" -eq 0 ]; then
  run_tests test_cuda_train 90 150
  # The same training tests on the first, simple scan and attention kernels (kernels/cuda_impl.h),
  # which stay selectable as the reference for the fast defaults: the bf16 loss curve end to end.
  run_tests test_cuda_train 90 130 test_cuda_train_reference HYMBA_CUDA_SCAN=sequential HYMBA_CUDA_ATTENTION=wmma
  TEST_BINS+=(test_cuda_train_reference)
fi
run_tests test_core 40 130
run_tests test_kernels 60 110

# ---- train_gpu: the CLI trains the tiny Hymba in bf16 on the GPU ----
# MQAR data (hymba prepare mqar: no tokenizer, no corpus) at the tiny recipe's vocabulary and
# sequence length; 40 steps of 16 x 256 tokens, progress every 10 with tok/s and MFU.
train_gpu() {
  local hymba=$ROOT/$BUILD/bin/hymba data=$ROOT/$BUILD/device-check-mqar run=$ROOT/$BUILD/device-check-run
  rm -rf "$run"
  if [ ! -f "$data/.done" ]; then
    "$hymba" prepare mqar --vocab 4096 --seq 256 --pairs 16 --count 2000 --val-count 64 --seed 0 --out "$data" --force
    touch "$data/.done"
  fi
  "$hymba" train configs/train/tiny-hymba.yaml --out "$run" \
    --set "data.train=$data" --set "data.val=$data" --set run.device=cuda --set run.precision=bf16 \
    --set run.steps=40 --set schedule.warmup_steps=5 --set run.log_every=10 --set run.eval_every=0 --set run.eval_batches=2 \
    --set run.ckpt_every=0 --set run.keep_last=1
}
if [ "$KERNELS_ONLY" -eq 0 ] && [ "$TRAIN" -eq 1 ]; then
  if usable hymba "$ROOT/$BUILD/bin/hymba"; then
    export -f train_gpu
    run_step train_gpu 60 70 "tee:$TRAIN_LOG" bash -c train_gpu || true
  else
    say "train_gpu: hymba not built"
    record train_gpu "not built" 0
  fi
fi

# ---- bench_train_gpu: a whole training step of Hymba-125M at 8 x 1024 tokens on the GPU ----
# (hymba bench train: tokens/s, TFLOP/s, MFU, and the cuBLASLt GEMM rate of the same run)
bench_train_gpu() {
  "$ROOT/$BUILD/bin/hymba" bench train configs/hymba-125m.yaml --set run.device=cuda --set run.precision=bf16 \
    --batch 8 --seq 1024 --steps 10 --warmup 2
}
if [ "$KERNELS_ONLY" -eq 0 ] && [ "$TRAIN" -eq 1 ] && usable hymba "$ROOT/$BUILD/bin/hymba"; then
  export -f bench_train_gpu
  run_step bench_train_gpu 60 60 "tee:$TRAIN_LOG" bash -c bench_train_gpu || true
fi

# ---- benchmark ----
if [ "$BENCH" -eq 1 ]; then
  if usable bench_gpu "$ROOT/$BUILD/bench/bench_gpu"; then
    # bench_gpu skips the cases that would start past its own budget, leaving time to report
    # (and to profile, when asked).
    reserve=$((10 + (PROFILE == 1 ? 80 : 0) + (SOURCE_PROFILE == 1 ? 60 : 0)))
    budget=$(($(remaining) - 20 - reserve))
    [ "$budget" -lt 10 ] && budget=10
    run_step bench_gpu 300 "$reserve" "tee:$BENCH_LOG" "$ROOT/$BUILD/bench/bench_gpu" --max-seconds "$budget" \
      "${BENCH_ARGS[@]}" || true
  else
    say "bench_gpu: not built"
    record bench_gpu "not built" 0
  fi
fi

# ---- profile: hardware counters of the fast kernels (ncu reads them on Firecracker nodes) ----
# One bench_gpu case per family at full size; warm-up launches are skipped. The clocks are left
# alone (--clock-control none), as the timings above ran.
profile_kernels() {
  local bench=$ROOT/$BUILD/bench/bench_gpu
  local -a sections=(--section SpeedOfLight --section Occupancy --section LaunchStats
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats)
  echo "==== selective scan [blocked], f32 and bf16: forward_kernel, backward_kernel"
  ncu --clock-control none "${sections[@]}" -k 'regex:^(forward|backward)_kernel' --launch-skip 4 --launch-count 4 \
    "$bench" --filter 'selective_scan fwd+bwd [blocked]' --reps 3 || return 1
  echo "==== attention [mma], bf16, sliding window: forward, dK/dV, dQ"
  ncu --clock-control none "${sections[@]}" -k 'regex:mma_fwd_kernel|attn_mma_bwd_(dkdv|dq)_kernel' \
    --launch-skip 3 --launch-count 3 "$bench" --filter 'attention swa fwd+bwd [mma]' --reps 3
}
# ncu_step NAME FUNCTION LOG MAX: a profiling step (the shell function under run_step), when
# ncu and bench_gpu are there.
ncu_step() {
  local name=$1 func=$2 log=$3 max=$4
  if command -v ncu >/dev/null && usable bench_gpu "$ROOT/$BUILD/bench/bench_gpu"; then
    export -f "$func"
    run_step "$name" "$max" 5 "file:$log" bash -c "$func" || true
  else
    say "$name: ncu or bench_gpu missing"
    record "$name" "not run" 0
  fi
}
if [ "$PROFILE" -eq 1 ]; then
  ncu_step profile profile_kernels "$PROFILE_LOG" 150
fi

# ---- source profile: where the scan kernels' issue slots and stalls go, per SASS instruction ----
# One launch each (warm-up launches skipped); the SASS listing with the sampled stall reasons
# per instruction is what says which dependency chains the warps wait on.
source_profile() {
  local bench=$ROOT/$BUILD/bench/bench_gpu
  local -a common=(--clock-control none --section SourceCounters --section WarpStateStats --page source
    --print-source sass --csv)
  # kernel, bench case: the third launch of the kernel in the case's f32 row (after warm-ups)
  local -a runs=(forward 'selective_scan fwd+bwd [blocked]' backward 'selective_scan fwd+bwd [blocked]'
    forward 'selective_scan fwd [blocked steps16]' forward 'selective_scan fwd [blocked steps8b4]')
  local i
  for ((i = 0; i < ${#runs[@]}; i += 2)); do
    echo "==== ${runs[i + 1]} f32: ${runs[i]}_kernel"
    ncu "${common[@]}" -k "regex:^${runs[i]}_kernel" --launch-skip 2 --launch-count 1 \
      "$bench" --filter "${runs[i + 1]}" --reps 2 || return 1
  done
}
if [ "$SOURCE_PROFILE" -eq 1 ]; then
  ncu_step source_profile source_profile "$SOURCE_LOG" 120
fi

# ---- summary, printed last ----
summary() {
  echo
  echo "==================== device check summary ===================="
  echo "machine: ${GPU:-no GPU found}; $(nproc) cores; $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc')"
  echo "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git') ; $(date -u +%Y-%m-%dT%H:%M:%SZ); total $(elapsed)s of ${BUDGET}s"
  echo "build: $([ "$KERNELS_ONLY" -eq 1 ] && echo 'kernels only' || echo 'whole tree, no MPI'); sm_$ARCHS; $([ -n "$BUNDLE_ARG" ] && echo 'libraries from the bundle' || echo 'system libraries')"
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
  for t in "${TEST_BINS[@]}"; do
    echo "| $t | ${T_PASS[$t]:--} | ${T_FAIL[$t]:--} | ${T_SKIP[$t]:--} | ${T_STATUS[$t]:-not run} |"
  done
  # The checks the CUDA issue asks for, one line each.
  local log
  for log in test_cuda_train test_cuda_train_reference; do
    if [ -s "$LOGS/$log.log" ]; then
      echo
      echo "$log:"
      grep -E '^\[ +(OK|FAILED|SKIPPED) +\] (CudaTraining|CudaNccl)\..*\([0-9]+ ms\)$' "$LOGS/$log.log" || true
    fi
  done
  for t in "${TEST_BINS[@]}"; do
    if [ "${T_FAIL[$t]:-0}" -gt 0 ]; then
      echo "$t failures (first 15; messages in $TESTS_LOG):"
      grep '^\[  FAILED  \] .*([0-9]* ms)$' "$LOGS/$t.log" | head -n 15 || true
    fi
  done
  if [ -s "$TRAIN_LOG" ]; then
    echo
    echo "train_gpu (hymba train, tiny Hymba, bf16, 16 x 256 tokens per step):"
    grep -E '\] (device: |step +[0-9]+/|eval step|error)|^error' "$TRAIN_LOG" | tail -n 7 || tail -n 5 "$TRAIN_LOG"
    if grep -q '^bench train:' "$TRAIN_LOG"; then
      echo "bench_train_gpu (hymba bench train, Hymba-125M, bf16, 8 x 1024 tokens per step):"
      sed -n '/^bench train:/,$p' "$TRAIN_LOG" | grep -E '^ +(device|speed|compute|memory|gemm|profile) |^    [a-z]' || true
    fi
  fi
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
summary | tee "$OUTDIR/summary.txt"

# Let tee finish writing the log before the exit status goes out.
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null || true
[ ${#FAILED[@]} -eq 0 ]
