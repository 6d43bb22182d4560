// Elementwise ops: binary with numpy broadcasting, unary math, and ops with a scalar.
// Every kernel returns a new contiguous tensor except the *_out / *_ forms, which write into
// a given tensor (it may alias an input: the loops read element i before writing it).
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace hymba::kernels {

enum class BinaryOp { Add, Sub, Mul, Div };
enum class UnaryOp { Neg, Exp, Log, Sqrt, Rsqrt, Abs };
// out = op(x, s) for a scalar s: x + s, x * s, s - x (RSub), s / x (RDiv), x ^ s (Pow).
enum class ScalarOp { Add, Mul, RSub, RDiv, Pow };

const char* binary_op_name(BinaryOp op);
const char* unary_op_name(UnaryOp op);

namespace cpu {
void binary_out(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void unary_out(UnaryOp op, const Tensor& x, const Tensor& out);
void scalar_out(ScalarOp op, const Tensor& x, double s, const Tensor& out);
// out += alpha * x (same shapes; x may be broadcast to out's shape).
void axpy_(const Tensor& out, const Tensor& x, double alpha);
// Gradient of a unary op: dx = g * f'(x), with y = f(x) given where it is cheaper.
void unary_backward_out(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& dx);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// CUDA: also bf16 and f16 storage; math in fp32 (f64 for f64 tensors).
namespace cuda {
void binary_out(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void unary_out(UnaryOp op, const Tensor& x, const Tensor& out);
void scalar_out(ScalarOp op, const Tensor& x, double s, const Tensor& out);
void axpy_(const Tensor& out, const Tensor& x, double alpha);
void unary_backward_out(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& dx);
}  // namespace cuda
#endif

// Shape of op(a, b) after broadcasting; checks dtype and device agree.
Shape binary_result_shape(BinaryOp op, const Tensor& a, const Tensor& b);

inline Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = empty(binary_result_shape(op, a, b), TensorOptions(a.dtype(), a.device()));
  HYMBA_DISPATCH(a.device(), binary_out, op, a, b, out);
  return out;
}
inline void binary_out(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  HYMBA_DISPATCH(out.device(), binary_out, op, a, b, out);
}
inline Tensor unary(UnaryOp op, const Tensor& x) {
  Tensor out = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  HYMBA_DISPATCH(x.device(), unary_out, op, x, out);
  return out;
}
inline Tensor scalar(ScalarOp op, const Tensor& x, double s) {
  Tensor out = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  HYMBA_DISPATCH(x.device(), scalar_out, op, x, s, out);
  return out;
}
// out = op(x, s); out may be x itself (in place).
inline void scalar_out(ScalarOp op, const Tensor& x, double s, const Tensor& out) {
  HYMBA_DISPATCH(out.device(), scalar_out, op, x, s, out);
}
inline void axpy_(const Tensor& out, const Tensor& x, double alpha) {
  HYMBA_DISPATCH(out.device(), axpy_, out, x, alpha);
}
inline Tensor unary_backward(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y) {
  Tensor dx = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  HYMBA_DISPATCH(x.device(), unary_backward_out, op, g, x, y, dx);
  return dx;
}

}  // namespace hymba::kernels
