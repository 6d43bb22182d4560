#!/usr/bin/env bash
# Runs the real sources of the fast CUDA kernels (attention_mma_fwd.cu, attention_mma_bwd.cu,
# selective_scan_blocked.cu) on the CPU with the emulator in tests/cuda_emu, against the CPU
# kernels, under AddressSanitizer. No GPU or CUDA toolkit needed.
#
#   scripts/emulate-cuda-kernels.sh [fwd|bwd|scan|all] [--quick]
#
# Builds the CPU-only libraries in build-emu/ ($HYMBA_EMU_BUILD if set; configured on first use), rewrites the CURRENT
# kernel sources into build-emu/emu-src (tests/cuda_emu/prep.py; it fails if its patterns no
# longer match), builds one driver per kernel and runs it: --quick a few cases (about a minute
# on 2 cores), otherwise the full grids. One summary line per kernel; logs in build-emu/emu/;
# the exit status is non-zero on any failure. See tests/cuda_emu/README.md for what it checks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EMU=$ROOT/tests/cuda_emu
# HYMBA_EMU_BUILD: another build folder (two people emulating at once each take their own).
BUILD=${HYMBA_EMU_BUILD:-$ROOT/build-emu}
which=all
quick=0
for a in "$@"; do
  case "$a" in
    fwd|bwd|scan|all) which=$a ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "emulate-cuda-kernels: unknown argument '$a' (expected fwd, bwd, scan, all, --quick)" >&2; exit 2 ;;
  esac
done
case $which in all) kernels="fwd bwd scan" ;; *) kernels=$which ;; esac
for tool in cmake ninja python3 g++ pkg-config; do
  command -v $tool >/dev/null || { echo "emulate-cuda-kernels: $tool not found" >&2; exit 2; }
done

# 1. The CPU-only libraries the drivers link (the CPU reference kernels, Tensor).
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHYMBA_CUDA=OFF \
    -DHYMBA_BUILD_TESTS=OFF -DHYMBA_BUILD_BENCH=OFF -DHYMBA_KERNELS_ONLY=ON >"$BUILD.cmake.log" 2>&1 ||
    { cat "$BUILD.cmake.log" >&2; exit 1; }
  mv "$BUILD.cmake.log" "$BUILD/emu-cmake.log"
fi
ninja -C "$BUILD" -j2 hymba_kernels >"$BUILD/emu-ninja.log" 2>&1 || { tail -40 "$BUILD/emu-ninja.log" >&2; exit 1; }

# 2. The current kernel sources, rewritten into C++.
python3 "$EMU/prep.py" "$ROOT" "$BUILD/emu-src"

# 3. The drivers, with AddressSanitizer (ninja: only what changed is rebuilt).
OUTD=$BUILD/emu
mkdir -p "$OUTD"
LIBS="$BUILD/kernels/libhymba_kernels.a $BUILD/core/libhymba_core.a $(pkg-config --libs openblas) -fopenmp -lpthread"
FLAGS="-std=c++20 -O2 -g -fsanitize=address -fno-omit-frame-pointer -I$EMU -I$BUILD/emu-src -I$ROOT"
{
  echo "cxx = g++"
  echo "flags = $FLAGS"
  echo "libs = $LIBS"
  echo "rule cc"
  echo "  command = \$cxx \$inc \$flags -MD -MF \$out.d -c \$in -o \$out"
  echo "  depfile = \$out.d"
  echo "  deps = gcc"
  echo "rule link"
  echo "  command = \$cxx -fsanitize=address \$in \$libs -o \$out"
  for k in fwd bwd scan; do
    case $k in
      fwd) src=attention_mma_fwd; inc="-I$EMU/attn" ;;
      bwd) src=attention_mma_bwd; inc="-I$EMU/attn" ;;
      scan) src=selective_scan_blocked; inc="-I$EMU/scan -I$EMU/attn" ;;  # attn/: mma.cuh (cp.async)
    esac
    echo "build $k/kernel.o: cc $BUILD/emu-src/$src.cpp"
    echo "  inc = $inc"
    echo "build $k/main.o: cc $EMU/main_$k.cpp"
    echo "  inc = $inc"
    echo "build emu_$k: link $k/kernel.o $k/main.o | $BUILD/kernels/libhymba_kernels.a $BUILD/core/libhymba_core.a"
  done
} >"$OUTD/build.ninja.new"
# Rewrite the file only when it changed, so ninja keeps its incremental state.
cmp -s "$OUTD/build.ninja.new" "$OUTD/build.ninja" 2>/dev/null || mv "$OUTD/build.ninja.new" "$OUTD/build.ninja"
rm -f "$OUTD/build.ninja.new"
targets=""
for k in $kernels; do targets="$targets emu_$k"; done
ninja -C "$OUTD" -j2 $targets >"$OUTD/ninja.log" 2>&1 || { tail -60 "$OUTD/ninja.log" >&2; exit 1; }

# 4. Run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
# The scan runs once per forward shape (HYMBA_CUDA_SCAN_FORWARD, kernels/cuda_impl.h) with the
# default backward shape, and once more per other backward shape (HYMBA_CUDA_SCAN_BACKWARD).
for k in $kernels; do
  if [ $quick = 1 ]; then
    modes=quick
  else
    case $k in fwd) modes="grid configs edge" ;; bwd) modes=all ;; scan) modes="grid edge bf16" ;; esac
  fi
  case $k in
    scan) shapes="steps16h/steps8h steps16/steps8h steps8x2/steps8h steps8b4/steps8h steps16q/steps8h
      steps16hg/steps8h steps16/steps8 steps16q/steps8q" ;;
    *) shapes="-" ;;
  esac
  for shape in $shapes; do
    if [ "$shape" = - ]; then label=$k; else label="$k[$shape]"; fi
    if [ "$shape" = - ]; then log=$OUTD/$k.log; else log=$OUTD/$k-${shape/\//-}.log; fi
    t0=$(date +%s)
    rc=0
    fwd_shape=${shape%/*} bwd_shape=${shape#*/}
    HYMBA_CUDA_SCAN_FORWARD=${fwd_shape#-} HYMBA_CUDA_SCAN_BACKWARD=${bwd_shape#-} "$OUTD/emu_$k" $modes >"$log" 2>&1 ||
      rc=$?
    t=$(($(date +%s) - t0))
    summary=$(grep -E "^$k: cases=" "$log" | tail -1 || true)
    if [ $rc -ne 0 ] || [ -z "$summary" ]; then
      status=1
      echo "$label: FAILED (exit $rc, ${t}s, modes: $modes; log $log)"
      grep -E "FAIL|unsupported|mismatch|ERROR|abort|out of bounds|misaligned|in flight" "$log" | head -20 || true
      [ -n "$summary" ] && echo "$summary" || tail -20 "$log"
    else
      echo "${summary/#$k:/$label:} (${t}s, modes: $modes)"
    fi
  done
done
exit $status
