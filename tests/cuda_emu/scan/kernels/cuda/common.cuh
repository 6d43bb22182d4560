// Emulated kernels/cuda/common.cuh (tests/cuda_emu): the subset that selective_scan_blocked.cu
// and the parameter-gradient reduction of selective_scan.cu (scan_detail) use. The real
// header pulls in the CUDA runtime and cuBLAS, so the helpers are re-implemented here; prep.py
// checks that their definitions in the real common.cuh are still the ones mirrored here and
// fails if one changed. Cannot check: anything about the real stream, cudaFuncSetAttribute.
#pragma once
#include "emu.h"
#include "core/error.h"
#include "core/tensor.h"
namespace hymba::kernels::cuda {
inline int stream() { return 0; }  // emu-only
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  int64_t b = ceil_div(n, threads);
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}
using std::min;  // emu-only
inline float to_f32(float x) { return x; }
inline float to_f32(double x) { return float(x); }
inline float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> T from_f32(float x);
template <> inline float from_f32<float>(float x) { return x; }
template <> inline double from_f32<double>(float x) { return double(x); }
template <> inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;
template <typename T> inline T store_acc(acc_t<T> x) { return from_f32<T>(x); }
template <> inline double store_acc<double>(double x) { return x; }
template <typename T> struct alignas(16) Vec16 {
  static constexpr int kN = int(16 / sizeof(T));
  T v[kN];
};
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
template <typename T> T* ptr_of(const Tensor& t) { return static_cast<T*>(t.data_ptr()); }
template <typename F> decltype(auto) dispatch_f32_f64_bf16(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::BF16: return f(__nv_bfloat16{});
    default: HYMBA_FAIL(op, ": dtype ", dtype_name(t), " not supported on CUDA, expected f32, f64 or bf16");
  }
}
}  // namespace hymba::kernels::cuda
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <typename K> inline int cudaFuncSetAttribute(K, cudaFuncAttribute, int) { return 0; }
#define HYMBA_CUDA_CHECK(...) do {} while (0)
#define HYMBA_CUDA_CHECK_LAUNCH(...) do {} while (0)
// emu_cp_async_check_drained: from attn/kernels/cuda/mma.cuh, the cp.async model the scan's
// slots use (scripts/emulate-cuda-kernels.sh puts attn/ on the scan's include path).
