// CUDA meta tokens (kernels/meta_tokens.h): prepend/drop are copies, one thread per element.
// The batch sum for dmeta is one thread per (m, h) column adding the batch in order. The
// embedding table's gradient is deterministic without atomics: the token ids are brought to
// the host (a few hundred KB per step), sorted stably by id there (counting sort), and each
// table row that occurs is then summed by one block, one thread per column, in token order -
// the CPU kernel's order, so f32 results match it bit for bit.
#include "kernels/meta_tokens.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_ops.h"
#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

// out[b, t, :] = t < M ? meta[t] : src row of token (b, t - M); src rows from `ids` when given
// (the embedding table), else from x (B, L, H).
template <typename T>
__global__ void prepend_kernel(const T* __restrict__ meta, const T* __restrict__ src, const int64_t* __restrict__ ids,
                               T* __restrict__ out, int64_t M, int64_t L, int64_t H, int64_t total) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = idx % H, bt = idx / H, t = bt % (M + L), b = bt / (M + L);
    if (t < M) {
      out[idx] = meta[t * H + h];
    } else {
      const int64_t n = b * L + t - M;
      out[idx] = src[(ids ? ids[n] : n) * H + h];
    }
  }
}

// dmeta[m, h] = sum over b in order of dy[b, m, h], dy (B, Tt, H).
template <typename T>
__global__ void sum_meta_kernel(const T* __restrict__ dy, T* __restrict__ dmeta, int64_t B, int64_t Tt, int64_t M,
                                int64_t H) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < M * H;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = idx / H, h = idx % H;
    acc_t<T> s = 0;
    for (int64_t b = 0; b < B; ++b) s += load_acc(dy[(b * Tt + m) * H + h]);
    dmeta[idx] = store_acc<T>(s);
  }
}

// dx (B, M + L, H): M zero rows per sequence, then dy (B, L, H).
template <typename T>
__global__ void pad_meta_kernel(const T* __restrict__ dy, T* __restrict__ dx, int64_t M, int64_t L, int64_t H,
                                int64_t total) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = idx % H, bt = idx / H, t = bt % (M + L), b = bt / (M + L);
    dx[idx] = t < M ? store_acc<T>(acc_t<T>(0)) : dy[(b * L + t - M) * H + h];
  }
}

// Records the smallest position n whose id is outside [0, V).
__global__ void check_ids_kernel(const int64_t* __restrict__ ids, int64_t n_ids, int64_t V,
                                 unsigned long long* __restrict__ first_bad) {
  for (int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; n < n_ids; n += int64_t(gridDim.x) * blockDim.x)
    if (ids[n] < 0 || ids[n] >= V) atomicMin(first_bad, (unsigned long long)n);
}

// Block u sums the tokens order[start[u] .. start[u+1]) (ascending token index) into table
// row rows[u]; dy (B, M + L, H), token n at dy row (n / L) * (M + L) + M + n % L.
template <typename T>
__global__ void embed_grad_kernel(const T* __restrict__ dy, const int64_t* __restrict__ rows,
                                  const int64_t* __restrict__ start, const int64_t* __restrict__ order,
                                  T* __restrict__ dw, int64_t M, int64_t L, int64_t H) {
  const int64_t u = blockIdx.x, row = rows[u], p0 = start[u], p1 = start[u + 1];
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    acc_t<T> s = 0;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = order[p];
      s += load_acc(dy[((n / L) * (M + L) + M + n % L) * H + h]);
    }
    dw[row * H + h] = store_acc<T>(s);
  }
}

void check_float(const char* op, const char* what, const Tensor& t) {
  meta_check::float_check(
      op, what, t, [](DType d) { return d == DType::F32 || d == DType::F64 || d == DType::BF16; },
      "f32, f64 or bf16");
  check_cuda_tensor(op, what, t);
}

void check_seq(const char* op, const char* what, const Tensor& t) { meta_check::check_seq(op, what, t, check_float); }

template <typename T> void launch_sum_meta(const Tensor& dy, const Tensor& dmeta, int64_t B, int64_t Tt, int64_t M,
                                           int64_t H, const char* op) {
  sum_meta_kernel<T><<<grid_for(M * H, 256), 256, 0, stream()>>>(ptr_of<const T>(dy), ptr_of<T>(dmeta), B, Tt, M, H);
  HYMBA_CUDA_CHECK_LAUNCH(op, " dmeta, dy ", dy.meta_str());
}

}  // namespace

