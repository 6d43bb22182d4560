// Differentiable RMSNorm: one node over the fused forward and backward kernels
// (kernels/norm.h).
#pragma once

#include "core/tensor.h"

namespace hymba {

// y = x / sqrt(mean(x^2, last dim) + eps) * weight, for x (..., D) and weight (D).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

}  // namespace hymba
