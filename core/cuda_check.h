// Error checking for CUDA runtime and cuBLAS calls, a device guard, and the rule that picks a
// process's GPU. CUDA builds only (HYMBA_WITH_CUDA); usable from .cu and plain .cpp files.
//
// Every failed call becomes a hymba::Error that names the call as written, the error's enum
// name and description, optional context, and file:line - enough to act on a report from a
// GPU node without rerunning it.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <functional>
#include <string>

#include "core/error.h"

namespace hymba::cuda {

namespace detail {

[[noreturn]] inline void throw_cuda_error(const char* file, int line, const char* expr,
                                          cudaError_t err, const std::string& context) {
  // Non-sticky errors (out of memory, bad launch configuration) stay recorded as the "last
  // error"; clearing it keeps the next launch check from reporting this failure a second
  // time at an unrelated kernel. Sticky errors (illegal address) survive this anyway.
  (void)cudaGetLastError();
  std::string msg = ::hymba::str("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                 ") in ", expr);
  if (!context.empty()) msg += ": " + context;
  ::hymba::detail::throw_error(file, line, nullptr, msg);
}

[[noreturn]] inline void throw_cublas_error(const char* file, int line, const char* expr,
                                            cublasStatus_t st, const std::string& context) {
  std::string msg = ::hymba::str("cuBLAS error ", cublasGetStatusName(st), " (",
                                 cublasGetStatusString(st), ") in ", expr);
  if (!context.empty()) msg += ": " + context;
  ::hymba::detail::throw_error(file, line, nullptr, msg);
}

}  // namespace detail

// Makes `index` the current device for a scope and restores the previous one, so library
// code can touch a tensor's device without changing the caller's current device. Does no
// CUDA call when the device is already current (the common case in a one-GPU process).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      (void)cudaGetLastError();
      prev_ = -1;
    }
    if (index != prev_) {
      cudaError_t err = cudaSetDevice(index);
      if (err != cudaSuccess)
        detail::throw_cuda_error(__FILE__, __LINE__, "cudaSetDevice(index)", err,
                                 ::hymba::str("selecting device cuda:", index));
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    // A destructor must not throw; restoring a device that was valid a moment ago only fails
    // when the context is already broken, which the next checked call will report.
    if (switched_ && prev_ >= 0 && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

// The GPU this process should use, for one process per device (DESIGN.md, Distributed):
// the node-local rank taken from the launcher's environment, modulo the visible device
// count. The modulo matters when the launcher binds one GPU per task (Slurm
// --gpus-per-task, or CUDA_VISIBLE_DEVICES set per rank): every rank then sees one device,
// index 0. Variables are read in this order, MPI launchers first because an mpirun inside a
// Slurm allocation inherits the batch step's SLURM_LOCALID=0 in every rank:
//   OMPI_COMM_WORLD_LOCAL_RANK (Open MPI), MPI_LOCALRANKID (MPICH/Hydra),
//   MV2_COMM_WORLD_LOCAL_RANK (MVAPICH2), LOCAL_RANK (torchrun-style), SLURM_LOCALID (srun).
// None set: device 0. Throws hymba::Error when no device is visible, and UserError when a
// variable is not a non-negative integer.
int choose_device_from_env();
// The same rule on an explicit device count and environment lookup (getenv-like: nullptr for
// an unset variable), so it can be tested without GPUs.
int choose_device(int device_count, const std::function<const char*(const char*)>& getenv_fn);

}  // namespace hymba::cuda

// HYMBA_CUDA_CHECK(cudaMalloc(&p, n), "allocating ", n, " bytes"): throws hymba::Error when
// the call does not return cudaSuccess. The context pieces are optional.
#define HYMBA_CUDA_CHECK(expr, ...)                                                             \
  do {                                                                                          \
    cudaError_t hymba_cuda_err_ = (expr);                                                       \
    if (hymba_cuda_err_ != cudaSuccess) [[unlikely]] {                                          \
      ::hymba::cuda::detail::throw_cuda_error(                                                  \
          __FILE__, __LINE__, #expr, hymba_cuda_err_,                                           \
          ::hymba::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__));                             \
    }                                                                                           \
  } while (0)

#define HYMBA_CUBLAS_CHECK(expr, ...)                                                           \
  do {                                                                                          \
    cublasStatus_t hymba_cublas_st_ = (expr);                                                   \
    if (hymba_cublas_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]] {                               \
      ::hymba::cuda::detail::throw_cublas_error(                                                \
          __FILE__, __LINE__, #expr, hymba_cublas_st_,                                          \
          ::hymba::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__));                             \
    }                                                                                           \
  } while (0)

// After every kernel launch: HYMBA_CUDA_CHECK_LAUNCH("copy_strided ", meta). Catches launch
// failures (bad configuration, too many resources); faults inside the kernel surface at the
// next synchronizing call - run with CUDA_LAUNCH_BLOCKING=1 to pin them on their kernel.
#define HYMBA_CUDA_CHECK_LAUNCH(...)                                                            \
  do {                                                                                          \
    cudaError_t hymba_cuda_err_ = cudaGetLastError();                                           \
    if (hymba_cuda_err_ != cudaSuccess) [[unlikely]] {                                          \
      ::hymba::cuda::detail::throw_cuda_error(                                                  \
          __FILE__, __LINE__, "kernel launch", hymba_cuda_err_,                                 \
          ::hymba::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__));                             \
    }                                                                                           \
  } while (0)
