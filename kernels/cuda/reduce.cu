// Reductions on CUDA (kernels/reduce.h): sum / mean over dims, max with indices along a dim,
// and their backwards.
//
// Deterministic: no atomics. Every sum is a fixed-order computation that depends only on the
// shapes - each thread adds its elements in index order, then a fixed shuffle tree combines
// the threads - so a run gives the same bits every time on every GPU. Accumulation is fp32
// for f32/bf16/f16 (f64 for f64).
//
// Two layouts, as on the CPU:
//  - rows: the reduced elements of one output are spread over a group of threads (a warp
//    for short rows, the block for long ones) which then reduce with shuffles;
//  - columns (the kept dims are innermost and contiguous, the reduced ones outside: a bias
//    gradient [rows, H] -> [H]): one thread per output column walks the reduced rows, so
//    neighbouring threads read neighbouring addresses.
// When there are too few outputs to fill the GPU, the reduced range is cut into a number of
// chunks fixed by the shape; chunk sums go to an fp32 buffer and a second kernel adds them in
// chunk order.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace hymba::kernels::cuda {
namespace {

using reduce_check::Group;
using reduce_check::Plan;

// Device offsets of a group's elements in row-major order.
StridedIndexer<int64_t, 1> indexer(const Group& g) {
  StridedIndexer<int64_t, 1> ix{};
  ix.ndim = g.n;
  for (int d = 0; d < g.n; ++d) {
    ix.shape[d] = g.shape[d];
    ix.strides[0][d] = g.stride[d];
  }
  return ix;
}

Plan make_plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  HYMBA_CHECK(x.defined(), op, ": undefined input");
  check_cuda_tensor(op, "input", x);
  return reduce_check::make_plan(x, dims, keepdim, op);
}

// Offset of element j of a group; one multiply for the common one-dim group.
__device__ __forceinline__ int64_t group_offset(const StridedIndexer<int64_t, 1>& g, int64_t j) {
  if (g.ndim == 0) return 0;
  if (g.ndim == 1) return j * g.strides[0][0];
  int64_t off[1];
  g.get(j, off);
  return off[0];
}

template <typename A> __device__ __forceinline__ A warp_sum_t(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block, valid in every thread; scratch holds 32 values. Call from all threads.
template <typename A> __device__ __forceinline__ A block_sum_t(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum_t(v);
  __syncthreads();  // scratch may still be read by the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : A(0);
  return warp_sum_t(v);
}

constexpr int kThreads = 256;

template <typename T> struct SumArgs {
  const T* x;
  T* out;             // final results, when chunks == 1
  acc_t<T>* partial;  // [M][chunks] chunk sums, when chunks > 1
  StridedIndexer<int64_t, 1> kept, red;
  int64_t M, N, chunks, chunk;  // chunk: reduced elements per chunk
  acc_t<T> scale;
};

// Rows: task t = (output m, chunk c) is summed by a group of `group` threads (32 or the
// block), groups taking tasks in a grid-stride loop.
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_rows_kernel(SumArgs<T> a, int group) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const int per_block = blockDim.x / group;
  const int g = threadIdx.x / group, lane = threadIdx.x % group;
  const int64_t tasks = a.M * a.chunks;
  // Every thread of the block runs the same number of iterations (block_sum_t synchronizes).
  for (int64_t t0 = int64_t(blockIdx.x) * per_block; t0 < tasks; t0 += int64_t(gridDim.x) * per_block) {
    const int64_t t = t0 + g;
    A acc = A(0);
    if (t < tasks) {
      const int64_t m = t / a.chunks, c = t % a.chunks;
      const T* base = a.x + group_offset(a.kept, m);
      const int64_t j1 = a.N < (c + 1) * a.chunk ? a.N : (c + 1) * a.chunk;
      for (int64_t j = c * a.chunk + lane; j < j1; j += group) acc += load_acc(base[group_offset(a.red, j)]);
    }
    acc = group == 32 ? warp_sum_t(acc) : block_sum_t(acc, scratch);
    if (t < tasks && lane == 0) {
      if (a.chunks > 1)
        a.partial[t] = acc;
      else
        a.out[t] = store_acc<T>(acc * a.scale);
    }
  }
}