Tensor prepend_meta_forward(const Tensor& meta_in, const Tensor& x_in) {
  const char* op = "prepend_meta";
  meta_check::check_prepend(op, meta_in, x_in, check_float);
  ::hymba::cuda::DeviceGuard guard(x_in.device().index);
  const int64_t B = x_in.size(0), L = x_in.size(1), H = x_in.size(2), M = meta_in.size(0);
  Tensor y = empty({B, M + L, H}, TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  const Tensor meta = meta_in.contiguous(), x = x_in.contiguous();
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    prepend_kernel<T><<<grid_for(y.numel(), 256), 256, 0, stream()>>>(ptr_of<const T>(meta), ptr_of<const T>(x),
                                                                       nullptr, ptr_of<T>(y), M, L, H, y.numel());
    HYMBA_CUDA_CHECK_LAUNCH(op, " x ", x_in.meta_str(), ", meta ", shape_str(meta_in.shape()));
  });
  return y;
}

std::tuple<Tensor, Tensor> prepend_meta_backward(const Tensor& dy_in, int64_t M, bool need_meta, bool need_x) {
  const char* op = "prepend_meta_backward";
  check_seq(op, "dy", dy_in);
  meta_check::check_num_meta(op, "dy", dy_in, M);
  ::hymba::cuda::DeviceGuard guard(dy_in.device().index);
  const int64_t B = dy_in.size(0), Tt = dy_in.size(1), H = dy_in.size(2), L = Tt - M;
  Tensor dmeta, dx;
  const Tensor dy = dy_in.contiguous();
  if (need_x) {
    NoGradGuard ng;
    dx = dy.narrow(1, M, L).contiguous();
  }
  if (need_meta) {
    dmeta = empty({M, H}, TensorOptions(dy.dtype(), dy.device()));
    if (dmeta.numel() > 0) {
      dispatch_f32_f64_bf16(dy.dtype(), op,
                            [&](auto tag) { launch_sum_meta<decltype(tag)>(dy, dmeta, B, Tt, M, H, op); });
    }
  }
  return {dmeta, dx};
}

Tensor drop_meta_forward(const Tensor& x, int64_t M) {
  const char* op = "drop_meta";
  check_seq(op, "x", x);
  meta_check::check_num_meta(op, "x", x, M);
  ::hymba::cuda::DeviceGuard guard(x.device().index);
  NoGradGuard ng;
  return x.narrow(1, M, x.size(1) - M).contiguous();
}

Tensor drop_meta_backward(const Tensor& dy_in, int64_t M) {
  const char* op = "drop_meta_backward";
  check_seq(op, "dy", dy_in);
  HYMBA_CHECK(M >= 0, op, ": num_meta must be >= 0, got ", M);
  ::hymba::cuda::DeviceGuard guard(dy_in.device().index);
  const int64_t B = dy_in.size(0), L = dy_in.size(1), H = dy_in.size(2);
  Tensor dx = empty({B, M + L, H}, TensorOptions(dy_in.dtype(), dy_in.device()));
  if (dx.numel() == 0) return dx;
  const Tensor dy = dy_in.contiguous();
  dispatch_f32_f64_bf16(dy.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    pad_meta_kernel<T><<<grid_for(dx.numel(), 256), 256, 0, stream()>>>(ptr_of<const T>(dy), ptr_of<T>(dx), M, L, H,
                                                                         dx.numel());
    HYMBA_CUDA_CHECK_LAUNCH(op, " dy ", dy_in.meta_str());
  });
  return dx;
}

Tensor embed_with_meta_forward(const Tensor& w_in, const Tensor& ids_in, const Tensor& meta_in) {
  const char* op = "embed_with_meta";
  meta_check::check_embed_forward(op, w_in, ids_in, meta_in, check_float);
  ::hymba::cuda::DeviceGuard guard(w_in.device().index);
  const int64_t B = ids_in.size(0), L = ids_in.size(1), V = w_in.size(0), H = w_in.size(1), M = meta_in.size(0);
  Tensor y = empty({B, M + L, H}, TensorOptions(w_in.dtype(), w_in.device()));
  if (y.numel() == 0) return y;
  const Tensor w = w_in.contiguous(), meta = meta_in.contiguous(), ids = ids_in.to(DType::I64).contiguous();
  if (B * L > 0) {
    // Validated on the device; only the 8-byte verdict comes back.
    Tensor first_bad = empty({1}, TensorOptions(DType::I64, w.device()));
    HYMBA_CUDA_CHECK(cudaMemsetAsync(first_bad.data_ptr(), 0xff, sizeof(unsigned long long), stream()));
    check_ids_kernel<<<grid_for(B * L, 256), 256, 0, stream()>>>(
        ptr_of<const int64_t>(ids), B * L, V, static_cast<unsigned long long*>(first_bad.data_ptr()));
    HYMBA_CUDA_CHECK_LAUNCH(op, " id check, ids ", ids_in.meta_str());
    unsigned long long bad = 0;
    ::hymba::cuda::memcpy_d2h(&bad, first_bad.data_ptr(), sizeof(bad));
    if (bad != ~0ULL) {
      const int64_t n = int64_t(bad);
      const int64_t id = int64_t(ids.flatten().narrow(0, n, 1).item());
      meta_check::fail_bad_token(op, id, n, L, w);
    }
  }
  dispatch_f32_f64_bf16(w.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    prepend_kernel<T><<<grid_for(y.numel(), 256), 256, 0, stream()>>>(
        ptr_of<const T>(meta), ptr_of<const T>(w), ptr_of<const int64_t>(ids), ptr_of<T>(y), M, L, H, y.numel());
    HYMBA_CUDA_CHECK_LAUNCH(op, " weight ", w_in.meta_str(), ", ids ", ids_in.meta_str());
  });
  return y;
}

