// Differentiable causal GQA attention with sliding window and meta prefix: one node over the
// flash-style kernels (kernels/attention.h), saving only q, k, v, the output and the
// per-row log-sum-exp.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace hymba {

// q (B, Hq, T, dk), k (B, Hkv, T, dk), v (B, Hkv, T, dv) -> (B, Hq, T, dv). Key j is visible
// from query i iff j <= i and (window < 0, or i - j <= window, or j < num_meta).
// scale <= 0 means 1 / sqrt(dk).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window = -1, int64_t num_meta = 0,
                 double scale = 0);

}  // namespace hymba
