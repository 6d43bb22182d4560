// Embedding lookup on CUDA (kernels/embedding.h), with the CPU kernel's semantics.
//
// Forward gathers rows (16-byte vectors when the row stride and pointers allow it).
// Backward is deterministic without sorting library calls or float atomics:
//   1. histogram of ids with integer atomics (and the range check),
//   2. exclusive scan of the counts: start[v] = first slot of row v,
//   3. scatter of positions into their row's slots (atomic slot order: arbitrary),
//   4. each position's rank among its row's positions = how many of them are smaller, so
//      order[start[v] + rank] puts every row's positions in increasing order (cost: the sum
//      of squared row counts; the padding row is skipped, which is the usual frequent one),
//   5. one block per touched row adds its gradient rows in position order, in the compute
//      type, starting from zero - the CPU's order, so f32 results are the same bits.
// Ids outside [0, V) are detected on the device (the first bad position, by an integer
// atomicMin) and reported after one small device-to-host copy with the CPU's message.
#include <climits>

#include "core/cuda_ops.h"
#include "kernels/cuda/common.cuh"
#include "kernels/embedding.h"

namespace hymba::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kNoBadPosition = ULLONG_MAX;

// Records position i as bad when id is outside [0, V); returns whether it is valid.
__device__ __forceinline__ bool check_id(int64_t id, int64_t V, int64_t i, unsigned long long* bad) {
  if (id >= 0 && id < V) return true;
  atomicMin(bad, (unsigned long long)i);
  return false;
}

// Flattened over (position, item): item j of the `items` items of a row (H / width on the
// vector path). Every position is visited at least once (items == 0 included) so that every
// id is range-checked.
template <typename T>
__global__ void gather_kernel(const T* __restrict__ w, const int64_t* __restrict__ ids, T* __restrict__ out,
                              int64_t n, int64_t V, int64_t H, int64_t items, int64_t rs, int64_t cs, bool vec,
                              unsigned long long* bad) {
  const int64_t per = items > 0 ? items : 1;
  const int64_t total = n * per;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t i = e / per, j = e - i * per;
    const int64_t id = ids[i];
    if (!check_id(id, V, i, bad) || j >= items) continue;
    if (vec) {
      reinterpret_cast<Vec16<T>*>(out + i * H)[j] = reinterpret_cast<const Vec16<T>*>(w + id * rs)[j];
    } else {
      out[i * H + j] = w[id * rs + j * cs];
    }
  }
}

__global__ void histogram_kernel(const int64_t* __restrict__ ids, int* __restrict__ counts, int64_t n, int64_t V,
                                 unsigned long long* bad) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t id = ids[i];
    if (check_id(id, V, i, bad)) atomicAdd(&counts[id], 1);
  }
}

// start[v] = counts[0] + ... + counts[v - 1] for v in [0, V], by one block: each thread
// scans a contiguous chunk serially, the chunk totals are scanned across the block.
__global__ void __launch_bounds__(1024)
    exclusive_scan_kernel(const int* __restrict__ counts, int* __restrict__ start, int64_t V) {
  __shared__ int warp_tot[32];
  const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
  const int64_t lo = min(V, int64_t(threadIdx.x) * chunk), hi = min(V, lo + chunk);
  int local = 0;
  for (int64_t v = lo; v < hi; ++v) local += counts[v];
  // Inclusive scan of `local` over the block.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  int inc = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int up = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += up;
  }
  if (lane == 31) warp_tot[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int t = lane < nwarps ? warp_tot[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int up = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += up;
    }
    warp_tot[lane] = t;  // inclusive totals of warps 0..lane
  }
  __syncthreads();
  int running = inc - local + (warp > 0 ? warp_tot[warp - 1] : 0);
  for (int64_t v = lo; v < hi; ++v) {
    start[v] = running;
    running += counts[v];
  }
  if (threadIdx.x == blockDim.x - 1) start[V] = warp_tot[nwarps - 1];
}

// slots[start[id] + k] = i for some k in [0, count[id]): the position lands in its row's
// segment; `fill` (zeroed) hands out the slots.
__global__ void scatter_kernel(const int64_t* __restrict__ ids, const int* __restrict__ start, int* __restrict__ fill,
                               int* __restrict__ slots, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t id = ids[i];
    slots[start[id] + atomicAdd(&fill[id], 1)] = int(i);
  }
}

// order[start[id] + rank] = i with rank = number of positions of the same row below i.
__global__ void rank_kernel(const int64_t* __restrict__ ids, const int* __restrict__ start,
                            const int* __restrict__ slots, int* __restrict__ order, int64_t n, int64_t padding_idx) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t id = ids[i];
    if (id == padding_idx) continue;  // never summed
    const int b = start[id], e = start[id + 1];
    int rank = 0;
    for (int k = b; k < e; ++k) rank += slots[k] < int(i) ? 1 : 0;
    order[b + rank] = int(i);
  }
}

// One block per row of dW; rows without ids (and the padding row) keep their zeros.
template <typename T>
__global__ void row_sum_kernel(const T* __restrict__ g, const int* __restrict__ start, const int* __restrict__ order,
                               T* __restrict__ dw, int64_t H, int64_t padding_idx) {
  using A = acc_t<T>;
  const int64_t v = blockIdx.x;
  const int b = start[v], e = start[v + 1];
  if (b == e || v == padding_idx) return;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    A s = 0;
    for (int k = b; k < e; ++k) s += load_acc(g[int64_t(order[k]) * H + j]);
    dw[v * H + j] = store_acc<T>(s);
  }
}

