// CPU causal depthwise conv1d. One (b, c) row at a time; the width is a template parameter so
// the tap loop unrolls and the loop over t vectorizes. The first W-1 steps, which read the
// zero padding, are peeled off the main loop.
// The SiLU loops use exp_nonpos (kernels/activation.h), whose selects vectorize only with
// trapping math off (see kernels/cpu/activation.cpp); no result changes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels/conv1d.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "kernels/activation.h"

namespace hymba::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;

using conv_check::ConvDims;

ConvDims check_inputs(const char* op, bool seq, const Tensor& x, const Tensor& w, const Tensor& bias) {
  return conv_check::check_inputs(
      op, seq, x, w, bias, [](DType d) { return d == DType::F32 || d == DType::F64; }, "here, expected f32 or f64");
}

// Through exp(-|v|), which never overflows and vectorizes (glibc's expf does not).
template <typename T>
inline T sigmoid(T v) {
  const T e = exp_nonpos(-std::abs(v));
  const T inv = T(1) / (T(1) + e);
  return v >= T(0) ? inv : e * inv;
}

// Pre-activation of one row: s[t] = bias + sum_k w[k] x[t-(W-1)+k].
template <int W, typename T>
void conv_row(const T* __restrict x, const T* __restrict w, T bias, T* __restrict s, int64_t L) {
  const int64_t head = std::min<int64_t>(W - 1, L);
  for (int64_t t = 0; t < head; ++t) {
    T acc = bias;
    for (int k = W - 1 - int(t); k < W; ++k) acc += w[k] * x[t - (W - 1) + k];
    s[t] = acc;
  }
#pragma omp simd
  for (int64_t t = W - 1; t < L; ++t) {
    T acc = bias;
    for (int k = 0; k < W; ++k) acc += w[k] * x[t - (W - 1) + k];
    s[t] = acc;
  }
}

template <int W, typename T>
void forward_rows(const T* px, const T* pw, const T* pbias, T* py, const ConvDims& dm, bool silu) {
  const int64_t L = dm.L;
  parallel_for(dm.B * dm.C, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, L)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r % dm.C;
      T* y = py + r * L;
      conv_row<W>(px + r * L, pw + c * W, pbias ? pbias[c] : T(0), y, L);
      if (silu) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) y[t] = y[t] * sigmoid(y[t]);
      }
    }
  });
}

// Threads split channels; each channel's dweight/dbias sum over b and t in order.
template <int W, typename T>
void backward_rows(const T* pdy, const T* px, const T* pw, const T* pbias, T* pdx, T* pdw, T* pdb,
                   const ConvDims& dm, bool silu) {
  const int64_t L = dm.L;
  parallel_for(dm.C, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, dm.B * L)), [&](int64_t c0, int64_t c1) {
    std::vector<T> ds(static_cast<size_t>(L));
    for (int64_t c = c0; c < c1; ++c) {
      const T* w = pw + c * W;
      double dw_acc[W] = {};
      double db_acc = 0;
      for (int64_t b = 0; b < dm.B; ++b) {
        const int64_t r = b * dm.C + c;
        const T* x = px + r * L;
        const T* dy = pdy + r * L;
        if (silu) {
          conv_row<W>(x, w, pbias ? pbias[c] : T(0), ds.data(), L);
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) {
            const T s = ds[t], sg = sigmoid(s);
            ds[t] = dy[t] * sg * (T(1) + s * (T(1) - sg));
          }
        } else {
          std::copy(dy, dy + L, ds.begin());
        }
        // dx[t] = sum_k w[k] ds[t + (W-1) - k] over the steps that exist.
        if (pdx) {
          T* dx = pdx + r * L;
          const int64_t body = std::max<int64_t>(0, L - (W - 1));
#pragma omp simd
          for (int64_t t = 0; t < body; ++t) {
            T acc = 0;
            for (int k = 0; k < W; ++k) acc += w[k] * ds[t + (W - 1) - k];
            dx[t] = acc;
          }
          for (int64_t t = body; t < L; ++t) {
            T acc = 0;
            for (int k = 0; k < W; ++k)
              if (t + (W - 1) - k < L) acc += w[k] * ds[t + (W - 1) - k];
            dx[t] = acc;
          }
        }
        for (int k = 0; k < W; ++k) {
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t t = std::max<int64_t>(0, W - 1 - k); t < L; ++t) acc += ds[t] * x[t - (W - 1) + k];
          dw_acc[k] += double(acc);
        }
        T sb = 0;
#pragma omp simd reduction(+ : sb)
        for (int64_t t = 0; t < L; ++t) sb += ds[t];
        db_acc += double(sb);
      }
      for (int k = 0; k < W; ++k) pdw[c * W + k] = T(dw_acc[k]);
      if (pdb) pdb[c] = T(db_acc);
    }
  });
}

