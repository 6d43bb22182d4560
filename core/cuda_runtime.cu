// Device queries, selection and synchronous copies (core/cuda_ops.h), and the device choice
// rule of core/cuda_check.h.
#include <cuda_runtime_api.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "core/cuda_check.h"
#include "core/cuda_ops.h"

namespace hymba::cuda {

int device_count() {
  int n = 0;
  // No driver, no GPU, or a driver older than the runtime all mean "no CUDA" to the caller:
  // the library must keep working on CPU, so this never throws.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

int current_device() {
  int d = 0;
  HYMBA_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void set_device(int index) {
  int n = device_count();
  HYMBA_CHECK(index >= 0 && index < n, "set_device(", index, "): ", n,
              " CUDA device(s) visible (check CUDA_VISIBLE_DEVICES)");
  HYMBA_CUDA_CHECK(cudaSetDevice(index), "selecting device cuda:", index);
}

void synchronize() {
  // Faults of earlier asynchronous work surface here, far from their cause.
  HYMBA_CUDA_CHECK(cudaDeviceSynchronize(),
                   "the error may come from any earlier kernel on the current device; rerun with "
                   "CUDA_LAUNCH_BLOCKING=1 to find which");
}

// cudaMemcpy on the legacy default stream waits for earlier work on the device and, for
// device-to-host, returns only once the bytes are on the host: exactly the ordering the
// tensor core relies on when it reads a CUDA tensor back.
void memcpy_h2d(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  HYMBA_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice), nbytes, " bytes");
}

void memcpy_d2h(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  HYMBA_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost), nbytes, " bytes");
}

void memcpy_d2d(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  HYMBA_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToDevice), nbytes, " bytes");
}

int choose_device(int device_count, const std::function<const char*(const char*)>& getenv_fn) {
  HYMBA_CHECK(device_count > 0, "no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES=",
              getenv_fn("CUDA_VISIBLE_DEVICES") ? getenv_fn("CUDA_VISIBLE_DEVICES") : "<unset>",
              ")");
  static constexpr const char* kVars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                          "MV2_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK", "SLURM_LOCALID"};
  for (const char* var : kVars) {
    const char* v = getenv_fn(var);
    if (!v || !*v) continue;
    errno = 0;
    char* end = nullptr;
    long long rank = std::strtoll(v, &end, 10);
    if (errno != 0 || *end != '\0' || rank < 0 || v[0] == '-' || v[0] == '+' || v[0] == ' ')
      HYMBA_USER_ERROR("environment variable ", var, "='", v,
                       "' is not a node-local rank (expected a non-negative integer)");
    return int(rank % device_count);
  }
  return 0;
}

int choose_device_from_env() {
  return choose_device(device_count(), [](const char* name) { return std::getenv(name); });
}

}  // namespace hymba::cuda
