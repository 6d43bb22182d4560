// Speculating a floating-point op that could raise an FP exception counts as control flow
// for GCC's if-conversion unless trapping math is off; without this the selects in these
// loops (and in exp_nonpos) leave every loop scalar. We never read FP exception flags, and
// the flag changes no result (no reassociation, no contraction). Clang ignores FP traps by
// default.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels/activation.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/parallel.h"
#include "core/strided.h"

namespace hymba::kernels::cpu {
namespace {

// Elementwise work below this many elements stays on one thread.
constexpr int64_t kGrain = 1 << 15;

// Each activation is a struct of two scalar functions: fwd(x) and grad(dy, x) = dy * f'(x).
// Written branch-free (selects only) so the contiguous loops below vectorize.
struct SigmoidF {
  // s = sigmoid(x) and sm = 1 - s = sigmoid(-x), both to a few ulp: 1 - s computed by
  // subtraction would lose all precision in f32 once s rounds to 1 (x > 17).
  template <typename T> static void pair(T x, T& s, T& sm) {
    T e = exp_nonpos(-std::abs(x));  // exp of -|x| never overflows
    T inv = T(1) / (T(1) + e);
    const bool pos = x >= T(0);
    s = (pos ? T(1) : e) * inv;
    sm = (pos ? e : T(1)) * inv;
  }
  template <typename T> static T sigmoid(T x) {
    T s, sm;
    pair(x, s, sm);
    return s;
  }
  template <typename T> static T fwd(T x) { return sigmoid(x); }
  template <typename T> static T grad(T dy, T x) {
    T s, sm;
    pair(x, s, sm);
    return dy * s * sm;
  }
};

struct SiluF {
  template <typename T> static T fwd(T x) { return x * SigmoidF::sigmoid(x); }
  // silu'(x) = s + x s (1 - s) = s (1 + x (1 - s)).
  template <typename T> static T grad(T dy, T x) {
    T s, sm;
    SigmoidF::pair(x, s, sm);
    return dy * s * (T(1) + x * sm);
  }
};

// softplus(x) = x above the threshold 20 (as in PyTorch and the Mamba reference), else
// log1p(exp(x)) computed as max(x, 0) + log1p(exp(-|x|)), which cannot overflow.
struct SoftplusF {
  static constexpr double kThreshold = 20.0;
  template <typename T> static T fwd(T x) {
    T v = std::max(x, T(0)) + std::log1p(exp_nonpos(-std::abs(x)));
    return x > T(kThreshold) ? x : v;
  }
  template <typename T> static T grad(T dy, T x) {
    T s = SigmoidF::sigmoid(x);
    return dy * (x > T(kThreshold) ? T(1) : s);
  }
};

void check_float_cpu(const char* op, const Tensor& x) {
  HYMBA_CHECK(x.defined(), op, ": undefined input tensor");
  HYMBA_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64, op, ": dtype ", dtype_name(x.dtype()),
              " not supported here, expected f32 or f64 (input ", x.meta_str(), ")");
}

using activation_check::check_grad_like;

template <typename F>
Tensor unary_forward(const char* op, const Tensor& x) {
  check_float_cpu(op, x);
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* py = y.data<T>();
    const T* px = x.data<T>();
    auto L = make_layout<2>(x.shape(), {&y.strides(), &x.strides()});
    for_each_row<2>(L, kGrain, [&](const std::array<int64_t, 2>& o, int64_t n, const std::array<int64_t, 2>& s) {
      T* yr = py + o[0];
      const T* xr = px + o[1];
      if (s[0] == 1 && s[1] == 1) {
        for (int64_t i = 0; i < n; ++i) yr[i] = F::fwd(xr[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) yr[i * s[0]] = F::fwd(xr[i * s[1]]);
      }
    });
  });
  return y;
}

template <typename F>
Tensor unary_backward(const char* op, const Tensor& dy, const Tensor& x) {
  check_float_cpu(op, x);
  check_grad_like(op, dy, x);
  Tensor dx = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pdx = dx.data<T>();
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    auto L = make_layout<3>(x.shape(), {&dx.strides(), &dy.strides(), &x.strides()});
    for_each_row<3>(L, kGrain, [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
      T* dxr = pdx + o[0];
      const T* dyr = pdy + o[1];
      const T* xr = px + o[2];
      if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        for (int64_t i = 0; i < n; ++i) dxr[i] = F::grad(dyr[i], xr[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) dxr[i * s[0]] = F::grad(dyr[i * s[1]], xr[i * s[2]]);
      }
    });
  });
  return dx;
}

void check_swiglu_pair(const char* op, const Tensor& gate, const Tensor& up) {
  activation_check::check_swiglu_pair(op, gate, up, check_float_cpu);
}

// y = silu(g) * u and its two gradients, shared by the split and packed forms.
template <typename T> inline T swiglu_fwd(T g, T u) { return SiluF::fwd(g) * u; }
template <typename T> inline void swiglu_grad(T dy, T g, T u, T& dg, T& du) {
  T s, sm;
  SigmoidF::pair(g, s, sm);
  du = dy * (g * s);
  dg = dy * u * s * (T(1) + g * sm);
}

