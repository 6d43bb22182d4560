#include "kernels/elementwise.h"

#include <cmath>

#include "core/strided.h"

namespace hymba::kernels {

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "?";
}

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Rsqrt: return "rsqrt";
    case UnaryOp::Abs: return "abs";
  }
  return "?";
}

Shape binary_result_shape(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  HYMBA_CHECK(a.defined() && b.defined(), name, ": undefined operand");
  check_same_device(name, a, b);
  check_same_dtype(name, a, b);
  return broadcast_shapes(a.shape(), b.shape(), name);
}

namespace cpu {
namespace {

// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kGrain = 1 << 15;

template <typename T, typename F>
void binary_loop(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  Shape sa = broadcast_strides(a, out.shape(), "binary"), sb = broadcast_strides(b, out.shape(), "binary");
  auto L = make_layout<3>(out.shape(), {&out.strides(), &sa, &sb});
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  for_each_row<3>(L, kGrain, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& in) {
    T* po = o + off[0];
    const T* xa = pa + off[1];
    const T* xb = pb + off[2];
    if (in[0] == 1 && in[1] == 1 && in[2] == 1) {  // the common contiguous case vectorizes
      for (int64_t i = 0; i < n; ++i) po[i] = f(xa[i], xb[i]);
    } else if (in[0] == 1 && in[1] == 1 && in[2] == 0) {
      const T s = xb[0];
      for (int64_t i = 0; i < n; ++i) po[i] = f(xa[i], s);
    } else {
      for (int64_t i = 0; i < n; ++i) po[i * in[0]] = f(xa[i * in[1]], xb[i * in[2]]);
    }
  });
}

template <typename T, typename F>
void unary_loop(const Tensor& x, const Tensor& out, F f) {
  auto L = make_layout<2>(out.shape(), {&out.strides(), &x.strides()});
  T* o = static_cast<T*>(out.data_ptr());
  const T* px = static_cast<const T*>(x.data_ptr());
  for_each_row<2>(L, kGrain, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& in) {
    T* po = o + off[0];
    const T* xx = px + off[1];
    if (in[0] == 1 && in[1] == 1) {
      for (int64_t i = 0; i < n; ++i) po[i] = f(xx[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) po[i * in[0]] = f(xx[i * in[1]]);
    }
  });
}

void check_out(const char* op, const Tensor& out, const Shape& shape, const Tensor& like) {
  HYMBA_CHECK(out.shape() == shape, op, ": output has shape ", shape_str(out.shape()), ", expected ",
              shape_str(shape));
  check_same_dtype(op, out, like);
  check_same_device(op, out, like);
}

}  // namespace

void binary_out(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  Shape shape = binary_result_shape(op, a, b);
  check_out(binary_op_name(op), out, shape, a);
  dispatch_float(a.dtype(), binary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case BinaryOp::Add: binary_loop<T>(a, b, out, [](T x, T y) { return x + y; }); break;
      case BinaryOp::Sub: binary_loop<T>(a, b, out, [](T x, T y) { return x - y; }); break;
      case BinaryOp::Mul: binary_loop<T>(a, b, out, [](T x, T y) { return x * y; }); break;
      case BinaryOp::Div: binary_loop<T>(a, b, out, [](T x, T y) { return x / y; }); break;
    }
  });
}

void unary_out(UnaryOp op, const Tensor& x, const Tensor& out) {
  check_out(unary_op_name(op), out, x.shape(), x);
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case UnaryOp::Neg: unary_loop<T>(x, out, [](T v) { return -v; }); break;
      case UnaryOp::Exp: unary_loop<T>(x, out, [](T v) { return std::exp(v); }); break;
      case UnaryOp::Log: unary_loop<T>(x, out, [](T v) { return std::log(v); }); break;
      case UnaryOp::Sqrt: unary_loop<T>(x, out, [](T v) { return std::sqrt(v); }); break;
      case UnaryOp::Rsqrt: unary_loop<T>(x, out, [](T v) { return T(1) / std::sqrt(v); }); break;
      case UnaryOp::Abs: unary_loop<T>(x, out, [](T v) { return std::abs(v); }); break;
    }
  });
}

void scalar_out(ScalarOp op, const Tensor& x, double s, const Tensor& out) {
  check_out("scalar op", out, x.shape(), x);
  dispatch_float(x.dtype(), "scalar op", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T c = T(s);
    switch (op) {
      case ScalarOp::Add: unary_loop<T>(x, out, [c](T v) { return v + c; }); break;
      case ScalarOp::Mul: unary_loop<T>(x, out, [c](T v) { return v * c; }); break;
      case ScalarOp::RSub: unary_loop<T>(x, out, [c](T v) { return c - v; }); break;
      case ScalarOp::RDiv: unary_loop<T>(x, out, [c](T v) { return c / v; }); break;
      case ScalarOp::Pow:
        if (s == 2.0) {
          unary_loop<T>(x, out, [](T v) { return v * v; });
        } else {
          unary_loop<T>(x, out, [c](T v) { return std::pow(v, c); });
        }
        break;
    }
  });
}

void axpy_(const Tensor& out, const Tensor& x, double alpha) {
  check_same_dtype("axpy_", out, x);
  check_same_device("axpy_", out, x);
  HYMBA_CHECK(broadcast_shapes(x.shape(), out.shape(), "axpy_") == out.shape(), "axpy_: cannot add ",
              x.meta_str(), " into ", out.meta_str());
  dispatch_float(out.dtype(), "axpy_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T a = T(alpha);
    if (alpha == 1.0) {
      binary_loop<T>(out, x, out, [](T o, T v) { return o + v; });
    } else {
      binary_loop<T>(out, x, out, [a](T o, T v) { return o + a * v; });
    }
  });
}

void unary_backward_out(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& dx) {
  const char* name = unary_op_name(op);
  check_out(name, dx, x.shape(), x);
  HYMBA_CHECK(g.shape() == x.shape(), name, " backward: gradient ", g.meta_str(), " does not match input ",
              x.meta_str());
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case UnaryOp::Neg: unary_loop<T>(g, dx, [](T gv) { return -gv; }); break;
      case UnaryOp::Exp: binary_loop<T>(g, y, dx, [](T gv, T yv) { return gv * yv; }); break;
      case UnaryOp::Log: binary_loop<T>(g, x, dx, [](T gv, T xv) { return gv / xv; }); break;
      case UnaryOp::Sqrt: binary_loop<T>(g, y, dx, [](T gv, T yv) { return gv / (T(2) * yv); }); break;
      case UnaryOp::Rsqrt:  // d/dx x^-1/2 = -1/2 x^-3/2 = -y^3 / 2
        binary_loop<T>(g, y, dx, [](T gv, T yv) { return gv * T(-0.5) * yv * yv * yv; });
        break;
      case UnaryOp::Abs:  // subgradient 0 at 0, like PyTorch
        binary_loop<T>(g, x, dx, [](T gv, T xv) { return xv > T(0) ? gv : (xv < T(0) ? -gv : T(0)); });
        break;
    }
  });
}

}  // namespace cpu
}  // namespace hymba::kernels
