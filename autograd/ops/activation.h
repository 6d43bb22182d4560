// Differentiable activations, each one node over a fused forward and backward kernel
// (kernels/activation.h).
#pragma once

#include "core/tensor.h"

namespace hymba {

Tensor silu(const Tensor& x);     // x * sigmoid(x)
Tensor sigmoid(const Tensor& x);  // 1 / (1 + exp(-x))
// log(1 + exp(x)), and exactly x for x > 20 (beta 1, threshold 20, as the SSM's dt uses).
Tensor softplus(const Tensor& x);
// silu(gate) * up for gate and up of the same shape: the SwiGLU MLP's gate, one node.
Tensor swiglu(const Tensor& gate, const Tensor& up);
// swiglu on x (..., 2H) packed as [gate | up] along the last dim; returns (..., H).
Tensor swiglu_packed(const Tensor& x);

}  // namespace hymba