std::tuple<Tensor, Tensor> embed_with_meta_backward(const Tensor& dy_in, const Tensor& ids_in, int64_t V, int64_t M,
                                                    int64_t padding_idx, bool need_weight, bool need_meta) {
  const char* op = "embed_with_meta_backward";
  meta_check::check_embed_backward(op, dy_in, ids_in, M, check_float);
  check_same_device(op, dy_in, ids_in);
  const int64_t B = ids_in.size(0), L = ids_in.size(1), H = dy_in.size(2);
  ::hymba::cuda::DeviceGuard guard(dy_in.device().index);
  const Tensor dy = dy_in.contiguous();
  Tensor dw, dmeta;
  if (need_meta) {
    dmeta = empty({M, H}, TensorOptions(dy.dtype(), dy.device()));
    if (dmeta.numel() > 0) {
      dispatch_f32_f64_bf16(dy.dtype(), op,
                            [&](auto tag) { launch_sum_meta<decltype(tag)>(dy, dmeta, B, M + L, M, H, op); });
    }
  }
  if (need_weight) {
    dw = zeros({V, H}, TensorOptions(dy.dtype(), dy.device()));
    const std::vector<int64_t> ids = ids_in.to(DType::I64).to_vector<int64_t>();
    const int64_t n_ids = B * L;
    meta_check::check_token_ids(op, ids.data(), n_ids, V);
    // Stable counting sort by id, padding tokens left out. One upload:
    // [rows (U) | start (U + 1) | order (P)].
    std::vector<int64_t> count(size_t(V) + 1, 0);
    for (int64_t n = 0; n < n_ids; ++n)
      if (ids[n] != padding_idx) ++count[size_t(ids[n]) + 1];
    for (int64_t v = 0; v < V; ++v) count[size_t(v) + 1] += count[size_t(v)];
    const int64_t P = count[size_t(V)];
    std::vector<int64_t> rows, start;
    for (int64_t v = 0; v < V; ++v) {
      if (count[size_t(v) + 1] > count[size_t(v)]) {
        rows.push_back(v);
        start.push_back(count[size_t(v)]);
      }
    }
    start.push_back(P);
    const int64_t U = int64_t(rows.size());
    if (U > 0 && H > 0) {
      std::vector<int64_t> packed(size_t(U + (U + 1) + P));
      std::memcpy(packed.data(), rows.data(), size_t(U) * sizeof(int64_t));
      std::memcpy(packed.data() + U, start.data(), size_t(U + 1) * sizeof(int64_t));
      int64_t* order = packed.data() + U + (U + 1);
      std::vector<int64_t> next(count.begin(), count.end() - 1);
      for (int64_t n = 0; n < n_ids; ++n)
        if (ids[n] != padding_idx) order[next[size_t(ids[n])]++] = n;
      const Tensor dev = from_vector<int64_t>(packed, {int64_t(packed.size())}, TensorOptions(DType::I64, dy.device()));
      const int64_t* pd = ptr_of<const int64_t>(dev);
      HYMBA_CHECK(U <= int64_t(INT32_MAX), op, ": too many distinct ids (", U, ")");
      const int threads = row_block_threads(H, 1, 256);
      dispatch_f32_f64_bf16(dy.dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        embed_grad_kernel<T><<<unsigned(U), threads, 0, stream()>>>(ptr_of<const T>(dy), pd, pd + U, pd + 2 * U + 1,
                                                                    ptr_of<T>(dw), M, L, H);
        HYMBA_CUDA_CHECK_LAUNCH(op, " dweight, dy ", dy_in.meta_str(), ", ", U, " distinct ids");
      });
    }
  }
  return {dw, dmeta};
}

}  // namespace hymba::kernels::cuda
