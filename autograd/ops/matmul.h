// Differentiable matrix products.
#pragma once

#include "core/tensor.h"

namespace hymba {

// a @ b. Both at least 1-D: a 1-D `a` is a row vector and a 1-D `b` a column vector (the
// added dim is removed from the result, like torch.matmul); 2-D and up multiply the last two
// dims and broadcast the leading (batch) dims. Gradients of broadcast batch dims are summed.
Tensor matmul(const Tensor& a, const Tensor& b);

// x @ W^T + bias for x (..., in), W (out, in), bias (out) or undefined: PyTorch's nn.Linear
// convention (state_dict weights are stored (out, in)). One gemm per pass over all leading
// dims flattened: forward, dx, and dW = g^T x.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

}  // namespace hymba
