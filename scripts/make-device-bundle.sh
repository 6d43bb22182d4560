#!/usr/bin/env bash
# Packs what a CUDA build of hymba needs that a bare GPU node lacks, so that
# scripts/device-check.sh can build and test the whole framework there with no package
# manager and no network:
#   - OpenBLAS: cblas.h, f77blas.h, openblas_config.h and libopenblas.so.0;
#   - GoogleTest: the gtest and gmock headers, libgtest.a and libgtest_main.a;
#   - the rest of the framework (left out with --kernels-only): yaml-cpp, spdlog and the fmt
#     it was built against, nlohmann-json (headers only), HDF5's C library, sentencepiece
#     (and its trainer) and Google Benchmark, each with its headers and shared libraries;
#   - every library those load that is not part of glibc or GCC's runtime (libgfortran for
#     OpenBLAS; libcurl, OpenSSL, libsz, ... for HDF5), found with ldd.
# Every bundled shared library gets RUNPATH $ORIGIN (patchelf), so the loader finds what it
# loads next to it: the binaries run with no LD_LIBRARY_PATH. MPI is not bundled: the node
# builds with -DHYMBA_WITH_MPI=OFF (one process; NCCL on one GPU still works). NCCL comes from
# the node (CUDA toolkit, NCCL_ROOT or the pip wheel nvidia-nccl-cu13: device-check.sh looks).
#
# Run it on the build machine (where scripts/setup.sh installed the Debian packages):
#   scripts/make-device-bundle.sh [--kernels-only] [DIR]        # default DIR: .device-bundle
# It writes DIR/hymba-device-bundle.tar.gz and DIR/MANIFEST.txt. The libraries are found
# exactly as the build finds them (a CMake probe running HymbaDeps' own pkg-config and
# find_package calls), so the bundle matches what the tests link here. The probe's compile
# definitions (spdlog's SPDLOG_FMT_EXTERNAL, ...) and the libraries' sonames go to
# lib/hymba-bundle.cmake, which cmake/DeviceBundle.cmake reads.
# On the device tool, pass carry: [".device-bundle"] and run scripts/device-check.sh.
#
#   scripts/make-device-bundle.sh --scan-baseline REV [DIR]
# also writes DIR/scan-baseline-REV.cu, kernels/cuda/selective_scan_blocked.cu as of git
# revision REV, for device-check.sh --scan-baseline (bench_gpu times it beside the current scan
# in the same run; docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=1
DIR=.device-bundle
SCAN_REV=""
while [ $# -gt 0 ]; do
  case $1 in
    --kernels-only) FULL=0 ;;
    --scan-baseline) SCAN_REV=${2:?--scan-baseline needs a git revision}; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "make-device-bundle: unknown option '$1'" >&2; exit 2 ;;
    *) DIR=$1 ;;
  esac
  shift
done
TARBALL=hymba-device-bundle.tar.gz
# The tarball travels with the device tool's working-tree copy (64 MiB in all, sources and
# any build output carried included).
MAX_BYTES=$((30 * 1024 * 1024))

log() { echo "make-device-bundle: $*"; }
die() { echo "make-device-bundle: error: $*" >&2; exit 1; }

# Checked before the bundle is made (minutes); the file itself is written at the end. It is
# named by the short hash, so that bench_gpu's rows name the revision.
if [ -n "$SCAN_REV" ]; then
  short=$(git rev-parse --short --verify --quiet "$SCAN_REV^{commit}") ||
    die "--scan-baseline: '$SCAN_REV' is not a revision of this repository"
  git cat-file -e "$short:kernels/cuda/selective_scan_blocked.cu" 2>/dev/null ||
    die "--scan-baseline: revision $short has no kernels/cuda/selective_scan_blocked.cu"
fi

for tool in cmake readelf ldd tar gzip objdump; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs the build tools)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/include/openblas" "$stage/lib" "$work/probe"

