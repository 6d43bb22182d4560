// Differentiable meta-token ops (kernels/meta_tokens.h): prepend a learned (M, H) block to
// every sequence, drop it again, and the embedding lookup fused with the prepend.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace hymba {

// meta (M, H), x (B, L, H) -> (B, M + L, H); meta's gradient is summed over the batch.
Tensor prepend_meta(const Tensor& meta, const Tensor& x);
// x (B, M + L, H) -> x[:, num_meta:] (B, L, H), a contiguous copy.
Tensor drop_meta(const Tensor& x, int64_t num_meta);
// prepend_meta(meta, weight[ids]) in one pass: weight (V, H), ids (B, L) i32/i64, meta (M, H)
// -> (B, M + L, H). Tokens equal to padding_idx (>= 0) send no gradient to the table.
Tensor embed_with_meta(const Tensor& weight, const Tensor& ids, const Tensor& meta, int64_t padding_idx = -1);

}  // namespace hymba
