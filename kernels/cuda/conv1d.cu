// CUDA causal depthwise conv1d (kernels/conv1d.h).
//
// Forward: one thread per output element, taps summed in the CPU kernel's order (bias, then
// oldest to newest). Backward: one block per channel; its threads stride over that channel's
// (b, t) elements in a fixed pattern, recompute the pre-activation where SiLU needs it,
// write dx, and reduce their dweight/dbias partials with a fixed-shape block reduction, so
// the parameter gradients are deterministic without atomics. Step: one thread per (b, c).
#include "kernels/conv1d.h"

#include <string>

#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

constexpr int kMaxW = 4;
constexpr int kBwdThreads = 256;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
template <typename A> __device__ __forceinline__ A sigmoid(A v) { return A(1) / (A(1) + exp_(-v)); }

// Pre-activation at step t of a row: bias + sum_k w[k] x[t - (W-1) + k] over steps >= 0.
template <typename T>
__device__ __forceinline__ acc_t<T> preact(const T* __restrict__ x, const T* __restrict__ w, acc_t<T> bias, int W,
                                           int64_t t) {
  acc_t<T> acc = bias;
  for (int k = 0; k < W; ++k) {
    const int64_t tt = t - (W - 1) + k;
    if (tt >= 0) acc += load_acc(w[k]) * load_acc(x[tt]);
  }
  return acc;
}

// d loss / d pre-activation at step t of a row.
template <typename T>
__device__ __forceinline__ acc_t<T> dpre(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ w,
                                         acc_t<T> bias, int W, int64_t t, bool silu) {
  using Acc = acc_t<T>;
  const Acc g = load_acc(dy[t]);
  if (!silu) return g;
  const Acc s = preact(x, w, bias, W, t), sg = sigmoid(s);
  return g * sg * (Acc(1) + s * (Acc(1) - sg));
}

template <typename T>
__global__ void conv_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                                    T* __restrict__ y, int64_t C, int64_t L, int W, int64_t total, bool silu) {
  using Acc = acc_t<T>;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx % L, row = idx / L, c = row % C;
    const Acc s = preact(x + row * L, w + c * W, bias ? load_acc(bias[c]) : Acc(0), W, t);
    y[idx] = store_acc<T>(silu ? s * sigmoid(s) : s);
  }
}

// grid: one block per channel c.
template <typename T>
__global__ void __launch_bounds__(kBwdThreads)
    conv_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                         const T* __restrict__ bias, T* __restrict__ dx, T* __restrict__ dw, T* __restrict__ db,
                         int64_t B, int64_t C, int64_t L, int W, bool silu) {
  using Acc = acc_t<T>;
  __shared__ Acc scratch[32];
  const int64_t c = blockIdx.x;
  const T* wc = w + c * W;
  const Acc bc = bias ? load_acc(bias[c]) : Acc(0);
  Acc dw_p[kMaxW] = {}, db_p = 0;
  for (int64_t j = threadIdx.x; j < B * L; j += blockDim.x) {
    const int64_t b = j / L, t = j % L, row = (b * C + c) * L;
    const T *xr = x + row, *dyr = dy + row;
    const Acc ds = dpre(xr, dyr, wc, bc, W, t, silu);
#pragma unroll
    for (int k = 0; k < kMaxW; ++k) {
      const int64_t tt = t - (W - 1) + k;
      if (k < W && tt >= 0) dw_p[k] += ds * load_acc(xr[tt]);
    }
    db_p += ds;
    if (dx) {
      // dx[t] = sum_k w[k] ds[t + (W-1) - k] over the steps that exist (the CPU's order).
      Acc acc = 0;
      for (int k = 0; k < W; ++k) {
        const int64_t tt = t + (W - 1) - k;
        if (tt < L) acc += load_acc(wc[k]) * (tt == t ? ds : dpre(xr, dyr, wc, bc, W, tt, silu));
      }
      dx[row + t] = store_acc<T>(acc);
    }
  }
#pragma unroll
  for (int k = 0; k < kMaxW; ++k) {
    if (k < W) {
      const Acc s = block_sum(dw_p[k], scratch);
      if (threadIdx.x == 0) dw[c * W + k] = store_acc<T>(s);
    }
  }
  const Acc s = block_sum(db_p, scratch);
  if (db && threadIdx.x == 0) db[c] = store_acc<T>(s);
}

