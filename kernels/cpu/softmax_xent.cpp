// See kernels/cpu/activation.cpp: lets GCC vectorize the selects inside exp_nonpos.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels/softmax_xent.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "kernels/activation.h"  // exp_nonpos

namespace hymba::kernels::cpu {
namespace {

// Rows are handed to threads in chunks of at least this many elements.
constexpr int64_t kGrain = 1 << 14;

void check_float(const char* op, const char* what, const Tensor& t) {
  HYMBA_CHECK(t.defined(), op, ": undefined ", what);
  HYMBA_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, op, ": dtype ", dtype_name(t.dtype()),
              " not supported here, expected f32 or f64 (", what, " ", t.meta_str(), ")");
}

int64_t row_grain(int64_t n) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, n)); }

// Written as m > x ? m : x, which is exactly the semantics of the SSE/AVX max instruction,
// so the reduction vectorizes; std::max's x < m form stays scalar (one dependent max per
// element). A NaN x is skipped here and propagates through the sum of exponentials.
template <typename T>
T row_max(const T* x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = m > x[j] ? m : x[j];
  return m;
}

// Row sums in double. Separate, non-inlined functions: inlined into the parallel loops,
// GCC left some of these omp simd reductions scalar.

// sum_j exp(x[j] - m).
template <typename T>
[[gnu::noinline]] double sum_exp(const T* x, T m, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(exp_nonpos(T(x[j] - m)));
  return s;
}

// Stores e[j] = exp(x[j] - m) and returns their sum.
template <typename T>
[[gnu::noinline]] double store_exp_sum(const T* x, T m, int64_t n, T* e) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) {
    T v = exp_nonpos(T(x[j] - m));
    e[j] = v;
    s += double(v);
  }
  return s;
}

template <typename T>
[[gnu::noinline]] double sum_of(const T* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(x[j]);
  return s;
}

template <typename T>
[[gnu::noinline]] double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(a[j]) * double(b[j]);
  return s;
}

// Rows are scanned for their statistics in chunks of this many elements (8 KiB of f32): a
// chunk's max and then its sum of exponentials read it while it is still in L1.
constexpr int64_t kStatChunk = 2048;

// (m, s) = (max x, sum exp(x - m)) of a row with one pass over it from memory: every chunk's
// max and sum are merged into the running pair by the online rule (a larger max rescales the
// running sum). A chunk of only -inf adds nothing; a row of only -inf ends as (-inf, 0),
// whose log-sum-exp is -inf and whose loss is NaN, as in the two-pass forward.
// With e (n values) and cm (one per chunk) given, it also keeps e[j] = exp(x[j] - cm[c]) for
// j in chunk c (0 in a chunk of only -inf, whose cm is -inf): the gradient pass then needs
// one multiply per element instead of a second exp, which is what the CPU spends its time on.
template <typename T>
void online_row_stats(const T* x, int64_t n, T& m_out, double& s_out, T* e = nullptr, T* cm = nullptr) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  T m = kNegInf;
  double s = 0;
  for (int64_t j0 = 0, c = 0; j0 < n; j0 += kStatChunk, ++c) {
    const int64_t len = std::min(kStatChunk, n - j0);
    const T mc = row_max(x + j0, len);
    if (cm) cm[c] = mc;
    if (mc == kNegInf) {
      if (e) std::fill(e + j0, e + j0 + len, T(0));
      continue;
    }
    const double sc = e ? store_exp_sum(x + j0, mc, len, e + j0) : sum_exp(x + j0, mc, len);
    if (m == kNegInf) {
      m = mc;
      s = sc;
    } else if (mc > m) {
      s = s * std::exp(double(m) - double(mc)) + sc;
      m = mc;
    } else {
      s += sc * std::exp(double(mc) - double(m));
    }
  }
  m_out = m;
  s_out = s;
}

template <typename T>
[[gnu::noinline]] void scale_in_place(T* x, int64_t n, T f) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] *= f;
}

// The four softmax kernels work on contiguous rows along the last dim. Another dim is moved
// last with a transpose and a copy: softmax over a non-last dim is rare in these models and
// the copy keeps a single, vectorized row kernel.
template <typename RowFn>
Tensor along_dim(const char* op, const Tensor& x, int64_t dim, RowFn&& row_fn) {
  int64_t nd = x.dim();
  int64_t d = wrap_dim(dim, nd, op);
  if (nd == 0 || d == nd - 1) return row_fn(x.contiguous());
  Tensor xt = x.transpose(d, nd - 1).contiguous();
  return row_fn(xt).transpose(d, nd - 1).contiguous();
}

template <typename RowFn>
Tensor along_dim2(const char* op, const Tensor& a, const Tensor& b, int64_t dim, RowFn&& row_fn) {
  int64_t nd = b.dim();
  int64_t d = wrap_dim(dim, nd, op);
  if (nd == 0 || d == nd - 1) return row_fn(a.contiguous(), b.contiguous());
  return row_fn(a.transpose(d, nd - 1).contiguous(), b.transpose(d, nd - 1).contiguous())
      .transpose(d, nd - 1)
      .contiguous();
}

