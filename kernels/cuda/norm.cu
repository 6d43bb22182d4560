// RMSNorm on CUDA (kernels/norm.h): the CPU kernel's semantics with one block per row.
//
// Forward: one block per row reduces sum(x^2) in the compute type (fp32, f64 for f64 rows),
// forms rstd in double as the CPU does, stores it (f32, f64 for f64) and writes y.
// Backward: a fixed number of blocks (kDwBlocks, or one per row when dw is not needed), each
// owning a contiguous range of rows; per row one block reduction for mean(w*dy*x), then dx.
// dw is deterministic without float atomics: every block accumulates its rows' dy*x*rstd
// into its own row of a (blocks, D) buffer (each thread owns fixed columns), and a second
// kernel adds the buffer's rows per column in block order. Rows are read with 16-byte
// vectors when D and the pointers allow it. When a row is at most cached_items() items per
// thread (D up to 8k bf16 / 8k f32 on the vector path), each thread keeps its items of x and
// dy in registers between the reduction and the dx pass (x and dy are read once), loads its
// columns of w once per block, and sums its dw columns in registers, writing its partial row
// once at the end instead of updating it in memory for every row.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/norm.h"

namespace hymba::kernels::cuda {
namespace {

constexpr int kMaxThreads = 512;
// Row ranges that dw is reduced over: fixed, so dw's summation order depends only on the
// shape, never on the GPU model. Bounds the partial buffer at kDwBlocks * D values.
constexpr int64_t kDwBlocks = 512;
// Items (16-byte vectors, or elements off the vector path) per thread that the register
// backward holds: bounds its register use (no spills at 512 threads; 4 bf16 vectors spill).
template <typename T> constexpr int cached_items() { return Vec16<T>::kN >= 8 ? 2 : 4; }

using norm_check::stat_dtype;

bool cuda_norm_dtype(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

void check_inputs(const char* op, const Tensor& x, const Tensor& w) {
  if (x.defined()) check_cuda_tensor(op, "x", x);
  norm_check::check_inputs(op, x, w, cuda_norm_dtype, "on CUDA, expected f32, f64 or bf16");
}

// Loads element j (scalar path) or vector j (vector path) of a row as compute-type values.
template <typename T, int kN>
__device__ __forceinline__ void load_items(const T* row, int64_t j, bool vec, acc_t<T> (&out)[kN]) {
  if (vec) {
    const Vec16<T> v = reinterpret_cast<const Vec16<T>*>(row)[j];
#pragma unroll
    for (int k = 0; k < kN; ++k) out[k] = load_acc(v.v[k]);
  } else {
    out[0] = load_acc(row[j]);
  }
}

template <typename T, int kN>
__device__ __forceinline__ void store_items(T* row, int64_t j, bool vec, const acc_t<T> (&in)[kN]) {
  if (vec) {
    Vec16<T> v;
#pragma unroll
    for (int k = 0; k < kN; ++k) v.v[k] = store_acc<T>(in[k]);
    reinterpret_cast<Vec16<T>*>(row)[j] = v;
  } else {
    row[j] = store_acc<T>(in[0]);
  }
}

// Item i's values to a compute-type row (the dw partial sums): kN of them on the vector
// path, in[0] alone otherwise.
template <typename A, int kN>
__device__ __forceinline__ void store_acc_items(A* row, int64_t i, bool vec, const A (&in)[kN]) {
  if (vec) {
#pragma unroll
    for (int e = 0; e < kN; ++e) row[i * kN + e] = in[e];
  } else {
    row[i] = in[0];
  }
}

// One block per row. `items` is D / kN on the vector path, D otherwise; `width` is the
// number of values per item (kN or 1).
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    rms_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, acc_t<T>* __restrict__ rstd,
                       int64_t d, double eps, bool vec) {
  using A = acc_t<T>;
  constexpr int kN = Vec16<T>::kN;
  __shared__ A scratch[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * d;
  T* yr = y + r * d;
  const int64_t items = vec ? d / kN : d;
  const int width = vec ? kN : 1;
  A ss = 0;
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    A xv[kN];
    load_items<T, kN>(xr, i, vec, xv);
    for (int k = 0; k < kN && k < width; ++k) ss += xv[k] * xv[k];
  }
  ss = block_sum(ss, scratch);
  // As the CPU: the statistic itself is formed in double from the row sum.
  const double rs = 1.0 / sqrt(double(ss) / double(d) + eps);
  if (threadIdx.x == 0) rstd[r] = A(rs);
  const A rt = A(rs);
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    A xv[kN], wv[kN], out[kN];
    load_items<T, kN>(xr, i, vec, xv);
    load_items<T, kN>(w, i, vec, wv);
    for (int k = 0; k < kN && k < width; ++k) out[k] = xv[k] * rt * wv[k];
    store_items<T, kN>(yr, i, vec, out);
  }
}

// Block b owns rows [rows * b / nblocks, rows * (b + 1) / nblocks). dx (may be null) gets
// every owned row; partial (may be null) gets row b of the (nblocks, D) dw partial sums.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    rms_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                        const acc_t<T>* __restrict__ rstd, T* __restrict__ dx, acc_t<T>* __restrict__ partial,
                        int64_t rows, int64_t d, int64_t nblocks, bool vec) {
  using A = acc_t<T>;
  constexpr int kN = Vec16<T>::kN;
  __shared__ A scratch[32];
  const int64_t b = blockIdx.x;
  const int64_t r_begin = rows * b / nblocks, r_end = rows * (b + 1) / nblocks;
  const int64_t items = vec ? d / kN : d;
  const int width = vec ? kN : 1;
  A* acc = partial ? partial + b * d : nullptr;
  // Each thread only ever touches the columns of its own items, so no barrier is needed
  // between these zeros and the additions below.
  if (acc) {
    for (int64_t i = threadIdx.x; i < items; i += blockDim.x)
      for (int k = 0; k < kN && k < width; ++k) acc[i * width + k] = A(0);
  }
  const double inv_d = 1.0 / double(d);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    const double rs = double(rstd[r]);
    A dot = 0;
    if (dx) {  // uniform over the block: block_sum's barriers are reached by every thread
      for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
        A xv[kN], gv[kN], wv[kN];
        load_items<T, kN>(xr, i, vec, xv);
        load_items<T, kN>(gr, i, vec, gv);
        load_items<T, kN>(w, i, vec, wv);
        for (int k = 0; k < kN && k < width; ++k) dot += wv[k] * gv[k] * xv[k];
      }
      dot = block_sum(dot, scratch);
    }
    const A a = A(rs);
    const A c = A(rs * rs * rs * double(dot) * inv_d);
    for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
      A xv[kN], gv[kN];
      load_items<T, kN>(xr, i, vec, xv);
      load_items<T, kN>(gr, i, vec, gv);
      if (dx) {
        A wv[kN], out[kN];
        load_items<T, kN>(w, i, vec, wv);
        for (int k = 0; k < kN && k < width; ++k) out[k] = a * wv[k] * gv[k] - c * xv[k];
        store_items<T, kN>(dx + r * d, i, vec, out);
      }
      if (acc) {
        for (int k = 0; k < kN && k < width; ++k) acc[i * width + k] += gv[k] * xv[k] * a;
      }
    }
  }
}

