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

#include <string>
#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Argument checks shared by the CPU and CUDA kernels (each backend adds its own dtype and
// device rules).
namespace conv_check {

struct ConvDims {
  int64_t B, C, L, W;
};

// Validates x, weight and bias. `seq` is false for the step kernel, whose x has no L dim.
// `dtype_ok` says whether the backend takes x's dtype; `dtypes` ends the message (e.g.
// "here, expected f32 or f64").
inline ConvDims check_inputs(const char* op, bool seq, const Tensor& x, const Tensor& w, const Tensor& bias,
                             bool (*dtype_ok)(DType), const char* dtypes) {
  HYMBA_CHECK(x.defined() && w.defined(), op, ": x and weight are required (x ", x.meta_str(), ", weight ",
              w.meta_str(), ")");
  HYMBA_CHECK(dtype_ok(x.dtype()), op, ": dtype ", dtype_name(x.dtype()), " not supported ", dtypes, " (x ",
              x.meta_str(), ")");
  HYMBA_CHECK(x.dim() == (seq ? 3 : 2), op, ": x must be ", seq ? "(B, C, L)" : "(B, C)", ", got ", x.meta_str());
  HYMBA_CHECK(w.dim() == 2 && w.size(0) == x.size(1), op, ": weight has shape ", shape_str(w.shape()),
              ", expected (C, W) with C = ", x.size(1), " (x ", shape_str(x.shape()), ")");
  HYMBA_CHECK(w.size(1) >= 2 && w.size(1) <= 4, op, ": width W must be 2, 3 or 4, got weight ",
              shape_str(w.shape()), " (x ", shape_str(x.shape()), ")");
  check_same_dtype(op, x, w);
  check_same_device(op, x, w);
  if (bias.defined()) {
    HYMBA_CHECK(bias.shape() == Shape{x.size(1)}, op, ": bias has shape ", shape_str(bias.shape()), ", expected [",
                x.size(1), "] (x ", shape_str(x.shape()), ")");
    check_same_dtype(op, x, bias);
    check_same_device(op, x, bias);
  }
  return {x.size(0), x.size(1), seq ? x.size(2) : 1, w.size(1)};
}

inline void check_grad(const char* op, const Tensor& dy, const Tensor& x) {
  HYMBA_CHECK(dy.defined() && dy.shape() == x.shape(), op, ": gradient ",
              dy.defined() ? shape_str(dy.shape()) : std::string("undefined"), " does not match x ",
              shape_str(x.shape()));
  check_same_dtype(op, dy, x);
  check_same_device(op, dy, x);
}

// conv_state (B, C, W-1), like x, and one dense block (it is shifted in place).
inline void check_state(const char* op, const Tensor& state, const ConvDims& dm, const Tensor& x, const Tensor& w) {
  HYMBA_CHECK(state.defined() && state.shape() == Shape({dm.B, dm.C, dm.W - 1}), op, ": conv_state has shape ",
              state.defined() ? shape_str(state.shape()) : std::string("undefined"), ", expected ",
              shape_str({dm.B, dm.C, dm.W - 1}), " (x ", shape_str(x.shape()), ", weight ", shape_str(w.shape()),
              ")");
  check_same_dtype(op, state, x);
  check_same_device(op, state, x);
  HYMBA_CHECK(state.is_contiguous(), op, ": conv_state must be contiguous, got strides ",
              shape_str(state.strides()));
}

}  // namespace conv_check

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
