// Emulated kernels/cuda_impl.h (tests/cuda_emu): only the blocked scan's forward shape, read
// from HYMBA_CUDA_SCAN_FORWARD as the real switch reads it (scripts/emulate-cuda-kernels.sh
// runs the scan driver once per shape). prep.py checks that the enum is still the real one.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
namespace hymba::kernels::cuda {
enum class ScanForward {
  Steps16,        // 16 steps per lane, one state at a time, 3 blocks per SM (measured)
  Steps8States2,  // 8 steps per lane, two states at once (interleaved chains and scans)
  Steps8Blocks4,  // 8 steps per lane, one state, registers capped for 4 blocks per SM
};
// emu-only:begin
inline const char* impl_name(ScanForward s) {
  return s == ScanForward::Steps16 ? "steps16" : s == ScanForward::Steps8States2 ? "steps8x2" : "steps8b4";
}
inline ScanForward scan_forward() {
  const char* v = std::getenv("HYMBA_CUDA_SCAN_FORWARD");
  if (v == nullptr || *v == '\0') return ScanForward::Steps16;
  for (ScanForward s : {ScanForward::Steps16, ScanForward::Steps8States2, ScanForward::Steps8Blocks4})
    if (std::strcmp(v, impl_name(s)) == 0) return s;
  std::fprintf(stderr, "emu: HYMBA_CUDA_SCAN_FORWARD='%s' is not a forward shape\n", v);
  std::exit(2);
}
// emu-only:end
}  // namespace hymba::kernels::cuda
