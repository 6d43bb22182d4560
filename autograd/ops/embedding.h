// Differentiable embedding lookup.
#pragma once

#include "core/tensor.h"

namespace hymba {

// weight (V, H), ids (i32/i64, any shape) -> (ids..., H). The gradient reaches only weight;
// the row `padding_idx` gets none (-1: no padding row), like torch.nn.functional.embedding.
Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx = -1);

}  // namespace hymba