// Item i of a row as raw storage: a whole vector, or element i in slot 0 (the other slots
// zero) off the vector path.
template <typename T>
__device__ __forceinline__ Vec16<T> load_raw(const T* row, int64_t i, bool vec) {
  if (vec) return reinterpret_cast<const Vec16<T>*>(row)[i];
  Vec16<T> v;
  v.v[0] = row[i];
#pragma unroll
  for (int e = 1; e < Vec16<T>::kN; ++e) v.v[e] = store_acc<T>(acc_t<T>(0));
  return v;
}

// rms_backward_kernel for rows of at most blockDim.x * kItems items: thread k's items are
// threadIdx.x + q * blockDim.x (q < kItems), the same columns for every row, so x, dy and w
// stay in registers and dw is summed there. The same arithmetic, in the same order per
// element, as rms_backward_kernel.
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads)
    rms_backward_cached_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                               const acc_t<T>* __restrict__ rstd, T* __restrict__ dx, acc_t<T>* __restrict__ partial,
                               int64_t rows, int64_t d, int64_t nblocks, bool vec) {
  using A = acc_t<T>;
  constexpr int kN = Vec16<T>::kN;
  __shared__ A scratch[32];
  const int64_t b = blockIdx.x;
  const int64_t r_begin = rows * b / nblocks, r_end = rows * (b + 1) / nblocks;
  const int64_t items = vec ? d / kN : d;
  const int width = vec ? kN : 1;
  Vec16<T> wv[kItems];
  A acc[kItems][kN];
#pragma unroll
  for (int q = 0; q < kItems; ++q) {
    const int64_t i = threadIdx.x + int64_t(q) * blockDim.x;
    if (i < items) wv[q] = load_raw(w, i, vec);
#pragma unroll
    for (int e = 0; e < kN; ++e) acc[q][e] = A(0);
  }
  const double inv_d = 1.0 / double(d);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    Vec16<T> xv[kItems], gv[kItems];
#pragma unroll
    for (int q = 0; q < kItems; ++q) {
      const int64_t i = threadIdx.x + int64_t(q) * blockDim.x;
      if (i < items) {
        xv[q] = load_raw(xr, i, vec);
        gv[q] = load_raw(gr, i, vec);
      }
    }
    const double rs = double(rstd[r]);
    A dot = 0;
    if (dx) {  // uniform over the block: block_sum's barriers are reached by every thread
#pragma unroll
      for (int q = 0; q < kItems; ++q) {
        const int64_t i = threadIdx.x + int64_t(q) * blockDim.x;
        if (i < items) {
#pragma unroll
          for (int e = 0; e < kN; ++e)
            if (e < width) dot += load_acc(wv[q].v[e]) * load_acc(gv[q].v[e]) * load_acc(xv[q].v[e]);
        }
      }
      dot = block_sum(dot, scratch);
    }
    const A a = A(rs);
    const A c = A(rs * rs * rs * double(dot) * inv_d);
#pragma unroll
    for (int q = 0; q < kItems; ++q) {
      const int64_t i = threadIdx.x + int64_t(q) * blockDim.x;
      if (i >= items) continue;
      if (dx) {
        A out[kN];
#pragma unroll
        for (int e = 0; e < kN; ++e)
          out[e] = a * load_acc(wv[q].v[e]) * load_acc(gv[q].v[e]) - c * load_acc(xv[q].v[e]);
        store_items<T, kN>(dx + r * d, i, vec, out);
      }
      if (partial) {
#pragma unroll
        for (int e = 0; e < kN; ++e)
          if (e < width) acc[q][e] += load_acc(gv[q].v[e]) * load_acc(xv[q].v[e]) * a;
      }
    }
  }
  if (partial) {
    A* prow = partial + b * d;
#pragma unroll
    for (int q = 0; q < kItems; ++q) {
      const int64_t i = threadIdx.x + int64_t(q) * blockDim.x;
      if (i < items) store_acc_items(prow, i, vec, acc[q]);
    }
  }
}