int64_t last_dim(const Tensor& x) { return x.dim() == 0 ? 1 : x.size(-1); }

Tensor softmax_rows(const Tensor& x, bool log) {
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  const int64_t n = last_dim(x);
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / n;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * n;
        T* yr = py + r * n;
        const T m = row_max(xr, n);
        if (log) {
          // (x - m) - log(s) rather than x - lse: x - m is exact for the large entries, so
          // the result keeps full precision even when |x| is huge.
          const T ls = T(std::log(sum_exp(xr, m, n)));
          for (int64_t j = 0; j < n; ++j) yr[j] = (xr[j] - m) - ls;
        } else {
          const T inv = T(1.0 / store_exp_sum(xr, m, n, yr));
          for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
        }
      }
    });
  });
  return y;
}

Tensor softmax_backward_rows(const Tensor& dy, const Tensor& y, bool log) {
  Tensor dx = empty(y.shape(), TensorOptions(y.dtype(), y.device()));
  const int64_t n = last_dim(y);
  if (y.numel() == 0) return dx;
  const int64_t rows = y.numel() / n;
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pdy = dy.data<T>();
    const T* py = y.data<T>();
    T* pdx = dx.data<T>();
    parallel_for(rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* g = pdy + r * n;
        const T* yr = py + r * n;
        T* d = pdx + r * n;
        if (log) {
          const T st = T(sum_of(g, n));
          for (int64_t j = 0; j < n; ++j) d[j] = g[j] - exp_nonpos(yr[j]) * st;
        } else {
          const T st = T(dot(g, yr, n));
          for (int64_t j = 0; j < n; ++j) d[j] = yr[j] * (g[j] - st);
        }
      }
    });
  });
  return dx;
}

void check_backward(const char* op, const Tensor& dy, const Tensor& y) {
  softmax_check::check_backward(op, dy, y, check_float);
}

using softmax_check::stat_dtype;

// Checks logits (..., V) against targets (...); returns (rows, V).
std::pair<int64_t, int64_t> check_xent(const char* op, const Tensor& logits, const Tensor& targets) {
  return softmax_check::check_xent(op, logits, targets, check_float);
}

// Reads targets as int64 (contiguous), validating the range serially before any parallel
// work (an exception must not escape an OpenMP region). Returns the counted rows.
int64_t read_targets(const char* op, const Tensor& targets, int64_t v, int64_t ignore_index,
                     std::vector<int64_t>& out) {
  Tensor t = targets.contiguous();
  const int64_t n = t.numel();
  out.resize(size_t(n));
  int64_t count = 0;
  dispatch_index(t.dtype(), op, [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* p = t.data<I>();
    for (int64_t r = 0; r < n; ++r) {
      const int64_t tr = int64_t(p[r]);
      if (tr == ignore_index) {
        out[size_t(r)] = tr;
        continue;
      }
      HYMBA_CHECK(tr >= 0 && tr < v, op, ": target ", tr, " at row ", r, " is out of range for ", v,
                  " classes (valid: 0..", v - 1, ", or ignore_index ", ignore_index, ")");
      out[size_t(r)] = tr;
      ++count;
    }
  });
  return count;
}

