// Rotary position embedding, rotate-half convention (HYMBA_SPEC section 1).
//
// x (B, H, T, dh) with dh even; the row at sequence index t has position offset + t (offset
// > 0 when decoding after a cache). With half = dh / 2, inv_freq[j] = base^(-2j/dh) and
// angle = pos * inv_freq[j] for j < half:
//   y[j]        = x[j] * cos - x[j + half] * sin
//   y[j + half] = x[j + half] * cos + x[j] * sin
// Backward is the rotation by -angle. For f32 tensors inv_freq, angle, cos and sin are fp32
// values (each computed in double and rounded, angle = fp32(pos) * fp32 inv_freq as in the
// reference implementation); f64 tensors use double throughout. x may be strided in its
// first three dims (e.g. q read straight out of a fused projection) as long as its last dim
// has stride 1; other layouts are copied. The result is contiguous.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/dispatch.h"

namespace hymba::kernels {

enum class RopeType { Default, NTK };

// The rotary base. Default: theta. NTK: theta * (factor * max_position / orig_max_position -
// (factor - 1))^(dh / (dh - 2)), the dynamic-NTK rule evaluated at the configured
// max_position (Hymba-1.5B: 1e4 * (2 * 8192 / 2048 - 1)^(64/62), about 74535).
double rope_base(double theta, RopeType type, int64_t head_dim, int64_t max_position = 0,
                 int64_t orig_max_position = 0, double factor = 2.0);
// "default" or "ntk" (config strings); throws naming the value otherwise.
RopeType rope_type_from_string(const std::string& s);

namespace cpu {
// inverse = false: the forward rotation; true: the rotation by -angle (the backward).
Tensor rope(const Tensor& x, double base, int64_t offset, bool inverse);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// Same contract, for f32, f64 and bf16 (bf16 rotates with the fp32 table).
namespace cuda {
Tensor rope(const Tensor& x, double base, int64_t offset, bool inverse);
}  // namespace cuda
#endif

inline Tensor rope_forward(const Tensor& x, double base, int64_t offset = 0) {
  return HYMBA_DISPATCH(x.device(), rope, x, base, offset, false);
}
inline Tensor rope_backward(const Tensor& dy, double base, int64_t offset = 0) {
  return HYMBA_DISPATCH(dy.device(), rope, dy, base, offset, true);
}

}  // namespace hymba::kernels
