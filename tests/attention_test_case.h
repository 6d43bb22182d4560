// One attention problem of the attention tests (CPU kernels, CUDA kernels, both CUDA
// implementations): sizes, sliding window (-1: full) and meta prefix, printable for traces.
#pragma once

#include <cstdint>
#include <string>

namespace hymba::testutil {

struct AttentionCase {
  int64_t B, Hq, Hkv, T, dk, dv, window, meta;
};

inline std::string cfg_str(const AttentionCase& c) {
  return "B=" + std::to_string(c.B) + " Hq=" + std::to_string(c.Hq) + " Hkv=" + std::to_string(c.Hkv) +
         " T=" + std::to_string(c.T) + " dk=" + std::to_string(c.dk) + " dv=" + std::to_string(c.dv) +
         " W=" + std::to_string(c.window) + " M=" + std::to_string(c.meta);
}

}  // namespace hymba::testutil