// Columns: thread = output m (consecutive m are consecutive addresses), blockIdx.y = chunk of
// the reduced rows, walked in order.
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_cols_kernel(SumArgs<T> a) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.y; c < a.chunks; c += gridDim.y) {
    const int64_t r1 = a.N < (c + 1) * a.chunk ? a.N : (c + 1) * a.chunk;
    for (int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; m < a.M; m += int64_t(gridDim.x) * blockDim.x) {
      const T* base = a.x + group_offset(a.kept, m);
      A acc = A(0);
      for (int64_t r = c * a.chunk; r < r1; ++r) acc += load_acc(base[group_offset(a.red, r)]);
      if (a.chunks > 1)
        a.partial[m * a.chunks + c] = acc;
      else
        a.out[m] = store_acc<T>(acc * a.scale);
    }
  }
}

// out[m] = scale * sum of partial[m][0..chunks), one warp per output, fixed order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(const acc_t<T>* partial, T* out, int64_t M, int64_t chunks, acc_t<T> scale) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  // Uniform trip count per warp: the shuffle needs all 32 lanes.
  for (int64_t m = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); m < M; m += warps) {
    A acc = A(0);
    for (int64_t c = lane; c < chunks; c += 32) acc += partial[m * chunks + c];
    acc = warp_sum_t(acc);
    if (lane == 0) out[m] = store_acc<T>(acc * scale);
  }
}

// Chunk counts from the shape alone (never from the device), so results do not depend on
// the GPU model.
constexpr int64_t kRowChunkMin = 8192;  // reduced elements per row chunk, at least
constexpr int64_t kColChunkMin = 32;    // reduced rows per column chunk, at least

Tensor sum_or_mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool mean, const char* op) {
  Plan p = make_plan(x, dims, keepdim, op);
  HYMBA_CHECK(is_floating(x.dtype()), op, ": expected a float dtype, got ", x.meta_str());
  Tensor out = empty(p.out_shape, TensorOptions(x.dtype(), x.device()));
  const int64_t M = p.kept.numel, N = p.red.numel;
  const double scale = mean ? 1.0 / double(N) : 1.0;
  if (M == 0) return out;
  if (N == 0) {
    out.fill_(0.0 * scale);  // sum 0, mean NaN, as the CPU
    return out;
  }
  ::hymba::cuda::DeviceGuard guard(x.device().index);
  const bool columns = p.kept.n > 0 && p.kept.inner_stride() == 1 && (p.red.n == 0 || p.red.inner_stride() != 1);
  int64_t chunks = 1;
  if (columns) {
    if (M < 65536) chunks = std::clamp<int64_t>(std::min(ceil_div(N, kColChunkMin), 65536 / M), 1, 4096);
  } else {
    if (M < 1024) chunks = std::clamp<int64_t>(ceil_div(N, kRowChunkMin), 1, 1024);
  }
  const int64_t chunk = ceil_div(N, chunks);
  chunks = ceil_div(N, chunk);  // no empty chunk
  dispatch_cuda_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    Tensor partial;
    SumArgs<T> a{};
    a.x = ptr_of<const T>(x);
    a.out = ptr_of<T>(out);
    if (chunks > 1) {
      partial = empty({M * chunks}, TensorOptions(std::is_same_v<A, double> ? DType::F64 : DType::F32, x.device()));
      a.partial = ptr_of<A>(partial);
    }
    a.kept = indexer(p.kept);
    a.red = indexer(p.red);
    a.M = M;
    a.N = N;
    a.chunks = chunks;
    a.chunk = chunk;
    a.scale = A(scale);
    if (columns) {
      const dim3 grid(grid_for(M, kThreads), unsigned(std::min<int64_t>(chunks, 65535)));
      sum_cols_kernel<T><<<grid, kThreads, 0, stream()>>>(a);
    } else {
      const int group = chunk <= 1024 ? 32 : kThreads;
      const int per_block = kThreads / group;
      sum_rows_kernel<T><<<grid_for(ceil_div(M * chunks, per_block), 1), kThreads, 0, stream()>>>(a, group);
    }
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", x.meta_str());
    if (chunks > 1) {
      finish_kernel<T><<<grid_for(M, kThreads / 32), kThreads, 0, stream()>>>(a.partial, a.out, M, chunks, a.scale);
      HYMBA_CUDA_CHECK_LAUNCH(op, " (chunk sums) ", x.meta_str());
    }
  });
  return out;
}