# ---- 1. where the build finds each library ----
cat >"$work/probe/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(hymba_bundle_probe LANGUAGES C CXX)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED openblas)
find_package(GTest REQUIRED)
get_target_property(gtest_inc GTest::gtest INTERFACE_INCLUDE_DIRECTORIES)
get_target_property(gtest_lib GTest::gtest LOCATION)
get_target_property(gtest_main_lib GTest::gtest_main LOCATION)
if(NOT gtest_inc)
  set(gtest_inc "${GTEST_INCLUDE_DIRS}")
endif()
file(WRITE "${PROBE_OUT}"
  "openblas_include_dirs='${OPENBLAS_INCLUDE_DIRS}'\n"
  "openblas_link_libraries='${OPENBLAS_LINK_LIBRARIES}'\n"
  "openblas_version='${OPENBLAS_VERSION}'\n"
  "gtest_include_dirs='${gtest_inc}'\n"
  "gtest_lib='${gtest_lib}'\n"
  "gtest_main_lib='${gtest_main_lib}'\n"
  "gtest_version='${GTest_VERSION}'\n"
  "cxx_implicit_include_dirs='${CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES}'\n")
if(NOT PROBE_FULL)
  return()
endif()

# The same lookups as cmake/HymbaDeps.cmake's "rest of the framework".
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
pkg_check_modules(SENTENCEPIECE REQUIRED sentencepiece)
find_package(benchmark REQUIRED)
set(yaml_target yaml-cpp)
if(TARGET yaml-cpp::yaml-cpp)
  set(yaml_target yaml-cpp::yaml-cpp)
endif()
# A property of an imported target, "" when unset.
function(prop out target name)
  get_target_property(v ${target} ${name})
  if(NOT v)
    set(v "")
  endif()
  set(${out} "${v}" PARENT_SCOPE)
