// Elementwise ops on CUDA (kernels/elementwise.h): binary with broadcasting, unary, scalar,
// axpy_ and unary backward, all through two kernels per dtype.
//
// Every op is an element function out = f(x, y, s) of at most two tensor operands and one
// scalar, picked by a runtime code (the warp takes the same branch, so the switch costs a few
// instructions on a memory-bound loop) - four dtypes times two kernels (plus a 32/64-bit
// index variant of the strided one) instead of one instantiation per op.
//  - dense: every operand dense in the same order (or y a single broadcast element); 16-byte
//    loads and stores when the pointers allow, then a scalar tail;
//  - strided: any layout and broadcast, offsets from the coalesced shape.
// out may alias an input at the same positions (in-place forms): each thread reads its
// elements before writing them.
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"

namespace hymba::kernels::cuda {
namespace {

enum class Fn : int {
  Add, Sub, Mul, Div,                                 // binary: f(x, y)
  Neg, Exp, Log, Sqrt, Rsqrt, Abs,                    // unary: f(x)
  SAdd, SMul, SRSub, SRDiv, SPow, SSquare,            // scalar: f(x, s)
  Axpy,                                               // x + s * y
  GradExp, GradLog, GradSqrt, GradRsqrt, GradAbs,     // x = incoming gradient, y = saved tensor
};

// y operand of the dense kernel.
enum YMode : int { kNoY = 0, kDenseY = 1, kScalarY = 2 };

template <typename A>
__device__ __forceinline__ A apply(Fn op, A x, A y, A s) {
  switch (op) {
    case Fn::Add: return x + y;
    case Fn::Sub: return x - y;
    case Fn::Mul: return x * y;
    case Fn::Div: return x / y;
    case Fn::Neg: return -x;
    case Fn::Exp: return ::exp(x);
    case Fn::Log: return ::log(x);
    case Fn::Sqrt: return ::sqrt(x);
    case Fn::Rsqrt: return A(1) / ::sqrt(x);  // as the CPU: rsqrt() is not correctly rounded
    case Fn::Abs: return ::fabs(x);
    case Fn::SAdd: return x + s;
    case Fn::SMul: return x * s;
    case Fn::SRSub: return s - x;
    case Fn::SRDiv: return s / x;
    case Fn::SPow: return ::pow(x, s);
    case Fn::SSquare: return x * x;
    case Fn::Axpy: return x + s * y;
    case Fn::GradExp: return x * y;
    case Fn::GradLog: return x / y;
    case Fn::GradSqrt: return x / (A(2) * y);
    case Fn::GradRsqrt: return x * A(-0.5) * y * y * y;
    case Fn::GradAbs: return y > A(0) ? x : (y < A(0) ? -x : A(0));
  }
  return x;
}

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dense_kernel(Fn op, T* out, const T* x, const T* y, int ymode, acc_t<T> s, int64_t n, bool vec) {
  using A = acc_t<T>;
  using V = Vec16<T>;
  constexpr int kN = V::kN;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const A ys = ymode == kScalarY ? load_acc(y[0]) : A(0);
  const int64_t nv = vec ? n / kN : 0;
  for (int64_t i = tid; i < nv; i += step) {
    const V xv = reinterpret_cast<const V*>(x)[i];
    V yv;
    if (ymode == kDenseY) yv = reinterpret_cast<const V*>(y)[i];
    V ov;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const A b = ymode == kDenseY ? load_acc(yv.v[j]) : ys;
      ov.v[j] = store_acc<T>(apply<A>(op, load_acc(xv.v[j]), b, s));
    }
    reinterpret_cast<V*>(out)[i] = ov;
  }
  for (int64_t i = nv * kN + tid; i < n; i += step) {
    const A b = ymode == kDenseY ? load_acc(y[i]) : ys;
    out[i] = store_acc<T>(apply<A>(op, load_acc(x[i]), b, s));
  }
}

// Operands: 0 = out, 1 = x, 2 = y (the y strides are ignored when has_y is false).
template <typename T, typename Idx>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(Fn op, T* out, const T* x, const T* y, bool has_y, acc_t<T> s, StridedIndexer<Idx, 3> ix, Idx n) {
  using A = acc_t<T>;
  const Idx step = Idx(gridDim.x) * Idx(blockDim.x);
  for (Idx i = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); i < n; i += step) {
    Idx off[3];
    ix.get(i, off);
    const A b = has_y ? load_acc(y[off[2]]) : A(0);
    out[off[0]] = store_acc<T>(apply<A>(op, load_acc(x[off[1]]), b, s));
  }
}

