// Activations: SiLU, sigmoid, softplus (beta 1, threshold 20) and the fused SwiGLU gate
// silu(gate) * up, each with one forward and one backward kernel. Backward kernels take the
// forward *input* (not the output) and compute dx = dy * f'(x) in a single pass, so a node
// saves one tensor and the backward reads two and writes one.
//
// Shapes: outputs have the input's shape and dtype and are contiguous; inputs may be any
// strided view. swiglu_packed takes x (..., 2H) laid out [gate | up] on the last dim and gives
// (..., H): the layout of a fused gate+up projection, which saves one GEMM launch.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Argument checks and output shapes shared by the CPU and CUDA kernels. Each backend supplies
// `check_float(op, x)`, which holds its own dtype and device rules for a float input.
namespace activation_check {

// dy must match x exactly: a backward kernel never broadcasts.
inline void check_grad_like(const char* op, const Tensor& dy, const Tensor& x) {
  HYMBA_CHECK(dy.defined(), op, ": undefined gradient tensor");
  HYMBA_CHECK(dy.shape() == x.shape(), op, ": gradient shape ", shape_str(dy.shape()), " does not match input shape ",
              shape_str(x.shape()));
  check_same_dtype(op, dy, x);
  check_same_device(op, dy, x);
}

template <typename CheckFloat>
void check_swiglu_pair(const char* op, const Tensor& gate, const Tensor& up, CheckFloat&& check_float) {
  check_float(op, gate);
  HYMBA_CHECK(up.defined(), op, ": undefined up tensor");
  HYMBA_CHECK(gate.shape() == up.shape(), op, ": gate and up must have the same shape, got gate ",
              shape_str(gate.shape()), " and up ", shape_str(up.shape()));
  HYMBA_CHECK(gate.dtype() == up.dtype(), op, ": gate and up must have the same dtype, got gate ", gate.meta_str(),
              " and up ", up.meta_str());
  check_same_device(op, gate, up);
}

// H of a packed (..., 2H) tensor, naming the op on a bad shape.
inline int64_t packed_half(const char* op, const Tensor& x) {
  HYMBA_CHECK(x.dim() >= 1, op, ": expected at least 1 dim [..., 2H], got ", x.meta_str());
  const int64_t d = x.size(-1);
  HYMBA_CHECK(d % 2 == 0, op, ": last dim must be even ([gate | up]), got shape ", shape_str(x.shape()));
  return d / 2;
}

// swiglu_packed's output shape (..., H).
inline Shape packed_out_shape(const Tensor& x, int64_t h) {
  Shape ys = x.shape();
  ys.back() = h;
  return ys;
}

// swiglu_packed_backward: dy must have the output shape `ys` of packed input x.
inline void check_packed_grad(const char* op, const Tensor& dy, const Tensor& x, const Shape& ys) {
  HYMBA_CHECK(dy.defined() && dy.shape() == ys, op, ": gradient shape ",
              dy.defined() ? shape_str(dy.shape()) : std::string("undefined"), " does not match output shape ",
              shape_str(ys), " of input ", shape_str(x.shape()));
  check_same_dtype(op, dy, x);
  check_same_device(op, dy, x);
}

}  // namespace activation_check

namespace cpu {
Tensor silu_forward(const Tensor& x);
Tensor silu_backward(const Tensor& dy, const Tensor& x);
Tensor sigmoid_forward(const Tensor& x);
Tensor sigmoid_backward(const Tensor& dy, const Tensor& x);
Tensor softplus_forward(const Tensor& x);
Tensor softplus_backward(const Tensor& dy, const Tensor& x);
Tensor swiglu_forward(const Tensor& gate, const Tensor& up);
// Returns (dgate, dup).
std::tuple<Tensor, Tensor> swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up);
Tensor swiglu_packed_forward(const Tensor& x);
Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& x);

// exp(x) for x <= 0 in f32, written without calls or branches so the loops that use it
// vectorize (glibc's expf does not without -ffast-math, and exp dominates these kernels).
// Cody-Waite range reduction plus the Cephes degree-6 polynomial: within 2 ulp of expf for
// normal results, gradual underflow into the subnormals below, 0 under -104 (where expf
// rounds to 0 too) and at -inf. Every caller has x <= 0 (sigmoid uses exp(-|x|), softmax
// and cross-entropy exp(x - max)); it is also exact to 2 ulp for 0 < x < 88.
inline float exp_nonpos(float x) {
  const bool zero = x < -104.0f;
  x = x < -104.0f ? -104.0f : x;
  // Round x/ln2 to nearest with the 1.5*2^23 trick (exact for |x/ln2| < 2^22; SSE2 has no
  // round instruction).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as two normal powers of two, 2^n1 * 2^(n - n1) with n1 >= -126, so results below
  // FLT_MIN underflow gradually instead of wrapping the exponent field. An exponent field
  // of 0 makes a factor 0, which gives the exact zeros without a conditional on the result.
  // (GCC vectorizes these selects only with -fno-trapping-math, which the CPU kernel files
  // set for themselves.)
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n1 = ni < -126 ? -126 : ni;
  const int32_t b2 = zero ? 0 : ni - n1 + 127;
  return p * std::bit_cast<float>((n1 + 127) << 23) * std::bit_cast<float>(b2 << 23);
}
inline double exp_nonpos(double x) { return std::exp(x); }
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// CUDA: also bf16 and f16 storage; math in fp32 (f64 for f64 tensors).
namespace cuda {
Tensor silu_forward(const Tensor& x);
Tensor silu_backward(const Tensor& dy, const Tensor& x);
Tensor sigmoid_forward(const Tensor& x);
Tensor sigmoid_backward(const Tensor& dy, const Tensor& x);
Tensor softplus_forward(const Tensor& x);
Tensor softplus_backward(const Tensor& dy, const Tensor& x);
Tensor swiglu_forward(const Tensor& gate, const Tensor& up);
std::tuple<Tensor, Tensor> swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up);
Tensor swiglu_packed_forward(const Tensor& x);
Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& x);
}  // namespace cuda
#endif

inline Tensor silu_forward(const Tensor& x) { return HYMBA_DISPATCH(x.device(), silu_forward, x); }
inline Tensor silu_backward(const Tensor& dy, const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), silu_backward, dy, x);
}
inline Tensor sigmoid_forward(const Tensor& x) { return HYMBA_DISPATCH(x.device(), sigmoid_forward, x); }
inline Tensor sigmoid_backward(const Tensor& dy, const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), sigmoid_backward, dy, x);
}
inline Tensor softplus_forward(const Tensor& x) { return HYMBA_DISPATCH(x.device(), softplus_forward, x); }
inline Tensor softplus_backward(const Tensor& dy, const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), softplus_backward, dy, x);
}
inline Tensor swiglu_forward(const Tensor& gate, const Tensor& up) {
  return HYMBA_DISPATCH(gate.device(), swiglu_forward, gate, up);
}
inline std::tuple<Tensor, Tensor> swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  return HYMBA_DISPATCH(gate.device(), swiglu_backward, dy, gate, up);
}
inline Tensor swiglu_packed_forward(const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), swiglu_packed_forward, x);
}
inline Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), swiglu_packed_backward, dy, x);
}

}  // namespace hymba::kernels
