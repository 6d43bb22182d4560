// Emulated kernels/cuda_impl.h (tests/cuda_emu): only the blocked scan's forward and backward
// shapes, read from HYMBA_CUDA_SCAN_FORWARD / _BACKWARD as the real switch reads them
// (scripts/emulate-cuda-kernels.sh runs the scan driver once per shape). prep.py checks that
// the enums are still the real ones.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
namespace hymba::kernels::cuda {
enum class ScanForward {
  Steps16,        // 16 steps per lane, one state at a time, 3 blocks per SM
  Steps8States2,  // 8 steps per lane, two states at once (interleaved chains and scans)
  Steps8Blocks4,  // 8 steps per lane, one state, registers capped for 4 blocks per SM
  Steps16Half,    // 16 steps per lane, two channels per warp (a half-warp each), 3 blocks per SM: the fastest
  Steps16Quarter,  // 16 steps per lane, four channels per warp (8 lanes each), 3 blocks per SM
  Steps16HalfGroup8,  // as Steps16Half, with B/C tile groups of 8 states (half the block barriers)
};
enum class ScanBackward {
  Steps8Half,     // 8 steps per lane, two channels per warp (a half-warp each)
  Steps8,         // 8 steps per lane, a warp per channel
  Steps8Quarter,  // 8 steps per lane, four channels per warp (8 lanes each)
};
// emu-only:begin
inline const char* impl_name(ScanForward s) {
  return s == ScanForward::Steps16         ? "steps16"
         : s == ScanForward::Steps8States2 ? "steps8x2"
         : s == ScanForward::Steps8Blocks4 ? "steps8b4"
         : s == ScanForward::Steps16Half   ? "steps16h"
         : s == ScanForward::Steps16Quarter ? "steps16q"
                                            : "steps16hg";
}
inline ScanForward scan_forward() {
  const char* v = std::getenv("HYMBA_CUDA_SCAN_FORWARD");
  if (v == nullptr || *v == '\0') return ScanForward::Steps16Half;
  for (ScanForward s : {ScanForward::Steps16, ScanForward::Steps8States2, ScanForward::Steps8Blocks4,
                        ScanForward::Steps16Half, ScanForward::Steps16Quarter, ScanForward::Steps16HalfGroup8})
    if (std::strcmp(v, impl_name(s)) == 0) return s;
  std::fprintf(stderr, "emu: HYMBA_CUDA_SCAN_FORWARD='%s' is not a forward shape\n", v);
  std::exit(2);
}
inline ScanBackward scan_backward() {
  const char* v = std::getenv("HYMBA_CUDA_SCAN_BACKWARD");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "steps8h") == 0) return ScanBackward::Steps8Half;
  if (std::strcmp(v, "steps8") == 0) return ScanBackward::Steps8;
  if (std::strcmp(v, "steps8q") == 0) return ScanBackward::Steps8Quarter;
  std::fprintf(stderr, "emu: HYMBA_CUDA_SCAN_BACKWARD='%s' is not a backward shape\n", v);
  std::exit(2);
}
// emu-only:end
}  // namespace hymba::kernels::cuda