endfunction()
prop(yaml_lib ${yaml_target} LOCATION)
prop(yaml_inc ${yaml_target} INTERFACE_INCLUDE_DIRECTORIES)
prop(spdlog_lib spdlog::spdlog LOCATION)
prop(spdlog_inc spdlog::spdlog INTERFACE_INCLUDE_DIRECTORIES)
prop(spdlog_defs spdlog::spdlog INTERFACE_COMPILE_DEFINITIONS)
prop(spdlog_links spdlog::spdlog INTERFACE_LINK_LIBRARIES)
set(fmt_lib "")
set(fmt_inc "")
set(fmt_defs "")
if("fmt::fmt" IN_LIST spdlog_links)
  prop(fmt_lib fmt::fmt LOCATION)
  prop(fmt_inc fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  prop(fmt_defs fmt::fmt INTERFACE_COMPILE_DEFINITIONS)
endif()
prop(json_inc nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
prop(bench_lib benchmark::benchmark LOCATION)
prop(bench_inc benchmark::benchmark INTERFACE_INCLUDE_DIRECTORIES)
prop(bench_defs benchmark::benchmark INTERFACE_COMPILE_DEFINITIONS)
file(APPEND "${PROBE_OUT}"
  "yaml_lib='${yaml_lib}'\nyaml_inc='${yaml_inc}'\nyaml_version='${yaml-cpp_VERSION}'\n"
  "spdlog_lib='${spdlog_lib}'\nspdlog_inc='${spdlog_inc}'\nspdlog_defs='${spdlog_defs}'\n"
  "spdlog_version='${spdlog_VERSION}'\n"
  "fmt_lib='${fmt_lib}'\nfmt_inc='${fmt_inc}'\nfmt_defs='${fmt_defs}'\nfmt_version='${fmt_VERSION}'\n"
  "json_inc='${json_inc}'\njson_version='${nlohmann_json_VERSION}'\n"
  "hdf5_libs='${HDF5_C_LIBRARIES}'\nhdf5_inc='${HDF5_C_INCLUDE_DIRS}'\nhdf5_defs='${HDF5_C_DEFINITIONS}'\n"
  "hdf5_version='${HDF5_VERSION}'\n"
  "sp_libs='${SENTENCEPIECE_LINK_LIBRARIES}'\nsp_inc='${SENTENCEPIECE_INCLUDE_DIRS}'\n"
  "sp_version='${SENTENCEPIECE_VERSION}'\n"
  "bench_lib='${bench_lib}'\nbench_inc='${bench_inc}'\nbench_defs='${bench_defs}'\n"
  "bench_version='${benchmark_VERSION}'\n")
EOF
log "probing the libraries with CMake"
cmake -S "$work/probe" -B "$work/probe/build" -DPROBE_OUT="$work/probe.env" -DPROBE_FULL=$FULL \
  >"$work/probe.log" 2>&1 || {
  cat "$work/probe.log" >&2
  die "the CMake probe failed: scripts/setup.sh installs the packages (--kernels-only needs only libopenblas-dev and libgtest-dev/libgmock-dev)"
}
openblas_include_dirs="" openblas_link_libraries="" openblas_version="" gtest_include_dirs=""
gtest_lib="" gtest_main_lib="" gtest_version="" cxx_implicit_include_dirs=""
yaml_lib="" yaml_inc="" yaml_version="" spdlog_lib="" spdlog_inc="" spdlog_defs=""
spdlog_version="" fmt_lib="" fmt_inc="" fmt_defs="" fmt_version="" json_inc="" json_version=""
hdf5_libs="" hdf5_inc="" hdf5_defs="" hdf5_version="" sp_libs="" sp_inc="" sp_version=""
bench_lib="" bench_inc="" bench_defs="" bench_version=""
# shellcheck disable=SC1090,SC1091
source "$work/probe.env"

# First directory of a CMake list ($2) holding file or folder $1, or nothing.
find_in_dirs() {
  local name=$1 d
  local -a dirs
  IFS=';' read -r -a dirs <<<"$2"
  for d in "${dirs[@]}"; do
    if [ -n "$d" ] && [ -e "$d/$name" ]; then echo "$d"; return 0; fi
  done
  return 0
}
# Include dirs to look in for a header: the library's own, then the compiler's.
inc_dirs() { echo "$1;$cxx_implicit_include_dirs"; }

# Copies header (file or folder) $1, found in CMake list $2, to include/$3 (default: $1).
copy_header() {
  local name=$1 where=$2 dest=${3:-$1} d
  d=$(find_in_dirs "$name" "$(inc_dirs "$where")")
  [ -n "$d" ] || die "$name not found in: $(inc_dirs "$where")"
  mkdir -p "$(dirname "$stage/include/$dest")"
  cp -rL "$d/$name" "$stage/include/$dest"
  log "  include/$dest <- ${d%/}/$name"
}

# Copies shared library $1 (any symlink to it) into lib/ under its SONAME; prints the soname.
stage_shared() {
  local real soname
  real=$(readlink -f "$1")
  [ -f "$real" ] || die "$1 is not a file"
  soname=$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ -n "$soname" ] || die "$real has no SONAME"
  if [ ! -f "$stage/lib/$soname" ]; then
    cp -L "$real" "$stage/lib/$soname"
    log "  lib/$soname <- $real" >&2
  fi
  echo "$soname"
}

# The element of CMake list $2 whose file name matches the glob $1 (first one), or nothing.
pick_lib() {
  local pattern=$1 l
  local -a libs
  IFS=';' read -r -a libs <<<"$2"
  for l in "${libs[@]}"; do
    # shellcheck disable=SC2254  # the pattern is a glob on purpose
    case $(basename "$l") in $pattern) echo "$l"; return 0 ;; esac
  done
  return 0
}

# ---- 2. OpenBLAS ----
# pkg-config's include dirs first, then the compiler's own (Debian puts cblas.h in the
# multiarch include dir through alternatives; other distributions need no -I at all).
for h in cblas.h openblas_config.h f77blas.h; do
  copy_header "$h" "$openblas_include_dirs" "openblas/$h"