template <typename F>
void with_width(int64_t w, F&& f) {
  switch (w) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

}  // namespace

Tensor causal_conv1d_forward(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu) {
  const char* op = "causal_conv1d";
  const ConvDims dm = check_inputs(op, true, x_in, w_in, bias_in);
  Tensor y = empty({dm.B, dm.C, dm.L}, TensorOptions(x_in.dtype(), x_in.device()));
  Tensor x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_width(dm.W, [&](auto wc) {
      forward_rows<decltype(wc)::value, T>(x.data<T>(), w.data<T>(), bias.defined() ? bias.data<T>() : nullptr,
                                           y.data<T>(), dm, silu);
    });
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> causal_conv1d_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& w_in,
                                                          const Tensor& bias_in, bool silu, bool need_dx) {
  const char* op = "causal_conv1d_backward";
  const ConvDims dm = check_inputs(op, true, x_in, w_in, bias_in);
  conv_check::check_grad(op, dy_in, x_in);
  const TensorOptions opts(x_in.dtype(), x_in.device());
  Tensor dx, dw = empty({dm.C, dm.W}, opts), db;
  if (need_dx) dx = empty({dm.B, dm.C, dm.L}, opts);
  if (bias_in.defined()) db = empty({dm.C}, opts);
  Tensor dy = contig(dy_in), x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_width(dm.W, [&](auto wc) {
      backward_rows<decltype(wc)::value, T>(dy.data<T>(), x.data<T>(), w.data<T>(),
                                            bias.defined() ? bias.data<T>() : nullptr,
                                            dx.defined() ? dx.data<T>() : nullptr, dw.data<T>(),
                                            db.defined() ? db.data<T>() : nullptr, dm, silu);
    });
  });
  return {dx, dw, db};
}

Tensor causal_conv1d_step(const Tensor& state, const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in,
                          bool silu) {
  const char* op = "causal_conv1d_step";
  const ConvDims dm = check_inputs(op, false, x_in, w_in, bias_in);
  conv_check::check_state(op, state, dm, x_in, w_in);
  Tensor y = empty({dm.B, dm.C}, TensorOptions(x_in.dtype(), x_in.device()));
  Tensor x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *px = x.data<T>(), *pw = w.data<T>(), *pb = bias.defined() ? bias.data<T>() : nullptr;
    T *ps = state.data<T>(), *py = y.data<T>();
    const int64_t W = dm.W;
    parallel_for(dm.B * dm.C, kGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t c = r % dm.C;
        T* s = ps + r * (W - 1);
        // Same summation order as conv_row: bias first, then taps oldest to newest.
        T acc = pb ? pb[c] : T(0);
        for (int64_t k = 0; k < W - 1; ++k) acc += pw[c * W + k] * s[k];
        acc += pw[c * W + W - 1] * px[r];
        py[r] = silu ? acc * sigmoid(acc) : acc;
        for (int64_t k = 0; k + 1 < W - 1; ++k) s[k] = s[k + 1];
        s[W - 2] = px[r];
      }
    });
  });
  return y;
}

}  // namespace hymba::kernels::cpu