// ---------------------------------------------------------------- max

template <typename A> struct Best {
  A v;
  int64_t i;
};

// The first maximum, a NaN beating any number (the first NaN): associative, so any tree
// of combines gives the CPU's sequential answer.
template <typename A> __device__ __forceinline__ Best<A> better_of(Best<A> a, Best<A> b) {
  const bool an = ::isnan(a.v), bn = ::isnan(b.v);
  if (an != bn) return an ? a : b;
  if (!an) {
    if (a.v > b.v) return a;
    if (b.v > a.v) return b;
  }
  return a.i <= b.i ? a : b;
}

template <typename T> struct MaxArgs {
  const T* x;
  T* values;
  int64_t* indices;
  StridedIndexer<int64_t, 1> kept;
  int64_t M, L, Ls;  // outputs, reduced length and its stride
};

// One warp per output; lanes scan strided subsets in order, then combine by shuffles.
template <typename T>
__global__ void __launch_bounds__(kThreads) max_rows_kernel(MaxArgs<T> a) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t m = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); m < a.M; m += warps) {
    const T* row = a.x + group_offset(a.kept, m);
    Best<A> b{A(-INFINITY), INT64_MAX};
    for (int64_t i = lane; i < a.L; i += 32) b = better_of(b, Best<A>{load_acc(row[i * a.Ls]), i});
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      Best<A> other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
      b = better_of(b, other);
    }
    if (lane == 0) {
      a.values[m] = store_acc<T>(b.v);
      a.indices[m] = b.i;
    }
  }
}

// Columns: one thread per output, scanning the reduced dim in order (the CPU's loop).
template <typename T>
__global__ void __launch_bounds__(kThreads) max_cols_kernel(MaxArgs<T> a) {
  using A = acc_t<T>;
  for (int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; m < a.M; m += int64_t(gridDim.x) * blockDim.x) {
    const T* col = a.x + group_offset(a.kept, m);
    Best<A> b{load_acc(col[0]), 0};
    for (int64_t i = 1; i < a.L; ++i) b = better_of(b, Best<A>{load_acc(col[i * a.Ls]), i});
    a.values[m] = store_acc<T>(b.v);
    a.indices[m] = b.i;
  }
}

// ---------------------------------------------------------------- max backward

// out[off0 + k * dstride] = g[off1] with k = indices[off2], over the reduced shape; a k out
// of range sets *bad instead of writing.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_backward_kernel(T* out, const T* g, const int64_t* idx, StridedIndexer<int64_t, 3> ix, int64_t n, int64_t L,
                        int64_t dstride, int* bad) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    ix.get(i, off);
    const int64_t k = idx[off[2]];
    if (k < 0 || k >= L) {
      *bad = 1;
      continue;
    }
    out[off[0] + k * dstride] = g[off[1]];
  }
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
  HYMBA_CHECK(is_floating(x.dtype()), "max: expected a float dtype, got ", x.meta_str());
  const int64_t d = wrap_dim(dim, x.dim(), "max");
  const int64_t L = x.dim() ? x.shape()[size_t(d)] : 1, Ls = x.dim() ? x.strides()[size_t(d)] : 0;
  HYMBA_CHECK(L > 0, "max: cannot reduce dim ", dim, " of size 0 in ", x.meta_str());
  Tensor values = empty(p.out_shape, TensorOptions(x.dtype(), x.device()));
  Tensor indices = empty(p.out_shape, TensorOptions(DType::I64, x.device()));
  const int64_t M = p.kept.numel;
  if (M == 0) return {values, indices};
  ::hymba::cuda::DeviceGuard guard(x.device().index);
  const bool columns = p.kept.n > 0 && p.kept.inner_stride() == 1 && Ls != 1;
  dispatch_cuda_float(x.dtype(), "max", [&](auto tag) {
    using T = decltype(tag);
    MaxArgs<T> a{ptr_of<const T>(x), ptr_of<T>(values), ptr_of<int64_t>(indices), indexer(p.kept), M, L, Ls};
    if (columns) {
      max_cols_kernel<T><<<grid_for(M, kThreads), kThreads, 0, stream()>>>(a);
    } else {
      max_rows_kernel<T><<<grid_for(M, kThreads / 32), kThreads, 0, stream()>>>(a);
    }
    HYMBA_CUDA_CHECK_LAUNCH("max ", x.meta_str());
  });
  return {values, indices};
}