done
lib=$(pick_lib 'libopenblas*.so*' "$openblas_link_libraries")
[ -n "$lib" ] || die "no libopenblas in pkg-config's link libraries: $openblas_link_libraries"
real_openblas=$(readlink -f "$lib")
openblas_soname=$(stage_shared "$lib")
[ "$openblas_soname" = libopenblas.so.0 ] || die "libopenblas' soname is $openblas_soname, DeviceBundle.cmake expects libopenblas.so.0"

# ---- 3. GoogleTest ----
copy_header gtest "$gtest_include_dirs"
# Some kernel tests use gmock's matchers (header side only; nothing links libgmock).
copy_header gmock "$gtest_include_dirs"
if [ ! -f "$gtest_lib" ] || [ ! -f "$gtest_main_lib" ]; then
  die "GTest libraries not found: '$gtest_lib' '$gtest_main_lib'"
fi
cp -L "$gtest_lib" "$stage/lib/libgtest.a"
cp -L "$gtest_main_lib" "$stage/lib/libgtest_main.a"
log "  gtest $gtest_version <- $gtest_lib"

# ---- 4. the rest of the framework ----
summary="OpenBLAS $openblas_version ($real_openblas), GoogleTest $gtest_version"
if [ "$FULL" -eq 1 ]; then
  copy_header yaml-cpp "$yaml_inc"
  yaml_soname=$(stage_shared "$yaml_lib")

  copy_header spdlog "$spdlog_inc"
  spdlog_soname=$(stage_shared "$spdlog_lib")
  fmt_soname=""
  if [ -n "$fmt_lib" ]; then  # Debian's spdlog uses the system fmt (SPDLOG_FMT_EXTERNAL)
    copy_header fmt "$fmt_inc"
    fmt_soname=$(stage_shared "$fmt_lib")
  fi

  copy_header nlohmann "$json_inc"

  # HDF5_C_LIBRARIES lists libhdf5 with the libraries it was linked against (libcurl.so,
  # libpthread.a, ...): only libhdf5 is linked here, the loader brings the rest (step 5).
  hdf5_lib=$(pick_lib 'libhdf5*.so*' "$hdf5_libs")
  [ -n "$hdf5_lib" ] || die "no libhdf5 in HDF5_C_LIBRARIES: $hdf5_libs"
  hdf5_soname=$(stage_shared "$hdf5_lib")
  hdf5_dir=$(find_in_dirs hdf5.h "$hdf5_inc")
  [ -n "$hdf5_dir" ] || die "hdf5.h not found in: $hdf5_inc"
  mkdir -p "$stage/include/hdf5"
  cp -L "$hdf5_dir"/*.h "$stage/include/hdf5/"
  log "  include/hdf5/*.h <- $hdf5_dir"

  sp_lib=$(pick_lib 'libsentencepiece.so*' "$sp_libs")
  sp_train_lib=$(pick_lib 'libsentencepiece_train.so*' "$sp_libs")
  if [ -z "$sp_lib" ] || [ -z "$sp_train_lib" ]; then die "sentencepiece's libraries not in: $sp_libs"; fi
  sp_soname=$(stage_shared "$sp_lib")
  sp_train_soname=$(stage_shared "$sp_train_lib")
  copy_header sentencepiece_processor.h "$sp_inc"
  copy_header sentencepiece_trainer.h "$sp_inc"

  copy_header benchmark "$bench_inc"
  bench_soname=$(stage_shared "$bench_lib")

  # What DeviceBundle.cmake needs to define the same targets as the system lookups.
  cat >"$stage/lib/hymba-bundle.cmake" <<EOF
# Written by scripts/make-device-bundle.sh; read by cmake/DeviceBundle.cmake.
set(HYMBA_BUNDLE_FRAMEWORK TRUE)
set(HYMBA_BUNDLE_YAML_CPP "$yaml_soname")
set(HYMBA_BUNDLE_SPDLOG "$spdlog_soname")
set(HYMBA_BUNDLE_SPDLOG_DEFINITIONS "$spdlog_defs")
set(HYMBA_BUNDLE_FMT "$fmt_soname")
set(HYMBA_BUNDLE_FMT_DEFINITIONS "$fmt_defs")
set(HYMBA_BUNDLE_HDF5 "$hdf5_soname")
set(HYMBA_BUNDLE_HDF5_DEFINITIONS "$hdf5_defs")
set(HYMBA_BUNDLE_SENTENCEPIECE "$sp_soname;$sp_train_soname")
set(HYMBA_BUNDLE_BENCHMARK "$bench_soname")
set(HYMBA_BUNDLE_BENCHMARK_DEFINITIONS "$bench_defs")
EOF
  summary="$summary, yaml-cpp $yaml_version, spdlog $spdlog_version, fmt ${fmt_version:-(bundled in spdlog)},"
  summary="$summary nlohmann-json $json_version, HDF5 $hdf5_version, sentencepiece $sp_version, benchmark $bench_version"
fi

# ---- 5. what the bundled libraries load ----
# glibc and GCC's runtime come with the compiler on every node; anything else must travel.
# ldd lists the whole closure (libhdf5 -> libcurl -> libssl -> ...), so one pass suffices.
system_lib='^(linux-vdso|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl|libgcc_s|libstdc\+\+|ld-linux[-a-z0-9_]*)\.so'
for f in "$stage"/lib/*.so*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ $name =~ $system_lib ]]; then continue; fi
    [ -f "$path" ] || die "ldd $(basename "$f"): $name => $path is not a file"
    [ -f "$stage/lib/$name" ] && continue
    cp -L "$path" "$stage/lib/$name"
    log "  lib/$name <- $(readlink -f "$path") (loaded by $(basename "$f"))"
  done < <(ldd "$f")
done

# ---- 6. the dynamic loader must find each library's dependencies next to it ----
# An executable's DT_RUNPATH covers only its own dependencies, not those of its libraries
# (libhdf5 -> libcurl), so each bundled library gets $ORIGIN.
command -v patchelf >/dev/null || die "patchelf not found (apt install patchelf): the bundled libraries need RUNPATH \$ORIGIN"
for f in "$stage"/lib/*.so*; do
  # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader, not the shell
  patchelf --set-rpath '$ORIGIN' "$f"
done
log "  RUNPATH \$ORIGIN set on the shared libraries (patchelf)"

# ---- 7. manifest and archive ----
max_glibc=$(for f in "$stage"/lib/*.so*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
{
  echo "hymba device bundle ($([ "$FULL" -eq 1 ] && echo full || echo kernels-only)), made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  # shellcheck disable=SC1091
  echo "source system: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")"
  echo "$summary"
  echo "needs glibc >= ${max_glibc#GLIBC_} on the node"
  echo
  (cd "$stage" && find . -type f -printf '%8s  %p\n' | sort -k2)
} >"$stage/MANIFEST.txt"

mkdir -p "$DIR"
rm -f "$DIR/$TARBALL"
tar -C "$stage" -czf "$DIR/$TARBALL" .
cp "$stage/MANIFEST.txt" "$DIR/MANIFEST.txt"
bytes=$(stat -c %s "$DIR/$TARBALL")
unpacked=$(du -sb "$stage" | cut -f1)
log "wrote $DIR/$TARBALL: $((bytes / 1024)) KiB = $((bytes / 1024 / 1024)).$(((bytes % (1024 * 1024)) * 10 / 1024 / 1024)) MiB ($((unpacked / 1024 / 1024)) MiB unpacked; needs glibc >= ${max_glibc#GLIBC_})"
[ "$bytes" -le "$MAX_BYTES" ] || die "the bundle is over $((MAX_BYTES / 1024 / 1024)) MiB: it would crowd the device tool's 64 MiB working-tree limit"
if [ -n "$SCAN_REV" ]; then
  git show "$short:kernels/cuda/selective_scan_blocked.cu" >"$DIR/scan-baseline-$short.cu"
  log "wrote $DIR/scan-baseline-$short.cu: pass --scan-baseline $DIR/scan-baseline-$short.cu to scripts/device-check.sh"
fi
log "on the device tool: carry [\"$DIR\"] and run scripts/device-check.sh"
