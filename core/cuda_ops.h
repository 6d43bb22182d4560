// The few device primitives the tensor core itself needs (implemented in core/cuda_runtime.cu
// and core/cuda_copy.cu; only present in CUDA builds). Op kernels live in kernels/cuda.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace hymba::cuda {

int device_count();            // 0 when the driver finds no GPU (never throws)
int current_device();
void set_device(int index);
void synchronize();             // the current device
// Synchronous copies on the current stream.
void memcpy_h2d(void* dst, const void* src, size_t nbytes);
void memcpy_d2h(void* dst, const void* src, size_t nbytes);
void memcpy_d2d(void* dst, const void* src, size_t nbytes);

// dst[i] = cast(src[i]) for same-shape strided views on the same CUDA device, any dtypes.
void copy_strided(const Tensor& dst, const Tensor& src);
void fill(const Tensor& dst, double value);
// Fills with philox::uniform_at / normal_at values (core/philox.h), scaled: uniform in
// [a, b), or normal with mean a and std b. Element order is the row-major order of dst.
void philox_fill(const Tensor& dst, uint64_t seed, uint64_t offset, bool normal, double a, double b);

}  // namespace hymba::cuda
