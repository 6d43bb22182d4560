// The CUDA caching allocator (core/allocator.h).
//
// cudaMalloc and cudaFree synchronize the device and cost tens of microseconds; a training
// step frees and reallocates the same activation sizes every iteration. So freed blocks are
// kept in free lists keyed by their (rounded) size and handed out again, and memory only
// goes back to the driver on empty_cache() or when cudaMalloc runs out.
//
// Size classes: requests under 1 MiB round up to 512 B and are reused only for the same
// rounded size (they are cheap, and exact reuse keeps small blocks from pinning big ones);
// larger requests round up to 2 MiB and take the smallest cached block that wastes at most
// an eighth of the request (never less than one 2 MiB step), so a sequence length that
// varies by a few tokens still hits the cache.
//
// Streams: every block is assumed to be used on the legacy default stream, which orders all
// work, so a freed block can be handed out at once. When kernels move to other streams the
// cache must become per stream (or record events on free) - see the issue "caching
// allocator: reuse per stream".
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/allocator.h"
#include "core/cuda_check.h"
#include "core/cuda_ops.h"

namespace hymba {

namespace {
std::atomic<bool> g_poison{false};
}  // namespace
void set_cuda_poison_allocations(bool on) { g_poison.store(on); }
bool cuda_poison_allocations() { return g_poison.load(std::memory_order_relaxed); }

namespace {

constexpr size_t kSmallLimit = size_t(1) << 20;  // requests below this are "small"
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

size_t block_size_for(size_t nbytes) {
  return nbytes < kSmallLimit ? round_up(nbytes, kSmallRound) : round_up(nbytes, kLargeRound);
}

// The largest cached block a large request may take.
size_t max_large_fit(size_t rounded) {
  size_t slack = rounded / 8 < kLargeRound ? kLargeRound : round_up(rounded / 8, kLargeRound);
  return rounded + slack;
}

std::string mib(size_t bytes) { return str(double(bytes) / double(1 << 20), " MiB"); }

class CudaCachingAllocator final : public Allocator {
 public:
  explicit CudaCachingAllocator(int device) : device_(device) {}

  void* allocate(size_t nbytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.num_allocs++;
    if (nbytes == 0) return nullptr;  // empty tensors own no memory; deallocate ignores null
    const size_t size = block_size_for(nbytes);
    auto [p, got] = take_cached(size);
    if (!p) {
      p = system_alloc(nbytes, size);
      got = size;
    }
    // Test mode: every handed-out block starts as 0xFF bytes (NaN in every float dtype), so
    // an output element a kernel forgot to write cannot pass a comparison by luck.
    if (cuda_poison_allocations()) HYMBA_CUDA_CHECK(cudaMemset(p, 0xFF, got), "poisoning ", got, " bytes");
    active_.emplace(p, got);
    stats_.allocated += got;
    if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(ptr);
    // Called from Storage's destructor, so this terminates rather than unwinds; a pointer we
    // never handed out means memory corruption or a double free, and stopping is right.
    HYMBA_CHECK(it != active_.end(), "cuda:", device_, " allocator: deallocate(", ptr, ", ", nbytes,
                ") of a pointer it did not allocate (double free?)");
    size_t size = it->second;
    active_.erase(it);
    stats_.allocated -= size;
    (size < kSmallLimit ? small_free_ : large_free_).emplace(size, ptr);
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached();
  }

 private:
  // Pops a cached block for a request of rounded size `size`: {block, its real size, which
  // a best fit makes larger than `size`}, or {nullptr, 0}.
  std::pair<void*, size_t> take_cached(size_t size) {
    auto& pool = size < kSmallLimit ? small_free_ : large_free_;
    auto it = pool.lower_bound(size);
    const size_t limit = size < kSmallLimit ? size : max_large_fit(size);
    if (it == pool.end() || it->first > limit) return {nullptr, 0};
    std::pair<void*, size_t> found{it->second, it->first};
    pool.erase(it);
    return found;
  }

  void* system_alloc(size_t nbytes, size_t size) {
    cuda::DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation && (!small_free_.empty() || !large_free_.empty())) {
      // The cache may hold enough in blocks of the wrong size: give them back and retry once.
      (void)cudaGetLastError();
      release_cached();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess && err != cudaErrorMemoryAllocation) {
      // Not a shortage: typically a sticky error left by an earlier faulting kernel.
      HYMBA_CUDA_CHECK(err, "cudaMalloc of ", size, " bytes on cuda:", device_);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
      HYMBA_FAIL("cuda:", device_, " out of memory: cudaMalloc of ", size, " bytes (", mib(size),
                 ", for a request of ", nbytes, " bytes) failed with ", cudaGetErrorName(err),
                 ". Allocator: ", mib(stats_.allocated), " allocated, ", mib(stats_.reserved),
                 " reserved, peak ", mib(stats_.peak_allocated), ". Device: ", mib(free_b),
                 " free of ", mib(total_b),
                 ". Try a smaller batch or sequence length, or activation recomputation.");
    }
    stats_.reserved += size;
    stats_.num_system_allocs++;
    return p;
  }

  // Caller holds mu_. Each block leaves the pool before cudaFree, so a failing cudaFree
  // (a broken context) cannot leave a freed pointer behind to be handed out or freed again.
  void release_cached() {
    if (small_free_.empty() && large_free_.empty()) return;
    cuda::DeviceGuard guard(device_);
    for (auto* pool : {&small_free_, &large_free_}) {
      while (!pool->empty()) {
        auto [size, p] = *pool->begin();
        pool->erase(pool->begin());
        stats_.reserved -= size;
        HYMBA_CUDA_CHECK(cudaFree(p), "returning a cached block of ", size, " bytes on cuda:", device_);
      }
    }
  }

  const int device_;
  mutable std::mutex mu_;
  AllocatorStats stats_;
  std::unordered_map<void*, size_t> active_;  // handed-out block -> its real size
  std::multimap<size_t, void*> small_free_;   // rounded size -> cached block
  std::multimap<size_t, void*> large_free_;
};

}  // namespace

Allocator* cuda_caching_allocator(int device_index) {
  // One allocator per device, created on first use and never destroyed: tensors held in
  // statics (or leaked by a crashing test) may be freed after static destruction would have
  // run, and the CUDA runtime may already be torn down by then; the driver reclaims the
  // memory at process exit anyway.
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<CudaCachingAllocator*>, kMaxDevices> allocators{};
  static std::mutex create_mu;
  if (device_index >= 0 && device_index < kMaxDevices) {
    if (auto* a = allocators[device_index].load(std::memory_order_acquire)) return a;
  }
  const int n = cuda_device_count();
  HYMBA_CHECK(device_index >= 0 && device_index < n && device_index < kMaxDevices,
              "no allocator for cuda:", device_index, ": ", n,
              " CUDA device(s) visible (check CUDA_VISIBLE_DEVICES)");
  std::lock_guard<std::mutex> lock(create_mu);
  auto* a = allocators[device_index].load(std::memory_order_acquire);
  if (!a) {
    a = new CudaCachingAllocator(device_index);
    allocators[device_index].store(a, std::memory_order_release);
  }
  return a;
}

}  // namespace hymba
