#include "kernels/reduce.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "core/parallel.h"
#include "core/strided.h"

namespace hymba::kernels::cpu {
namespace {

using reduce_check::Group;
using reduce_check::make_plan;
using reduce_check::Plan;

// Offset of the `i`-th element of g's dims [0, ndim) in row-major order.
int64_t offset_of(const Group& g, int ndim, int64_t i) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; --d) {
    off += (i % g.shape[d]) * g.stride[d];
    i /= g.shape[d];
  }
  return off;
}

// Steps an odometer over g's dims [0, ndim) and keeps `off` in sync.
void advance(const Group& g, int ndim, int64_t* idx, int64_t& off) {
  for (int d = ndim - 1; d >= 0; --d) {
    off += g.stride[d];
    if (++idx[d] < g.shape[d]) return;
    off -= g.stride[d] * g.shape[d];
    idx[d] = 0;
  }
}

// Sum of n elements at stride s, in double. Four chains break the add latency dependency
// (and let the compiler pack them into one vector) without changing results run to run.
template <typename T>
double sum_row(const T* p, int64_t n, int64_t s) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  if (s == 1) {
    for (; i + 4 <= n; i += 4) {
      a0 += double(p[i]);
      a1 += double(p[i + 1]);
      a2 += double(p[i + 2]);
      a3 += double(p[i + 3]);
    }
    for (; i < n; ++i) a0 += double(p[i]);
  } else {
    for (; i < n; ++i) a0 += double(p[i * s]);
  }
  return (a0 + a1) + (a2 + a3);
}

constexpr int64_t kGrain = 1 << 15;     // elements of work before another thread pays off
constexpr int64_t kChunk = 1 << 16;     // elements one partial sum covers (fixed: thread-count independent)
constexpr int64_t kColBlock = 256;      // output columns one task accumulates at once

// Sets the odometer over g's dims [0, ndim) to the `i`-th position and returns its offset.
int64_t seek(const Group& g, int ndim, int64_t i, int64_t* idx) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; --d) {
    idx[d] = i % g.shape[d];
    off += idx[d] * g.stride[d];
    i /= g.shape[d];
  }
  return off;
}

