// Differentiable reductions, and sum_to (the reverse of broadcasting) for other ops' backward.
#pragma once

#include <utility>
#include <vector>

#include "core/tensor.h"

namespace hymba {

// Sum of every element: a 0-dim tensor.
Tensor sum(const Tensor& x);
// Sum over `dims` (negative dims count from the end; empty reduces all dims).
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// {values, indices (i64)} of the maximum along `dim`. The gradient flows to the first
// maximal element only (ties go to the first index), like torch.max(x, dim).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);

// Reduces a gradient of a broadcast result back to `shape`: sums the leading dims that
// broadcasting added and the dims where `shape` has size 1. Returns `grad` itself when the
// shapes already match. Not differentiable (records no graph); throws when `shape` does not
// broadcast to grad's shape.
Tensor sum_to(const Tensor& grad, const Shape& shape);

}  // namespace hymba
