// Differentiable causal depthwise conv1d: one autograd node over kernels/conv1d.h, which
// defines the semantics and shapes.
#pragma once

#include "core/tensor.h"

namespace hymba {

// y (B,C,L) = act(bias + causal depthwise conv of x (B,C,L) with weight (C,W), W in 2..4),
// zero left padding, act = SiLU when `silu`. bias (C) may be an undefined Tensor.
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu);

// One generation step (no gradient): returns y (B,C) for the token x (B,C) and shifts it into
// conv_state (B,C,W-1), which holds the previous W-1 inputs, oldest first.
Tensor causal_conv1d_step(const Tensor& conv_state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                          bool silu);

}  // namespace hymba
