// Causal depthwise conv1d (the SSM's short convolution, HYMBA_SPEC section 2): per batch b,
// channel c, step t, with zero left padding,
//
//   y[b,c,t] = act(bias[c] + sum_{k<W} w[c,k] * x[b,c,t-(W-1)+k])      act = SiLU or identity
//
// x (B,C,L), weight (C,W) with W in 2..4 (a Hugging Face (C,1,W) weight reshaped), bias (C)
// optional (undefined Tensor). Same dtype and device for all; any layout is accepted. The
// output is contiguous.
//
// Backward recomputes the pre-activation (W multiply-adds per element) instead of saving it.
// dweight and dbias sum over b and t within one channel in a fixed order, so they are
// bit-identical for any thread count.
//
// Generation: conv_state (B,C,W-1) holds the last W-1 inputs, oldest first (zeros before the
// first token). The step kernel consumes one token x (B,C), returns y (B,C) and shifts the
// token into the state in place; from a zero state it reproduces the full convolution.
#pragma once

#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
Tensor causal_conv1d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu);
// Returns (dx, dweight, dbias); dbias is undefined when bias is, dx when !need_dx.
std::tuple<Tensor, Tensor, Tensor> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                                          const Tensor& bias, bool silu, bool need_dx);
Tensor causal_conv1d_step(const Tensor& conv_state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                          bool silu);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// Same contract, for f32, f64 and bf16 (math in fp32, f64 for f64).
namespace cuda {
Tensor causal_conv1d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu);
std::tuple<Tensor, Tensor, Tensor> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                                          const Tensor& bias, bool silu, bool need_dx);
Tensor causal_conv1d_step(const Tensor& conv_state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                          bool silu);
}  // namespace cuda
#endif

inline Tensor causal_conv1d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu) {
  return HYMBA_DISPATCH(x.device(), causal_conv1d_forward, x, weight, bias, silu);
}
inline std::tuple<Tensor, Tensor, Tensor> causal_conv1d_backward(const Tensor& dy, const Tensor& x,
                                                                 const Tensor& weight, const Tensor& bias, bool silu,
                                                                 bool need_dx = true) {
  return HYMBA_DISPATCH(x.device(), causal_conv1d_backward, dy, x, weight, bias, silu, need_dx);
}
inline Tensor causal_conv1d_step(const Tensor& conv_state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 bool silu) {
  return HYMBA_DISPATCH(x.device(), causal_conv1d_step, conv_state, x, weight, bias, silu);
}

}  // namespace hymba::kernels