// Splits packed (..., 2H) into its row count and H, naming the op on a bad shape.
std::pair<int64_t, int64_t> packed_dims(const char* op, const Tensor& x) {
  const int64_t h = activation_check::packed_half(op, x);
  return {h == 0 ? 0 : x.numel() / (2 * h), h};
}

}  // namespace

Tensor silu_forward(const Tensor& x) { return unary_forward<SiluF>("silu", x); }
Tensor silu_backward(const Tensor& dy, const Tensor& x) { return unary_backward<SiluF>("silu_backward", dy, x); }
Tensor sigmoid_forward(const Tensor& x) { return unary_forward<SigmoidF>("sigmoid", x); }
Tensor sigmoid_backward(const Tensor& dy, const Tensor& x) {
  return unary_backward<SigmoidF>("sigmoid_backward", dy, x);
}
Tensor softplus_forward(const Tensor& x) { return unary_forward<SoftplusF>("softplus", x); }
Tensor softplus_backward(const Tensor& dy, const Tensor& x) {
  return unary_backward<SoftplusF>("softplus_backward", dy, x);
}

Tensor swiglu_forward(const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu";
  check_swiglu_pair(op, gate, up);
  Tensor y = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* py = y.data<T>();
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    auto L = make_layout<3>(gate.shape(), {&y.strides(), &gate.strides(), &up.strides()});
    for_each_row<3>(L, kGrain, [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
      T* yr = py + o[0];
      const T* gr = pg + o[1];
      const T* ur = pu + o[2];
      if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        for (int64_t i = 0; i < n; ++i) yr[i] = swiglu_fwd(gr[i], ur[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) yr[i * s[0]] = swiglu_fwd(gr[i * s[1]], ur[i * s[2]]);
      }
    });
  });
  return y;
}

std::tuple<Tensor, Tensor> swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  check_swiglu_pair(op, gate, up);
  check_grad_like(op, dy, gate);
  Tensor dg = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  Tensor du = empty(gate.shape(), TensorOptions(gate.dtype(), gate.device()));
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pdg = dg.data<T>();
    T* pdu = du.data<T>();
    const T* pdy = dy.data<T>();
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    auto L = make_layout<5>(gate.shape(), {&dg.strides(), &du.strides(), &dy.strides(), &gate.strides(), &up.strides()});
    for_each_row<5>(L, kGrain, [&](const std::array<int64_t, 5>& o, int64_t n, const std::array<int64_t, 5>& s) {
      T* dgr = pdg + o[0];
      T* dur = pdu + o[1];
      const T* dyr = pdy + o[2];
      const T* gr = pg + o[3];
      const T* ur = pu + o[4];
      if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1 && s[4] == 1) {
        for (int64_t i = 0; i < n; ++i) swiglu_grad(dyr[i], gr[i], ur[i], dgr[i], dur[i]);
      } else {
        for (int64_t i = 0; i < n; ++i)
          swiglu_grad(dyr[i * s[2]], gr[i * s[3]], ur[i * s[4]], dgr[i * s[0]], dur[i * s[1]]);
      }
    });
  });
  return {dg, du};
}

Tensor swiglu_packed_forward(const Tensor& x_in) {
  const char* op = "swiglu_packed";
  check_float_cpu(op, x_in);
  auto [rows, h] = packed_dims(op, x_in);
  const Shape ys = activation_check::packed_out_shape(x_in, h);
  Tensor y = empty(ys, TensorOptions(x_in.dtype(), x_in.device()));
  if (rows == 0 || h == 0) return y;
  Tensor x = x_in.contiguous();
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* py = y.data<T>();
    const T* px = x.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / h), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* g = px + r * 2 * h;
        const T* u = g + h;
        T* yr = py + r * h;
        for (int64_t i = 0; i < h; ++i) yr[i] = swiglu_fwd(g[i], u[i]);
      }
    });
  });
  return y;
}

Tensor swiglu_packed_backward(const Tensor& dy_in, const Tensor& x_in) {
  const char* op = "swiglu_packed_backward";
  check_float_cpu(op, x_in);
  auto [rows, h] = packed_dims(op, x_in);
  const Shape ys = activation_check::packed_out_shape(x_in, h);
  activation_check::check_packed_grad(op, dy_in, x_in, ys);
  Tensor dx = empty(x_in.shape(), TensorOptions(x_in.dtype(), x_in.device()));
  if (rows == 0 || h == 0) return dx;
  Tensor x = x_in.contiguous(), dy = dy_in.contiguous();
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pdx = dx.data<T>();
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / h), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* g = px + r * 2 * h;
        const T* u = g + h;
        const T* d = pdy + r * h;
        T* dg = pdx + r * 2 * h;
        T* du = dg + h;
        for (int64_t i = 0; i < h; ++i) swiglu_grad(d[i], g[i], u[i], dg[i], du[i]);
      }
    });
  });
  return dx;
}

}  // namespace hymba::kernels::cpu