// out[m] = scale * sum over the reduced group, for m over the kept group (row-major).
//
// Long reductions are cut into chunks of a fixed number of reduced elements; the chunks'
// partial sums (double) are added in chunk order afterwards. Chunking by size, not by thread,
// lets a full reduction or a bias gradient use every thread and still gives the same bits
// for any thread count.
template <typename T>
void sum_kernel(const T* x, T* out, const Group& K, const Group& R, double scale) {
  const int64_t M = K.numel, N = R.numel;
  if (M == 0) return;
  if (N == 0) {
    std::fill(out, out + M, T(0.0 * scale));  // sum 0, mean NaN
    return;
  }
  // Strategy: the reduced elements are walked in "rows" of `L` at stride `Ls`, and each step
  // adds to `width` adjacent outputs at once.
  //  - inner reduction (kept dims outside): width 1, a row is R's innermost dim (L, Ls);
  //  - outer reduction (a bias gradient: [rows, H] -> [H]): width = a block of contiguous kept
  //    columns, every reduced element is a row of its own (L = 1), added into accumulators.
  const bool columns = K.n > 0 && K.inner_stride() == 1 && (R.n == 0 || R.inner_stride() != 1);
  const int64_t cols = columns ? K.inner_size() : 1;
  const int64_t blocks = columns ? (cols + kColBlock - 1) / kColBlock : 1;
  const int64_t outer = M / cols;  // output positions that each start a task (times blocks)
  const int64_t width = std::min(cols, kColBlock);
  const int ndim_rows = columns ? R.n : R.n - 1;  // R dims iterated by the odometer
  const int64_t L = columns ? 1 : R.inner_size(), Ls = columns ? 0 : R.inner_stride();
  const int64_t rows = N / L;
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunk / (L * width));
  const int64_t C = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> partial(C > 1 ? size_t(M * C) : 0);  // [chunk][m]
  const int64_t task_work = std::min(rows, rows_per_chunk) * L * width;
  parallel_for(outer * blocks * C, std::max<int64_t>(1, kGrain / task_work), [&](int64_t t0, int64_t t1) {
    double acc[kColBlock];
    int64_t idx[kMaxDims];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c = t % C, ob = t / C, o = ob / blocks;
      const int64_t c0 = (ob % blocks) * kColBlock, nc = std::min(kColBlock, cols - c0);
      const int64_t r0 = c * rows_per_chunk, r1 = std::min(rows, r0 + rows_per_chunk);
      const T* base = x + (columns ? offset_of(K, K.n - 1, o) + c0 : offset_of(K, K.n, o));
      int64_t roff = seek(R, ndim_rows, r0, idx);
      if (columns) {
        std::fill(acc, acc + nc, 0.0);
        for (int64_t r = r0; r < r1; ++r) {
          const T* p = base + roff;
          for (int64_t j = 0; j < nc; ++j) acc[j] += double(p[j]);
          advance(R, ndim_rows, idx, roff);
        }
      } else {
        acc[0] = 0;
        for (int64_t r = r0; r < r1; ++r) {
          acc[0] += sum_row(base + roff, L, Ls);
          advance(R, ndim_rows, idx, roff);
        }
      }
      const int64_t m0 = o * cols + c0;
      for (int64_t j = 0; j < nc; ++j) {
        if (C > 1)
          partial[size_t(c * M + m0 + j)] = acc[j];
        else
          out[m0 + j] = T(acc[j] * scale);
      }
    }
  });
  if (C > 1) {
    parallel_for(M, std::max<int64_t>(1, kGrain / C), [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        double a = 0;
        for (int64_t c = 0; c < C; ++c) a += partial[size_t(c * M + m)];
        out[m] = T(a * scale);
      }
    });
  }
}

Tensor sum_or_mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool mean, const char* op) {
  Plan p = make_plan(x, dims, keepdim, op);
  Tensor out = empty(p.out_shape, TensorOptions(x.dtype(), x.device()));
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const double scale = mean ? 1.0 / double(p.red.numel) : 1.0;
    sum_kernel<T>(static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()), p.kept, p.red, scale);
  });
  return out;
}

template <typename T>
bool better(T v, T best) {
  return v > best || (std::isnan(v) && !std::isnan(best));
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, false, "sum");
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, true, "mean");
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  Plan p = make_plan(x, {dim}, keepdim, "max");
  const int64_t d = wrap_dim(dim, x.dim(), "max");
  const int64_t L = x.dim() ? x.shape()[d] : 1, Ls = x.dim() ? x.strides()[d] : 0;
  HYMBA_CHECK(L > 0, "max: cannot reduce dim ", dim, " of size 0 in ", x.meta_str());
  Tensor values = empty(p.out_shape, TensorOptions(x.dtype(), x.device()));
  Tensor indices = empty(p.out_shape, TensorOptions(DType::I64, x.device()));
  const Group& K = p.kept;
  const int64_t M = K.numel;
  if (M == 0) return {values, indices};
  dispatch_float(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    if (K.n > 0 && K.inner_stride() == 1 && Ls != 1) {
      // Max over an outer dim: scan it once per block of contiguous columns.
      const int64_t cols = K.inner_size(), outer = M / cols;
      const int64_t blocks = (cols + kColBlock - 1) / kColBlock;
      parallel_for(outer * blocks, std::max<int64_t>(1, kGrain / (L * std::min(cols, kColBlock))),
                   [&](int64_t t0, int64_t t1) {
                     for (int64_t t = t0; t < t1; ++t) {
                       const int64_t o = t / blocks, c0 = (t % blocks) * kColBlock;
                       const int64_t nc = std::min(kColBlock, cols - c0);
                       const T* base = xp + offset_of(K, K.n - 1, o) + c0;
                       T* bv = vp + o * cols + c0;
                       int64_t* bi = ip + o * cols + c0;
                       for (int64_t j = 0; j < nc; ++j) {
                         bv[j] = base[j];
                         bi[j] = 0;
                       }
                       for (int64_t i = 1; i < L; ++i) {
                         const T* row = base + i * Ls;
                         for (int64_t j = 0; j < nc; ++j)
                           if (better(row[j], bv[j])) {
                             bv[j] = row[j];
                             bi[j] = i;
                           }
                       }
                     }
                   });
      return;
    }
    parallel_for(M, std::max<int64_t>(1, kGrain / L), [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        const T* row = xp + offset_of(K, K.n, m);
        T best = row[0];
        int64_t bi = 0;
        for (int64_t i = 1; i < L; ++i)
          if (better(row[i * Ls], best)) {
            best = row[i * Ls];
            bi = i;
          }
        vp[m] = best;
        ip[m] = bi;
      }
    });
  });
  return {values, indices};
}

