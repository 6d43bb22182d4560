// One dispatch point per op: kernels/<family>.h declares the op in hymba::kernels, with the
// CPU implementation in hymba::kernels::cpu (kernels/cpu/<family>.cpp) and the CUDA one in
// hymba::kernels::cuda (kernels/cuda/<family>.cu), both with the same signature. The public
// inline function picks one by the device of its tensors:
//
//   inline Tensor rms_norm(const Tensor& x, ...) {
//     return HYMBA_DISPATCH(x.device(), rms_norm, x, ...);
//   }
//
// Families not yet ported to CUDA use HYMBA_DISPATCH_CPU_ONLY, which fails clearly on a
// CUDA tensor instead of leaving an unresolved symbol.
#pragma once

#include "core/error.h"
#include "core/profiler.h"
#include "core/tensor.h"

// Each dispatched call runs inside a profiler scope named after the op (core/profiler.h):
// one branch on a global flag while profiling is off.
#define HYMBA_PROFILED_CALL(fn, ...) \
  ([&]() -> decltype(auto) {                          \
    ::hymba::profiler::Scope hymba_profiler_scope_(#fn); \
    return __VA_ARGS__;                               \
  }())

#ifdef HYMBA_WITH_CUDA
#define HYMBA_DISPATCH(device, fn, ...)                                                            \
  HYMBA_PROFILED_CALL(fn, (device).is_cuda() ? ::hymba::kernels::cuda::fn(__VA_ARGS__)           \
                                             : ::hymba::kernels::cpu::fn(__VA_ARGS__))
#else
#define HYMBA_DISPATCH(device, fn, ...)                                                              \
  HYMBA_PROFILED_CALL(fn, (device).is_cuda()                                                         \
                              ? (HYMBA_FAIL(#fn ": CUDA tensor given but this build has no CUDA support"), \
                                 ::hymba::kernels::cpu::fn(__VA_ARGS__))                             \
                              : ::hymba::kernels::cpu::fn(__VA_ARGS__))
#endif

#define HYMBA_DISPATCH_CPU_ONLY(device, fn, ...)                                          \
  HYMBA_PROFILED_CALL(fn, (device).is_cuda()                                              \
                              ? (HYMBA_FAIL(#fn ": no CUDA kernel yet (CUDA backend issue)"), \
                                 ::hymba::kernels::cpu::fn(__VA_ARGS__))                  \
                              : ::hymba::kernels::cpu::fn(__VA_ARGS__))

namespace hymba::kernels {

// Checks shared by kernels; messages name the op and the offending tensors.
inline void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  HYMBA_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.meta_str(), " and ",
              b.meta_str());
}
inline void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  HYMBA_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.meta_str(), " and ", b.meta_str());
}
inline void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  HYMBA_CHECK(t.shape() == expected, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ",
              shape_str(expected));
}

}  // namespace hymba::kernels
