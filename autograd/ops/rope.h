// Differentiable rotary position embedding (kernels/rope.h): rotate-half, positions
// offset .. offset + T - 1.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace hymba {

// x (B, H, T, dh) -> rotated x; base from kernels::rope_base (Hymba-1.5B: NTK, about 74535).
Tensor rope(const Tensor& x, double base, int64_t offset = 0);

}  // namespace hymba
