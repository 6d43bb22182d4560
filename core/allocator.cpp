#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "core/error.h"

namespace hymba {
namespace {

// Plain aligned malloc with statistics. glibc's malloc already caches small blocks, and large
// ones come from mmap; a caching layer would not pay for itself on CPU.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    size_t n = (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    if (n == 0) n = kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, n);
    if (!p) HYMBA_FAIL("CPU allocation of ", nbytes, " bytes failed");
    std::lock_guard<std::mutex> g(mu_);
    stats_.allocated += nbytes;
    stats_.reserved += nbytes;
    stats_.num_allocs++;
    stats_.num_system_allocs++;
    if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
    return p;
  }
  void deallocate(void* ptr, size_t nbytes) override {
    std::free(ptr);
    std::lock_guard<std::mutex> g(mu_);
    stats_.allocated -= nbytes;
    stats_.reserved -= nbytes;
  }
  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> g(mu_);
    stats_.peak_allocated = stats_.allocated;
  }

 private:
  mutable std::mutex mu_;
  AllocatorStats stats_;
};

}  // namespace

Allocator* get_allocator(Device d) {
  if (d.is_cpu()) {
    static CpuAllocator cpu;
    return &cpu;
  }
#ifdef HYMBA_WITH_CUDA
  return cuda_caching_allocator(d.index);
#else
  HYMBA_FAIL("device ", d.str(), " requested but this build of hymba has no CUDA support "
             "(rebuild with -DHYMBA_CUDA=ON on a machine with nvcc)");
#endif
}

}  // namespace hymba