Tensor sum_backward(const Tensor& grad, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim,
                    double scale) {
  const char* op = "sum_backward";
  HYMBA_CHECK(grad.defined(), op, ": undefined gradient");
  check_cuda_tensor(op, "gradient", grad);
  const Shape ks = reduce_check::check_sum_grad(op, grad, in_shape, dims);
  (void)keepdim;  // with or without keepdim the elements are the same, in the same order
  Tensor out = empty(in_shape, TensorOptions(grad.dtype(), grad.device()));
  if (out.numel() == 0) return out;
  // grad broadcast over the reduced dims (a stride-0 view), times scale: an elementwise op.
  const Tensor g = grad.detach().reshape(ks).expand(in_shape);
  ::hymba::kernels::cuda::scalar_out(ScalarOp::Mul, g, scale, out);
  return out;
}

Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& in_shape, int64_t dim, bool keepdim) {
  const char* op = "max_backward";
  HYMBA_CHECK(grad.defined() && indices.defined(), op, ": undefined gradient or indices");
  check_cuda_tensor(op, "gradient", grad);
  check_same_device(op, grad, indices);
  const int64_t nd = int64_t(in_shape.size());
  const reduce_check::MaxGradDims md = reduce_check::check_max_grad(op, grad, indices, in_shape, dim);
  const int64_t d = md.dim;
  const Shape& ks = md.keepdim_shape;
  HYMBA_CHECK(is_floating(grad.dtype()), op, ": expected a float dtype, got ", grad.meta_str());
  (void)keepdim;
  const Tensor g = grad.detach().reshape(ks), ix = indices.detach().reshape(ks);
  Tensor out = zeros(in_shape, TensorOptions(grad.dtype(), grad.device()));
  if (out.numel() == 0) return out;
  const int64_t dstride = nd ? out.strides()[size_t(d)] : 0, L = nd ? in_shape[size_t(d)] : 1;
  ::hymba::cuda::DeviceGuard guard(grad.device().index);
  // The layout runs over the reduced shape; out's stride on the reduced dim is unused there.
  const StridedLayout<3> lay = make_layout<3>(ks, {&out.strides(), &g.strides(), &ix.strides()}, op);
  // A bad index must fail like on the CPU; reading the flag back synchronizes, which is
  // acceptable for max (not on any model's hot path).
  Tensor bad = zeros({1}, TensorOptions(DType::I32, grad.device()));
  dispatch_cuda_float(grad.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    max_backward_kernel<T><<<grid_for(lay.numel, kThreads), kThreads, 0, stream()>>>(
        ptr_of<T>(out), ptr_of<const T>(g), ptr_of<const int64_t>(ix), make_indexer<int64_t, 3>(lay), lay.numel, L,
        dstride, ptr_of<int>(bad));
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", grad.meta_str());
  });
  HYMBA_CHECK(bad.item() == 0.0, op, ": an index is out of range for dim ", d, " of size ", L);
  return out;
}

}  // namespace hymba::kernels::cuda
