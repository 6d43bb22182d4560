#!/usr/bin/env bash
# The device scripts' checks of their --scan-baseline arguments (docs/gpu.md): a bad value
# must stop them at once, with a message naming it and a non-zero exit, before any build.
# They run on GPU nodes and the build machine; these checks need neither a GPU nor a bundle.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect() {  # NAME WANT_RC PATTERN CMD...: CMD exits WANT_RC and prints PATTERN (stdout or stderr)
  local name=$1 want=$2 pattern=$3 out rc
  shift 3
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL $name: exit $rc (want $want), output:"
    echo "$out" | head -n 5
    failed=1
  else
    echo "ok   $name"
  fi
}
expect "device-check, missing baseline file" 2 "no file .*no-such-scan-baseline.cu" \
  bash "$root/scripts/device-check.sh" --scan-baseline no-such-scan-baseline.cu
expect "device-check, option without its value" 1 "needs an earlier selective_scan_blocked.cu" \
  bash "$root/scripts/device-check.sh" --scan-baseline
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  expect "make-device-bundle, unknown revision" 1 "'no-such-revision' is not a revision" \
    bash "$root/scripts/make-device-bundle.sh" --scan-baseline no-such-revision "$tmp/bundle"
  first=$(git -C "$root" rev-list --max-parents=0 HEAD | tail -n 1)
  expect "make-device-bundle, revision without the scan" 1 "has no kernels/cuda/selective_scan_blocked.cu" \
    bash "$root/scripts/make-device-bundle.sh" --scan-baseline "$first" "$tmp/bundle"
else
  echo "not a git work tree: make-device-bundle's revision checks skipped"
  [ "$failed" -eq 0 ] && exit 77
fi
exit "$failed"