template <typename T>
__global__ void conv_step_kernel(T* __restrict__ state, const T* __restrict__ x, const T* __restrict__ w,
                                 const T* __restrict__ bias, T* __restrict__ y, int64_t C, int W, int64_t rows,
                                 bool silu) {
  using Acc = acc_t<T>;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = r % C;
    T* s = state + r * (W - 1);
    // Same summation order as the forward: bias first, then taps oldest to newest.
    Acc acc = bias ? load_acc(bias[c]) : Acc(0);
    for (int k = 0; k < W - 1; ++k) acc += load_acc(w[c * W + k]) * load_acc(s[k]);
    acc += load_acc(w[c * W + W - 1]) * load_acc(x[r]);
    y[r] = store_acc<T>(silu ? acc * sigmoid(acc) : acc);
    for (int k = 0; k + 1 < W - 1; ++k) s[k] = s[k + 1];
    s[W - 2] = x[r];
  }
}

using conv_check::ConvDims;

ConvDims check_inputs(const char* op, bool seq, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const ConvDims dm = conv_check::check_inputs(
      op, seq, x, w, bias, [](DType d) { return d == DType::F32 || d == DType::F64 || d == DType::BF16; },
      "on CUDA, expected f32, f64 or bf16");
  check_cuda_tensor(op, "x", x);
  return dm;
}

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
template <typename T> const T* cptr_or_null(const Tensor& t) { return t.defined() ? ptr_of<const T>(t) : nullptr; }
template <typename T> T* ptr_or_null(const Tensor& t) { return t.defined() ? ptr_of<T>(t) : nullptr; }

}  // namespace

Tensor causal_conv1d_forward(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu) {
  const char* op = "causal_conv1d";
  const ConvDims dm = check_inputs(op, true, x_in, w_in, bias_in);
  ::hymba::cuda::DeviceGuard guard(x_in.device().index);
  Tensor y = empty({dm.B, dm.C, dm.L}, TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  const Tensor x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    conv_forward_kernel<T><<<grid_for(y.numel(), 256), 256, 0, stream()>>>(
        ptr_of<const T>(x), ptr_of<const T>(w), cptr_or_null<T>(bias), ptr_of<T>(y), dm.C, dm.L, int(dm.W),
        y.numel(), silu);
    HYMBA_CUDA_CHECK_LAUNCH(op, " x ", x_in.meta_str(), ", weight ", shape_str(w_in.shape()));
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> causal_conv1d_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& w_in,
                                                          const Tensor& bias_in, bool silu, bool need_dx) {
  const char* op = "causal_conv1d_backward";
  const ConvDims dm = check_inputs(op, true, x_in, w_in, bias_in);
  conv_check::check_grad(op, dy_in, x_in);
  ::hymba::cuda::DeviceGuard guard(x_in.device().index);
  const TensorOptions opts(x_in.dtype(), x_in.device());
  Tensor dx, dw = empty({dm.C, dm.W}, opts), db;
  if (need_dx) dx = empty({dm.B, dm.C, dm.L}, opts);
  if (bias_in.defined()) db = empty({dm.C}, opts);
  if (dm.C == 0) return {dx, dw, db};
  const Tensor dy = contig(dy_in), x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  HYMBA_CHECK(dm.C <= int64_t(INT32_MAX), op, ": too many channels for one block each, x ", x_in.meta_str());
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    // With B * L = 0 the blocks still run and write zero parameter gradients.
    conv_backward_kernel<T><<<unsigned(dm.C), kBwdThreads, 0, stream()>>>(
        ptr_of<const T>(dy), ptr_of<const T>(x), ptr_of<const T>(w), cptr_or_null<T>(bias), ptr_or_null<T>(dx),
        ptr_of<T>(dw), ptr_or_null<T>(db), dm.B, dm.C, dm.L, int(dm.W), silu);
    HYMBA_CUDA_CHECK_LAUNCH(op, " x ", x_in.meta_str(), ", weight ", shape_str(w_in.shape()));
  });
  return {dx, dw, db};
}

Tensor causal_conv1d_step(const Tensor& state, const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in,
                          bool silu) {
  const char* op = "causal_conv1d_step";
  const ConvDims dm = check_inputs(op, false, x_in, w_in, bias_in);
  conv_check::check_state(op, state, dm, x_in, w_in);
  ::hymba::cuda::DeviceGuard guard(x_in.device().index);
  Tensor y = empty({dm.B, dm.C}, TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  const Tensor x = contig(x_in), w = contig(w_in), bias = contig(bias_in);
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    conv_step_kernel<T><<<grid_for(y.numel(), 256), 256, 0, stream()>>>(
        ptr_of<T>(state), ptr_of<const T>(x), ptr_of<const T>(w), cptr_or_null<T>(bias), ptr_of<T>(y), dm.C,
        int(dm.W), y.numel(), silu);
    HYMBA_CUDA_CHECK_LAUNCH(op, " x ", x_in.meta_str(), ", weight ", shape_str(w_in.shape()));
  });
  return y;
}

}  // namespace hymba::kernels::cuda