// The row pass behind both entry points: the statistics of each row in one online pass and,
// with_grad, dlogits for an upstream gradient of 1 while the row is still in cache.
CrossEntropyForwardBackward xent_rows(const char* op, const Tensor& logits_in, const Tensor& targets,
                                      int64_t ignore_index, LossReduction reduction, bool with_grad,
                                      double grad_scale) {
  auto [rows, v] = check_xent(op, logits_in, targets);
  std::vector<int64_t> tg;
  CrossEntropyForwardBackward out;
  // The count comes first: Mean's 1/count scales dlogits as they are written.
  out.count = read_targets(op, targets, v, ignore_index, tg);
  softmax_check::allocate_loss_outputs(out, logits_in, targets, reduction, logits_in.dtype());
  if (with_grad) out.dlogits = empty(logits_in.shape(), TensorOptions(logits_in.dtype(), logits_in.device()));
  const double scale =
      grad_scale * (reduction == LossReduction::Mean ? (out.count > 0 ? 1.0 / double(out.count) : 0.0) : 1.0);
  std::vector<double> row_loss(size_t(rows), 0.0);
  if (rows > 0) {
    Tensor logits = logits_in.contiguous();
    dispatch_float(logits.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
      const T* px = logits.data<T>();
      S* ps = out.stats.data<S>();
      T* pd = with_grad ? out.dlogits.data<T>() : nullptr;
      const T gs = T(scale);
      parallel_for(rows, row_grain(v), [&](int64_t r0, int64_t r1) {
        std::vector<T> cm(with_grad ? size_t((v + kStatChunk - 1) / kStatChunk) : 0);  // chunk maxima
        for (int64_t r = r0; r < r1; ++r) {
          T* d = with_grad ? pd + r * v : nullptr;
          const int64_t t = tg[size_t(r)];
          if (t == ignore_index) {
            ps[2 * r] = 0;
            ps[2 * r + 1] = 0;
            if (with_grad) std::fill(d, d + v, T(0));
            continue;
          }
          const T* xr = px + r * v;
          T m;
          double s;
          online_row_stats(xr, v, m, s, d, with_grad ? cm.data() : nullptr);
          const double ls = std::log(s);
          ps[2 * r] = S(m);
          ps[2 * r + 1] = S(ls);
          row_loss[size_t(r)] = (double(m) - double(xr[t])) + ls;
          if (!with_grad) continue;
          // d holds exp(x - chunk max) from the statistics pass, still in cache: the softmax
          // is one multiply per element away, exp(chunk max - m - log s), times the scale.
          for (int64_t j0 = 0, c = 0; j0 < v; j0 += kStatChunk, ++c)
            scale_in_place(d + j0, std::min(kStatChunk, v - j0),
                           T(std::exp(double(cm[size_t(c)]) - double(m) - ls) * scale));
          d[t] -= gs;
        }
      });
      if (reduction == LossReduction::None) {
        T* pl = out.loss.data<T>();
        for (int64_t r = 0; r < rows; ++r) pl[r] = T(row_loss[size_t(r)]);
      }
    });
  }
  if (reduction != LossReduction::None) {
    double total = 0;
    for (double l : row_loss) total += l;
    if (reduction == LossReduction::Mean) total = out.count > 0 ? total / double(out.count) : 0.0;
    out.loss.fill_(total);
  }
  return out;
}

}  // namespace

Tensor softmax_forward(const Tensor& x, int64_t dim) {
  check_float("softmax", "input", x);
  return along_dim("softmax", x, dim, [](const Tensor& xc) { return softmax_rows(xc, false); });
}

Tensor log_softmax_forward(const Tensor& x, int64_t dim) {
  check_float("log_softmax", "input", x);
  return along_dim("log_softmax", x, dim, [](const Tensor& xc) { return softmax_rows(xc, true); });
}

Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim) {
  check_backward("softmax_backward", dy, y);
  return along_dim2("softmax_backward", dy, y, dim,
                    [](const Tensor& g, const Tensor& yc) { return softmax_backward_rows(g, yc, false); });
}

Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim) {
  check_backward("log_softmax_backward", dy, y);
  return along_dim2("log_softmax_backward", dy, y, dim,
                    [](const Tensor& g, const Tensor& yc) { return softmax_backward_rows(g, yc, true); });
}

CrossEntropyForward cross_entropy_forward(const Tensor& logits_in, const Tensor& targets, int64_t ignore_index,
                                          LossReduction reduction) {
  CrossEntropyForwardBackward f = xent_rows("cross_entropy", logits_in, targets, ignore_index, reduction, false, 1.0);
  return {f.loss, f.stats, f.count};
}

Tensor cross_entropy_backward(const Tensor& grad_in, const Tensor& logits_in, const Tensor& targets,
                              const Tensor& stats_in, int64_t ignore_index, double scale) {
  const char* op = "cross_entropy_backward";
  auto [rows, v] = check_xent(op, logits_in, targets);
  softmax_check::check_xent_backward(op, grad_in, logits_in, targets, stats_in);
  std::vector<int64_t> tg;
  read_targets(op, targets, v, ignore_index, tg);
  Tensor dl = empty(logits_in.shape(), TensorOptions(logits_in.dtype(), logits_in.device()));
  if (rows == 0) return dl;
  Tensor logits = logits_in.contiguous(), grad = grad_in.contiguous(), stats = stats_in.contiguous();
  const bool per_row = grad.dim() != 0;
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* px = logits.data<T>();
    const T* pg = grad.data<T>();
    const S* ps = stats.data<S>();
    T* pd = dl.data<T>();
    parallel_for(rows, row_grain(v), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* d = pd + r * v;
        const int64_t t = tg[size_t(r)];
        if (t == ignore_index) {
          std::fill(d, d + v, T(0));
          continue;
        }
        const T* xr = px + r * v;
        const T m = T(ps[2 * r]);
        const T ls = T(ps[2 * r + 1]);
        const T gs = T(double(pg[per_row ? r : 0]) * scale);
        for (int64_t j = 0; j < v; ++j) d[j] = exp_nonpos(T((xr[j] - m) - ls)) * gs;
        d[t] -= gs;
      }
    });
  });
  return dl;
}

CrossEntropyForwardBackward cross_entropy_forward_backward(const Tensor& logits_in, const Tensor& targets,
                                                           int64_t ignore_index, LossReduction reduction,
                                                           double grad_scale) {
  return xent_rows("cross_entropy_forward_backward", logits_in, targets, ignore_index, reduction, true, grad_scale);
}

}  // namespace hymba::kernels::cpu