void check_cuda_float(const char* op, const Tensor& t) {
  HYMBA_CHECK(t.defined(), op, ": undefined tensor");
  check_cuda_tensor(op, "operand", t);
  HYMBA_CHECK(is_floating(t.dtype()), op, ": expected a float dtype, got ", t.meta_str());
}

void check_out(const char* op, const Tensor& out, const Shape& shape, const Tensor& like) {
  HYMBA_CHECK(out.defined(), op, ": undefined output");
  HYMBA_CHECK(out.shape() == shape, op, ": output has shape ", shape_str(out.shape()), ", expected ",
              shape_str(shape));
  check_same_dtype(op, out, like);
  check_same_device(op, out, like);
}

// out = f(x, y, s) over out's shape; x and y (y may be undefined) broadcast to it.
void launch(const char* name, Fn op, const Tensor& out, const Tensor& x, const Tensor& y, double s) {
  if (out.numel() == 0) return;
  check_cuda_float(name, out);
  const bool has_y = y.defined();
  // The kernels read every operand as out's dtype.
  check_same_dtype(name, x, out);
  check_same_device(name, x, out);
  if (has_y) {
    check_same_dtype(name, y, out);
    check_same_device(name, y, out);
  }
  ::hymba::cuda::DeviceGuard guard(out.device().index);
  const Shape& shape = out.shape();
  const Shape xs = broadcast_strides(x, shape, name);
  const Shape ys = has_y ? broadcast_strides(y, shape, name) : Shape(shape.size(), 0);
  const StridedLayout<3> L = make_layout<3>(shape, {&out.strides(), &xs, &ys}, name);
  dispatch_cuda_float(out.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    T* po = ptr_of<T>(out);
    const T* px = ptr_of<const T>(x);
    const T* py = has_y ? ptr_of<const T>(y) : px;
    // Dense: out and x dense in the same order; y dense too, or one element for all.
    bool dense = L.ndim == 0 || (L.ndim == 1 && L.strides[0][0] == 1 && L.strides[1][0] == 1);
    int ymode = kNoY;
    if (has_y) {
      if (L.ndim == 0 || L.strides[2][0] == 1)
        ymode = kDenseY;
      else if (L.ndim == 1 && L.strides[2][0] == 0)
        ymode = kScalarY;
      else
        dense = false;
    }
    if (dense) {
      const int64_t n = L.numel;
      bool vec = aligned16(po) && aligned16(px) && (ymode != kDenseY || aligned16(py));
      const int64_t work = vec ? ceil_div(n, Vec16<T>::kN) : n;
      dense_kernel<T><<<grid_for(work, kThreads), kThreads, 0, stream()>>>(op, po, px, py, ymode, A(s), n, vec);
    } else if (L.fits_32bit()) {
      strided_kernel<T, uint32_t><<<grid_for(L.numel, kThreads), kThreads, 0, stream()>>>(
          op, po, px, py, has_y, A(s), make_indexer<uint32_t, 3>(L), uint32_t(L.numel));
    } else {
      strided_kernel<T, int64_t><<<grid_for(L.numel, kThreads), kThreads, 0, stream()>>>(
          op, po, px, py, has_y, A(s), make_indexer<int64_t, 3>(L), L.numel);
    }
    HYMBA_CUDA_CHECK_LAUNCH(name, " ", out.meta_str());
  });
}

