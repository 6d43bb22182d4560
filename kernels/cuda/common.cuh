// Shared device helpers for kernels/cuda/*.cu: launch arithmetic, float <-> storage type
// conversions (every kernel computes in fp32, whatever its input dtype), warp and block
// reductions, and the stream every op launches on.
//
// Streams: all ops run on the legacy default stream (0) for now, like the caching allocator
// assumes (core/cuda_allocator.cu). Code that overlaps work (data-parallel communication)
// uses its own non-blocking stream and orders itself against stream 0 with events.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "core/strided_indexer.cuh"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

namespace hymba::kernels::cuda {

inline cudaStream_t stream() { return cudaStream_t(0); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a 1-D grid-stride loop over n elements: enough blocks to fill the GPU a few
// times over, never more than n needs.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  int64_t b = ceil_div(n, threads);
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}

// Storage type <-> fp32 compute type.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(double x) { return float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_f32<double>(float x) { return double(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }

// The CUDA storage type of a hymba dtype (bf16/f16 are bit-compatible with core/half.h).
template <DType D> struct CudaType;
template <> struct CudaType<DType::F32> { using type = float; };
template <> struct CudaType<DType::F64> { using type = double; };
template <> struct CudaType<DType::BF16> { using type = __nv_bfloat16; };
template <> struct CudaType<DType::F16> { using type = __half; };

// Calls f(T{}) with T the CUDA storage type of a float dtype (F32, F64, BF16, F16).
template <typename F> decltype(auto) dispatch_cuda_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F16: return f(__half{});
    default: HYMBA_FAIL(op, ": expected a float dtype, got ", dtype_name(t));
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 floats of shared
// memory. blockDim.x must be a multiple of 32. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Checks shared by the CUDA entry points.
inline void check_cuda_tensor(const char* op, const char* what, const Tensor& t) {
  HYMBA_CHECK(t.device().is_cuda(), op, ": ", what, " must be a CUDA tensor, got ", t.meta_str());
}

}  // namespace hymba::kernels::cuda

// =============================================================================================
// Compute types, 16-byte vectors and strided indexing (added with the elementwise, reduce and
// activation kernels).
// =============================================================================================

#include <array>

namespace hymba::kernels::cuda {

// The type a kernel computes in: fp32 for f32/bf16/f16 storage, f64 for f64 (which exists
// for reference checks, so it keeps the CPU's double precision).
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;

template <typename T> __device__ __forceinline__ acc_t<T> load_acc(T x) { return to_f32(x); }
template <> __device__ __forceinline__ double load_acc<double>(double x) { return x; }
template <typename T> __device__ __forceinline__ T store_acc(acc_t<T> x) { return from_f32<T>(x); }
template <> __device__ __forceinline__ double store_acc<double>(double x) { return x; }

// 16 bytes of T (4 x f32, 8 x bf16/f16, 2 x f64): loading one through an aligned pointer is a
// single 128-bit memory instruction.
template <typename T> struct alignas(16) Vec16 {
  static constexpr int kN = int(16 / sizeof(T));
  T v[kN];
};
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T> T* ptr_of(const Tensor& t) { return static_cast<T*>(t.data_ptr()); }

// Strided operands use the layout rule of core/coalesce.h (make_layout, StridedLayout) and
// the device indexer of core/strided_indexer.cuh (make_indexer, StridedIndexer), shared with
// the CPU kernels and the core CUDA copies.
}  // namespace hymba::kernels::cuda

// =============================================================================================
// Double-precision reductions and the dtype set of the norm / embedding / softmax / optimizer
// kernels (added with those kernels).
// =============================================================================================

namespace hymba::kernels::cuda {

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// As block_sum(float, ...) above, in double; `scratch` holds >= 32 doubles.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0;
  return warp_sum(v);
}

// Calls f(T{}) for the dtypes whose CPU kernel exists (f32, f64) plus bf16, the training
// dtype of activations; f16 has no CPU reference to test against, so it is not instantiated.
template <typename F> decltype(auto) dispatch_f32_f64_bf16(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::BF16: return f(__nv_bfloat16{});
    default: HYMBA_FAIL(op, ": dtype ", dtype_name(t), " not supported on CUDA, expected f32, f64 or bf16");
  }
}

// Threads for a block that works on one row of n elements, k elements per thread per pass:
// a multiple of 32 in [32, max_threads].
inline int row_block_threads(int64_t n, int k, int max_threads) {
  int64_t t = (ceil_div(n, k) + 31) / 32 * 32;
  if (t < 32) t = 32;
  return int(t < max_threads ? t : max_threads);
}

}  // namespace hymba::kernels::cuda
