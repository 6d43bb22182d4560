#!/usr/bin/env bash
# Packs what a HYMBA_KERNELS_ONLY CUDA build needs that a bare GPU node lacks, so that
# scripts/device-check.sh can build and test there with no package manager and no network:
#   - OpenBLAS: cblas.h, f77blas.h, openblas_config.h and libopenblas.so.0, plus the
#     libraries it loads that are not part of glibc or GCC's runtime (libgfortran, libquadmath);
#   - GoogleTest: the gtest and gmock headers, libgtest.a and libgtest_main.a.
# Run it on the build machine (where scripts/setup.sh installed the Debian packages):
#   scripts/make-device-bundle.sh [DIR]        # default DIR: .device-bundle
# It writes DIR/hymba-device-bundle.tar.gz and DIR/MANIFEST.txt. The libraries are found
# exactly as the build finds them (a CMake probe running HymbaDeps' own pkg-config and
# find_package calls), so the bundle matches what the tests link here.
# On the device tool, pass carry: [".device-bundle"] and run scripts/device-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-.device-bundle}
TARBALL=hymba-device-bundle.tar.gz
# The tree travels with the device tool's working-tree copy (64 MiB in all).
MAX_BYTES=$((40 * 1024 * 1024))

log() { echo "make-device-bundle: $*"; }
die() { echo "make-device-bundle: error: $*" >&2; exit 1; }

for tool in cmake readelf ldd tar gzip; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs the build tools)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/include/openblas" "$stage/lib" "$work/probe"

# ---- 1. where the build finds OpenBLAS and GoogleTest ----
cat >"$work/probe/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(hymba_bundle_probe LANGUAGES C CXX)
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
EOF
log "probing OpenBLAS and GoogleTest with CMake"
cmake -S "$work/probe" -B "$work/probe/build" -DPROBE_OUT="$work/probe.env" >"$work/probe.log" 2>&1 ||
  { cat "$work/probe.log" >&2; die "the CMake probe failed (is libopenblas-dev / libgtest-dev installed?)"; }
openblas_include_dirs="" openblas_link_libraries="" openblas_version="" gtest_include_dirs=""
gtest_lib="" gtest_main_lib="" gtest_version="" cxx_implicit_include_dirs=""
# shellcheck disable=SC1090,SC1091
source "$work/probe.env"

# First directory of a CMake list ($2) holding file $1, or nothing.
find_in_dirs() {
  local name=$1 d
  local -a dirs
  IFS=';' read -r -a dirs <<<"$2"
  for d in "${dirs[@]}"; do
    if [ -n "$d" ] && [ -f "$d/$name" ]; then echo "$d"; return 0; fi
  done
  return 0
}

# ---- 2. OpenBLAS headers ----
# pkg-config's include dirs first, then the compiler's own (Debian puts cblas.h in the
# multiarch include dir through alternatives; other distributions need no -I at all).
search_dirs="$openblas_include_dirs;$cxx_implicit_include_dirs"
for h in cblas.h openblas_config.h f77blas.h; do
  d=$(find_in_dirs "$h" "$search_dirs")
  [ -n "$d" ] || die "$h not found in: $search_dirs"
  cp -L "$d/$h" "$stage/include/openblas/$h"
  log "  $h <- ${d%/}"
done

# ---- 3. libopenblas.so.0 and the non-glibc libraries it loads ----
lib=""
IFS=';' read -r -a libs <<<"$openblas_link_libraries"
for l in "${libs[@]}"; do
  case $(basename "$l") in libopenblas*.so*) lib=$l ;; esac
done
[ -n "$lib" ] || die "no libopenblas in pkg-config's link libraries: $openblas_link_libraries"
real=$(readlink -f "$lib")
soname=$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -n "$soname" ] || die "$real has no SONAME"
cp -L "$real" "$stage/lib/$soname"
log "  $soname <- $real"
# glibc and GCC's runtime come with the compiler on every node; anything else must travel.
system_lib='^(linux-vdso|libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[-a-z0-9_]*)\.so'
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  if [[ $name =~ $system_lib ]]; then continue; fi
  [ -f "$path" ] || die "ldd: $name => $path is not a file"
  cp -L "$path" "$stage/lib/$name"
  log "  $name <- $(readlink -f "$path")"
done < <(ldd "$real")

# ---- 4. GoogleTest ----
gtest_inc=$(find_in_dirs gtest/gtest.h "$gtest_include_dirs;$cxx_implicit_include_dirs")
[ -n "$gtest_inc" ] || die "gtest/gtest.h not found in: $gtest_include_dirs"
cp -rL "$gtest_inc/gtest" "$stage/include/gtest"
# Some kernel tests use gmock's matchers (header side only; nothing links libgmock).
gmock_inc=$(find_in_dirs gmock/gmock.h "$gtest_include_dirs;$cxx_implicit_include_dirs")
[ -n "$gmock_inc" ] || die "gmock/gmock.h not found (libgmock-dev)"
cp -rL "$gmock_inc/gmock" "$stage/include/gmock"
if [ ! -f "$gtest_lib" ] || [ ! -f "$gtest_main_lib" ]; then
  die "GTest libraries not found: '$gtest_lib' '$gtest_main_lib'"
fi
cp -L "$gtest_lib" "$stage/lib/libgtest.a"
cp -L "$gtest_main_lib" "$stage/lib/libgtest_main.a"
log "  gtest $gtest_version <- $gtest_inc, $gtest_lib"

# ---- 5. the dynamic loader must find libgfortran next to libopenblas ----
# An executable's DT_RUNPATH covers only its own dependencies, not those of its libraries,
# so each bundled library gets $ORIGIN when patchelf is here; device-check.sh also sets
# LD_LIBRARY_PATH, so a bundle made without patchelf works there too.
if command -v patchelf >/dev/null; then
  for f in "$stage"/lib/*.so*; do
    # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader, not the shell
    patchelf --set-rpath '$ORIGIN' "$f"
  done
  log "  RUNPATH \$ORIGIN set on the shared libraries (patchelf)"
else
  log "  no patchelf: the libraries need LD_LIBRARY_PATH=<bundle>/lib (device-check.sh sets it)"
fi

# ---- 6. manifest and archive ----
max_glibc=$(for f in "$stage"/lib/*.so*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
{
  echo "hymba device bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  # shellcheck disable=SC1091
  echo "source system: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")"
  echo "OpenBLAS $openblas_version ($real), GoogleTest $gtest_version"
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
log "wrote $DIR/$TARBALL: $((bytes / 1024)) KiB ($((unpacked / 1024)) KiB unpacked; needs glibc >= ${max_glibc#GLIBC_})"
[ "$bytes" -le "$MAX_BYTES" ] || die "the bundle is over $((MAX_BYTES / 1024 / 1024)) MiB: it would not fit the device tool's working-tree limit"
log "on the device tool: carry [\"$DIR\"] and run scripts/device-check.sh"