Fn binary_fn(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return Fn::Add;
    case BinaryOp::Sub: return Fn::Sub;
    case BinaryOp::Mul: return Fn::Mul;
    case BinaryOp::Div: return Fn::Div;
  }
  HYMBA_FAIL("binary: unknown op");
}

Fn unary_fn(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return Fn::Neg;
    case UnaryOp::Exp: return Fn::Exp;
    case UnaryOp::Log: return Fn::Log;
    case UnaryOp::Sqrt: return Fn::Sqrt;
    case UnaryOp::Rsqrt: return Fn::Rsqrt;
    case UnaryOp::Abs: return Fn::Abs;
  }
  HYMBA_FAIL("unary: unknown op");
}

}  // namespace

void binary_out(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const Shape shape = binary_result_shape(op, a, b);
  check_out(binary_op_name(op), out, shape, a);
  launch(binary_op_name(op), binary_fn(op), out, a, b, 0.0);
}

void unary_out(UnaryOp op, const Tensor& x, const Tensor& out) {
  HYMBA_CHECK(x.defined(), unary_op_name(op), ": undefined input");
  check_out(unary_op_name(op), out, x.shape(), x);
  launch(unary_op_name(op), unary_fn(op), out, x, Tensor(), 0.0);
}

void scalar_out(ScalarOp op, const Tensor& x, double s, const Tensor& out) {
  HYMBA_CHECK(x.defined(), "scalar op: undefined input");
  check_out("scalar op", out, x.shape(), x);
  Fn fn = Fn::SAdd;
  switch (op) {
    case ScalarOp::Add: fn = Fn::SAdd; break;
    case ScalarOp::Mul: fn = Fn::SMul; break;
    case ScalarOp::RSub: fn = Fn::SRSub; break;
    case ScalarOp::RDiv: fn = Fn::SRDiv; break;
    case ScalarOp::Pow: fn = s == 2.0 ? Fn::SSquare : Fn::SPow; break;
  }
  launch("scalar op", fn, out, x, Tensor(), s);
}

void axpy_(const Tensor& out, const Tensor& x, double alpha) {
  HYMBA_CHECK(out.defined() && x.defined(), "axpy_: undefined operand");
  check_same_dtype("axpy_", out, x);
  check_same_device("axpy_", out, x);
  HYMBA_CHECK(broadcast_shapes(x.shape(), out.shape(), "axpy_") == out.shape(), "axpy_: cannot add ",
              x.meta_str(), " into ", out.meta_str());
  launch("axpy_", alpha == 1.0 ? Fn::Add : Fn::Axpy, out, out, x, alpha);
}

void unary_backward_out(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& dx) {
  const char* name = unary_op_name(op);
  HYMBA_CHECK(g.defined() && x.defined(), name, " backward: undefined operand");
  check_out(name, dx, x.shape(), x);
  HYMBA_CHECK(g.shape() == x.shape(), name, " backward: gradient ", g.meta_str(), " does not match input ",
              x.meta_str());
  auto need_y = [&]() -> const Tensor& {
    HYMBA_CHECK(y.defined(), name, " backward: the forward output is required");
    return y;
  };
  switch (op) {
    case UnaryOp::Neg: launch(name, Fn::Neg, dx, g, Tensor(), 0.0); break;
    case UnaryOp::Exp: launch(name, Fn::GradExp, dx, g, need_y(), 0.0); break;
    case UnaryOp::Log: launch(name, Fn::GradLog, dx, g, x, 0.0); break;
    case UnaryOp::Sqrt: launch(name, Fn::GradSqrt, dx, g, need_y(), 0.0); break;
    case UnaryOp::Rsqrt: launch(name, Fn::GradRsqrt, dx, g, need_y(), 0.0); break;
    case UnaryOp::Abs: launch(name, Fn::GradAbs, dx, g, x, 0.0); break;
  }
}

}  // namespace hymba::kernels::cuda
