#include "kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace hymba::kernels::cpu {
namespace {

// Rows are handed to threads in chunks of at least this many elements.
constexpr int64_t kGrain = 1 << 14;
// dw is reduced over at most this many row blocks. The block count depends only on the
// shape (never on the thread count), which is what makes dw deterministic; the cap bounds
// the partial-sum buffer at kMaxBlocks * D doubles however many rows there are.
constexpr int64_t kMaxBlocks = 64;

bool cpu_norm_dtype(DType t) { return t == DType::F32 || t == DType::F64; }

void check_inputs(const char* op, const Tensor& x, const Tensor& w) {
  norm_check::check_inputs(op, x, w, cpu_norm_dtype, "here, expected f32 or f64");
}

// Row reductions, accumulated in double. Kept as separate functions: inlined into the
// parallel loops below, GCC left some of these omp simd reductions scalar.
template <typename T>
[[gnu::noinline]] double sum_squares(const T* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(x[j]) * double(x[j]);
  return s;
}

// Products are formed in T (one or two roundings per term) and summed in double.
template <typename T>
[[gnu::noinline]] double dot3(const T* a, const T* b, const T* c, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(a[j] * b[j] * c[j]);
  return s;
}

}  // namespace

std::tuple<Tensor, Tensor> rms_norm_forward(const Tensor& x_in, const Tensor& w_in, double eps) {
  const char* op = "rms_norm";
  check_inputs(op, x_in, w_in);
  const norm_check::ForwardPlan plan = norm_check::plan_forward(op, x_in, eps);
  const int64_t d = plan.d, rows = plan.rows;
  Tensor y = plan.y, rstd = plan.rstd;
  if (rows == 0) return {y, rstd};
  Tensor x = x_in.contiguous(), w = w_in.contiguous();
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;  // rstd's type
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    T* py = y.data<T>();
    S* pr = rstd.data<S>();
    parallel_for(rows, std::max<int64_t>(1, kGrain / d), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * d;
        T* yr = py + r * d;
        const double ss = sum_squares(xr, d);
        const double rs = 1.0 / std::sqrt(ss / double(d) + eps);
        pr[r] = S(rs);
        const T rt = T(rs);
        for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * rt * pw[j];
      }
    });
  });
  return {y, rstd};
}

std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& w_in,
                                             const Tensor& rstd_in, bool need_dx, bool need_dw) {
  const char* op = "rms_norm_backward";
  check_inputs(op, x_in, w_in);
  norm_check::check_backward(op, dy_in, x_in, rstd_in);
  const norm_check::BackwardPlan plan = norm_check::plan_backward(x_in, need_dx, need_dw);
  const int64_t d = plan.d, rows = plan.rows;
  Tensor dx = plan.dx, dw = plan.dw;
  if (plan.done) return {dx, dw};
  Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous(), rstd = rstd_in.contiguous();

  const int64_t nblocks = std::min(kMaxBlocks, rows);
  std::vector<double> partial(need_dw ? size_t(nblocks * d) : 0);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pdy = dy.data<T>();
    const S* pr = rstd.data<S>();
    T* pdx = need_dx ? dx.data<T>() : nullptr;
    const double inv_d = 1.0 / double(d);
    // Blocks are contiguous row ranges; threads take whole blocks.
    int64_t block_grain = std::max<int64_t>(1, kGrain / (d * std::max<int64_t>(1, rows / nblocks)));
    parallel_for(nblocks, block_grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r_begin = rows * b / nblocks, r_end = rows * (b + 1) / nblocks;
        double* acc = need_dw ? partial.data() + b * d : nullptr;
        if (acc) std::fill(acc, acc + d, 0.0);
        for (int64_t r = r_begin; r < r_end; ++r) {
          const T* xr = px + r * d;
          const T* gr = pdy + r * d;
          const double rs = double(pr[r]);
          // One pass for the row's dot product, one for dx and the dw partials together.
          const double dot = pdx ? dot3(pw, gr, xr, d) : 0.0;
          const T a = T(rs);
          const T c = T(rs * rs * rs * dot * inv_d);
          T* dxr = pdx ? pdx + r * d : nullptr;
          if (dxr && acc) {
            for (int64_t j = 0; j < d; ++j) {
              dxr[j] = a * pw[j] * gr[j] - c * xr[j];
              acc[j] += double(gr[j] * xr[j]) * rs;
            }
          } else if (dxr) {
            for (int64_t j = 0; j < d; ++j) dxr[j] = a * pw[j] * gr[j] - c * xr[j];
          } else {
            for (int64_t j = 0; j < d; ++j) acc[j] += double(gr[j] * xr[j]) * rs;
          }
        }
      }
    });
    if (need_dw) {
      T* pdw = dw.data<T>();
      // Blocks are summed in index order for every column: the thread split is over columns.
      parallel_for(d, std::max<int64_t>(1, kGrain / nblocks), [&](int64_t j0, int64_t j1) {
        std::vector<double> sum(size_t(j1 - j0), 0.0);
        for (int64_t b = 0; b < nblocks; ++b) {
          const double* p = partial.data() + b * d + j0;
          for (int64_t k = 0; k < j1 - j0; ++k) sum[k] += p[k];
        }
        for (int64_t k = 0; k < j1 - j0; ++k) pdw[j0 + k] = T(sum[k]);
      });
    }
  });
  return {dx, dw};
}

}  // namespace hymba::kernels::cpu
