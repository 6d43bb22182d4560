// CUDA rotary position embedding (kernels/rope.h): a (T, dh/2) cos/sin table computed on the
// device the way the CPU kernel computes it (inv_freq and cos/sin in double, rounded to the
// compute type; the angle a product in the compute type), then one thread per rotated pair.
// The compute type is fp32 for f32 and bf16 tensors, double for f64.
#include "kernels/rope.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

template <typename Acc>
__global__ void rope_table_kernel(Acc* __restrict__ cs, Acc* __restrict__ sn, int64_t T, int64_t half, int64_t dh,
                                  double base, int64_t offset, bool inverse) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < T * half;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / half, j = idx % half;
    const Acc inv = Acc(1.0 / pow(base, double(2 * j) / double(dh)));
    const Acc ang = Acc(offset + t) * inv;  // product in the compute type, as the CPU kernel
    cs[idx] = Acc(cos(double(ang)));
    sn[idx] = Acc(inverse ? -sin(double(ang)) : sin(double(ang)));
  }
}

// x row (b, h, t) starts at b * sb + h * sh + t * st (last dim dense); y is contiguous.
template <typename T>
__global__ void rope_apply_kernel(const T* __restrict__ x, T* __restrict__ y, const acc_t<T>* __restrict__ cs,
                                  const acc_t<T>* __restrict__ sn, int64_t H, int64_t T_, int64_t half, int64_t sb,
                                  int64_t sh, int64_t st, int64_t total) {
  using Acc = acc_t<T>;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = idx % half, r = idx / half, t = r % T_, bh = r / T_, b = bh / H, h = bh % H;
    const T* xr = x + b * sb + h * sh + t * st;
    T* yr = y + r * 2 * half;
    const Acc c = cs[t * half + j], s = sn[t * half + j];
    const Acc x1 = load_acc(xr[j]), x2 = load_acc(xr[j + half]);
    yr[j] = store_acc<T>(x1 * c - x2 * s);
    yr[j + half] = store_acc<T>(x2 * c + x1 * s);
  }
}

}  // namespace

Tensor rope(const Tensor& x_in, double base, int64_t offset, bool inverse) {
  const char* op = inverse ? "rope_backward" : "rope";
  HYMBA_CHECK(x_in.defined(), op, ": x is undefined");
  check_cuda_tensor(op, "x", x_in);
  HYMBA_CHECK(x_in.dtype() == DType::F32 || x_in.dtype() == DType::F64 || x_in.dtype() == DType::BF16, op,
              ": dtype ", dtype_name(x_in.dtype()), " not supported on CUDA, expected f32, f64 or bf16 (x ",
              x_in.meta_str(), ")");
  HYMBA_CHECK(x_in.dim() == 4, op, ": expected x (B, H, T, dh), got ", shape_str(x_in.shape()));
  HYMBA_CHECK(x_in.size(3) % 2 == 0 && x_in.size(3) > 0, op, ": head dim must be even and > 0, x ",
              shape_str(x_in.shape()));
  HYMBA_CHECK(std::isfinite(base) && base > 0, op, ": base must be > 0, got ", base);
  HYMBA_CHECK(offset >= 0, op, ": position offset must be >= 0, got ", offset);
  ::hymba::cuda::DeviceGuard guard(x_in.device().index);
  const int64_t H = x_in.size(1), T = x_in.size(2), dh = x_in.size(3), half = dh / 2;
  Tensor y = empty(x_in.shape(), TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  const Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  const DType acc = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Tensor cs = empty({T, half}, TensorOptions(acc, x.device())), sn = empty({T, half}, TensorOptions(acc, x.device()));
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T_ = decltype(tag);
    using Acc = acc_t<T_>;
    rope_table_kernel<Acc><<<grid_for(T * half, 256), 256, 0, stream()>>>(ptr_of<Acc>(cs), ptr_of<Acc>(sn), T, half,
                                                                          dh, base, offset, inverse);
    HYMBA_CUDA_CHECK_LAUNCH(op, " table, x ", x_in.meta_str());
    const int64_t total = y.numel() / 2;
    rope_apply_kernel<T_><<<grid_for(total, 256), 256, 0, stream()>>>(
        ptr_of<const T_>(x), ptr_of<T_>(y), ptr_of<const Acc>(cs), ptr_of<const Acc>(sn), H, T, half, x.stride(0),
        x.stride(1), x.stride(2), total);
    HYMBA_CUDA_CHECK_LAUNCH(op, " x ", x_in.meta_str());
  });
  return y;
}

}  // namespace hymba::kernels::cuda
