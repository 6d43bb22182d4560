// Memory allocators. CPU: 64-byte aligned (cache line / AVX-512). CUDA: a caching allocator
// (core/cuda_allocator.cu) so that the per-step alloc/free pattern of training does not hit
// cudaMalloc/cudaFree, which synchronize the device.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace hymba {

struct AllocatorStats {
  size_t allocated = 0;       // bytes handed out and not yet returned
  size_t reserved = 0;        // bytes held from the system (allocated + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset
  size_t num_allocs = 0;      // calls to allocate()
  size_t num_system_allocs = 0;  // calls that went to the system (malloc / cudaMalloc)
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached, unused blocks to the system (no-op for the CPU allocator).
  virtual void empty_cache() {}
};

// The allocator for a device; one CUDA allocator per device index.
Allocator* get_allocator(Device d);

constexpr size_t kCpuAlignment = 64;

#ifdef HYMBA_WITH_CUDA
// Defined in core/cuda_allocator.cu.
Allocator* cuda_caching_allocator(int device_index);
// Tests: when on, every CUDA block handed out is first filled with 0xFF bytes (NaN for every
// float dtype), so an output element a kernel never wrote fails the comparison.
void set_cuda_poison_allocations(bool on);
bool cuda_poison_allocations();
#endif

}  // namespace hymba