// ids as a contiguous int64 CUDA tensor (i32 ids are converted on the device).
Tensor ids_as_i64(const char* op, const Tensor& ids) {
  HYMBA_CHECK(ids.defined(), op, ": undefined ids");
  HYMBA_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, op, ": index dtype ", dtype_name(ids.dtype()),
              " not supported, expected i32 or i64");
  check_cuda_tensor(op, "ids", ids);
  return ids.detach().contiguous().to(DType::I64);
}

// A device word for the first bad position, set to "none".
Tensor bad_flag(Device dev) {
  Tensor f = empty({1}, TensorOptions(DType::I64, dev));
  HYMBA_CUDA_CHECK(cudaMemsetAsync(f.data_ptr(), 0xff, sizeof(unsigned long long), stream()));
  return f;
}

// Reads the flag back (the one synchronizing copy of the op) and throws the CPU's error.
void throw_if_bad(const Tensor& flag, const Tensor& ids64, const Tensor& ids, int64_t V, const char* op,
                  const std::string& table) {
  unsigned long long pos = 0;
  hymba::cuda::memcpy_d2h(&pos, flag.data_ptr(), sizeof(pos));
  if (pos == kNoBadPosition) return;
  int64_t id = 0;
  hymba::cuda::memcpy_d2h(&id, static_cast<const int64_t*>(ids64.data_ptr()) + pos, sizeof(id));
  embed_check::fail_bad_id(op, id, int64_t(pos), ids, V, table);
}

}  // namespace

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  embed_check::check_weight(op, weight);
  check_cuda_tensor(op, "weight", weight);
  hymba::cuda::DeviceGuard guard(weight.device().index);
  const int64_t V = weight.size(0), H = weight.size(1);
  const Tensor ids64 = ids_as_i64(op, ids);
  Tensor out = empty(embed_check::output_shape(ids, H), TensorOptions(weight.dtype(), weight.device()));
  const int64_t n = ids64.numel();
  if (n == 0) return out;
  const Tensor bad = bad_flag(weight.device());
  auto* pbad = static_cast<unsigned long long*>(bad.data_ptr());
  const int64_t rs = weight.stride(0), cs = weight.stride(1);
  dispatch_f32_f64_bf16(weight.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kN = Vec16<T>::kN;
    const T* pw = ptr_of<const T>(weight);
    T* po = ptr_of<T>(out);
    const bool vec = cs == 1 && H % kN == 0 && rs % kN == 0 && aligned16(pw) && aligned16(po);
    const int64_t items = vec ? H / kN : H;
    gather_kernel<T><<<grid_for(n * std::max<int64_t>(items, 1), kThreads), kThreads, 0, stream()>>>(
        pw, ptr_of<const int64_t>(ids64), po, n, V, H, items, rs, cs, vec, pbad);
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", weight.meta_str(), " ids ", ids.meta_str());
  });
  throw_if_bad(bad, ids64, ids, V, op, "(weight " + weight.meta_str() + ")");
  return out;
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t V, int64_t padding_idx) {
  const char* op = "embedding_backward";
  embed_check::check_backward(op, grad, ids, V, padding_idx);
  check_cuda_tensor(op, "grad", grad);
  hymba::cuda::DeviceGuard guard(grad.device().index);
  const int64_t H = grad.size(-1);
  const Tensor ids64 = ids_as_i64(op, ids);
  const int64_t n = ids64.numel();
  HYMBA_CHECK(n < INT_MAX && V < INT_MAX, op, ": ", n, " ids into ", V, " rows: positions and counts are 32-bit");
  Tensor dw = zeros({V, H}, TensorOptions(grad.dtype(), grad.device()));
  if (n == 0) return dw;
  const TensorOptions iopt(DType::I32, grad.device());
  const int64_t* pid = ptr_of<const int64_t>(ids64);
  const Tensor bad = bad_flag(grad.device());
  Tensor counts = zeros({V}, iopt);
  histogram_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
      pid, ptr_of<int>(counts), n, V, static_cast<unsigned long long*>(bad.data_ptr()));
  HYMBA_CUDA_CHECK_LAUNCH(op, " histogram, ids ", ids.meta_str());
  throw_if_bad(bad, ids64, ids, V, op, "");
  if (H == 0) return dw;

  Tensor start = empty({V + 1}, iopt);
  exclusive_scan_kernel<<<1, 1024, 0, stream()>>>(ptr_of<const int>(counts), ptr_of<int>(start), V);
  HYMBA_CUDA_CHECK_LAUNCH(op, " scan, V = ", V);
  Tensor fill = zeros({V}, iopt), slots = empty({n}, iopt), order = empty({n}, iopt);
  scatter_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(pid, ptr_of<const int>(start), ptr_of<int>(fill),
                                                                     ptr_of<int>(slots), n);
  HYMBA_CUDA_CHECK_LAUNCH(op, " scatter, ids ", ids.meta_str());
  rank_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(pid, ptr_of<const int>(start),
                                                                  ptr_of<const int>(slots), ptr_of<int>(order), n,
                                                                  padding_idx);
  HYMBA_CUDA_CHECK_LAUNCH(op, " rank, ids ", ids.meta_str());
  const Tensor g = grad.detach().contiguous();
  dispatch_f32_f64_bf16(grad.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const int threads = row_block_threads(H, 1, kThreads);
    row_sum_kernel<T><<<unsigned(V), threads, 0, stream()>>>(ptr_of<const T>(g), ptr_of<const int>(start),
                                                             ptr_of<const int>(order), ptr_of<T>(dw), H, padding_idx);
    HYMBA_CUDA_CHECK_LAUNCH(op, " row sums ", grad.meta_str());
  });
  return dw;
}

}  // namespace hymba::kernels::cuda