Tensor sum_backward(const Tensor& grad, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim,
                    double scale) {
  const char* op = "sum_backward";
  const Shape ks = reduce_check::check_sum_grad(op, grad, in_shape, dims);
  (void)keepdim;  // with or without keepdim the elements are the same, in the same order
  Tensor g = grad.detach().reshape(ks);
  Tensor out = empty(in_shape, TensorOptions(grad.dtype(), grad.device()));
  Shape gs = broadcast_strides(g, in_shape, op);
  auto L = make_layout<2>(in_shape, {&out.strides(), &gs});
  dispatch_float(grad.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = out.data<T>();
    const T* gp = static_cast<const T*>(g.data_ptr());
    for_each_row<2>(L, kGrain, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& in) {
      T* q = o + off[0];
      const T* p = gp + off[1];
      if (in[1] == 0) {
        const T v = T(double(p[0]) * scale);
        for (int64_t i = 0; i < n; ++i) q[i * in[0]] = v;
      } else {
        for (int64_t i = 0; i < n; ++i) q[i * in[0]] = T(double(p[i * in[1]]) * scale);
      }
    });
  });
  return out;
}

Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& in_shape, int64_t dim, bool keepdim) {
  const char* op = "max_backward";
  const int64_t nd = int64_t(in_shape.size());
  const reduce_check::MaxGradDims md = reduce_check::check_max_grad(op, grad, indices, in_shape, dim);
  const int64_t d = md.dim;
  const Shape& ks = md.keepdim_shape;
  (void)keepdim;
  Tensor g = grad.detach().reshape(ks), ix = indices.detach().reshape(ks);
  Tensor out = zeros(in_shape, TensorOptions(grad.dtype(), grad.device()));
  if (out.numel() == 0) return out;
  const int64_t dstride = nd ? out.strides()[size_t(d)] : 0, L = nd ? in_shape[size_t(d)] : 1;
  // The layout runs over the reduced shape; `out`'s stride on the reduced dim is unused there.
  std::atomic<bool> bad{false};
  auto Lay = make_layout<3>(ks, {&out.strides(), &g.strides(), &ix.strides()});
  dispatch_float(grad.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = out.data<T>();
    const T* gp = static_cast<const T*>(g.data_ptr());
    const int64_t* ip = static_cast<const int64_t*>(ix.data_ptr());
    for_each_row<3>(Lay, kGrain, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& in) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = ip[off[2] + i * in[2]];
        if (k < 0 || k >= L) {  // no throwing inside a parallel region: report after it
          bad.store(true, std::memory_order_relaxed);
          continue;
        }
        o[off[0] + i * in[0] + k * dstride] = gp[off[1] + i * in[1]];
      }
    });
  });
  HYMBA_CHECK(!bad.load(), op, ": an index is out of range for dim ", d, " of size ", L);
  return out;
}

}  // namespace hymba::kernels::cpu