// dw[j] = sum over b of partial[b, j], in b order.
template <typename T>
__global__ void column_sum_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ dw, int64_t nblocks,
                                  int64_t d) {
  using A = acc_t<T>;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < d; j += step) {
    A s = 0;
    for (int64_t b = 0; b < nblocks; ++b) s += partial[b * d + j];
    dw[j] = store_acc<T>(s);
  }
}

}  // namespace

std::tuple<Tensor, Tensor> rms_norm_forward(const Tensor& x_in, const Tensor& w_in, double eps) {
  const char* op = "rms_norm";
  check_inputs(op, x_in, w_in);
  const norm_check::ForwardPlan plan = norm_check::plan_forward(op, x_in, eps);
  const int64_t d = plan.d, rows = plan.rows;
  Tensor y = plan.y, rstd = plan.rstd;
  if (rows == 0) return {y, rstd};
  hymba::cuda::DeviceGuard guard(x_in.device().index);
  Tensor x = x_in.contiguous(), w = w_in.contiguous();
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int kN = Vec16<T>::kN;
    const T* px = ptr_of<const T>(x);
    const T* pw = ptr_of<const T>(w);
    T* py = ptr_of<T>(y);
    const bool vec = d % kN == 0 && aligned16(px) && aligned16(pw) && aligned16(py);
    const int threads = row_block_threads(vec ? d / kN : d, 1, kMaxThreads);
    rms_forward_kernel<T><<<unsigned(rows), threads, 0, stream()>>>(px, pw, py, ptr_of<A>(rstd), d, eps, vec);
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", x_in.meta_str());
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
  hymba::cuda::DeviceGuard guard(x_in.device().index);
  Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous(), rstd = rstd_in.contiguous();
  // Without dw every row is independent: one block per row keeps the whole GPU busy.
  const int64_t nblocks = need_dw ? std::min(kDwBlocks, rows) : rows;
  Tensor partial;
  if (need_dw) partial = empty({nblocks, d}, TensorOptions(stat_dtype(x_in.dtype()), x_in.device()));
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int kN = Vec16<T>::kN;
    const T* px = ptr_of<const T>(x);
    const T* pw = ptr_of<const T>(w);
    const T* pdy = ptr_of<const T>(dy);
    T* pdx = need_dx ? ptr_of<T>(dx) : nullptr;
    A* pp = need_dw ? ptr_of<A>(partial) : nullptr;
    const bool vec = d % kN == 0 && aligned16(px) && aligned16(pw) && aligned16(pdy) && (!pdx || aligned16(pdx));
    const int64_t items = vec ? d / kN : d;
    const int threads = row_block_threads(items, 1, kMaxThreads);
    if (items <= int64_t(threads) * cached_items<T>()) {
      rms_backward_cached_kernel<T, cached_items<T>()><<<unsigned(nblocks), threads, 0, stream()>>>(
          pdy, px, pw, ptr_of<const A>(rstd), pdx, pp, rows, d, nblocks, vec);
    } else {
      rms_backward_kernel<T><<<unsigned(nblocks), threads, 0, stream()>>>(pdy, px, pw, ptr_of<const A>(rstd), pdx,
                                                                            pp, rows, d, nblocks, vec);
    }
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", x_in.meta_str());
    if (need_dw) {
      column_sum_kernel<T><<<grid_for(d, 256), 256, 0, stream()>>>(pp, ptr_of<T>(dw), nblocks, d);
      HYMBA_CUDA_CHECK_LAUNCH(op, " dw ", x_in.meta_str());
    }
  });
  return {dx, dw};
}

}  // namespace hymba::kernels::cuda
