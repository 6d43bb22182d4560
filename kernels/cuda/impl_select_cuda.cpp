// The process-wide choice of CUDA scan and attention implementation (kernels/cuda_impl.h).
#include <atomic>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

// -1: not read from the environment yet. Atomics because data-parallel trainers and test
// threads may launch kernels from several threads; the value itself changes only by hand.
std::atomic<int> g_scan{-1};
std::atomic<int> g_attention{-1};

int from_env(const char* var, const char* first, const char* second, int fallback) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0') return fallback;
  const std::string s(v);
  if (s == first) return 0;
  if (s == second) return 1;
  HYMBA_USER_ERROR("environment variable ", var, "='", s, "': expected '", first, "' or '", second, "'");
}

int resolve(std::atomic<int>& slot, const char* var, const char* first, const char* second, int fallback) {
  int v = slot.load(std::memory_order_relaxed);
  if (v < 0) {
    v = from_env(var, first, second, fallback);
    int expected = -1;
    // A concurrent setter wins: its explicit choice must not be overwritten by the default.
    if (!slot.compare_exchange_strong(expected, v)) v = expected;
  }
  return v;
}

// The fast kernels, since they passed the CUDA tests and the bf16 training curve on an H100
// (kernels/cuda_impl.h).
constexpr ScanImpl kDefaultScan = ScanImpl::Blocked;
constexpr AttentionImpl kDefaultAttention = AttentionImpl::Mma;

}  // namespace

ScanImpl scan_impl() {
  return ScanImpl(resolve(g_scan, "HYMBA_CUDA_SCAN", "sequential", "blocked", int(kDefaultScan)));
}
void set_scan_impl(ScanImpl impl) { g_scan.store(int(impl)); }
AttentionImpl attention_impl() {
  return AttentionImpl(resolve(g_attention, "HYMBA_CUDA_ATTENTION", "wmma", "mma", int(kDefaultAttention)));
}
void set_attention_impl(AttentionImpl impl) { g_attention.store(int(impl)); }

const char* impl_name(ScanImpl impl) { return impl == ScanImpl::Sequential ? "sequential" : "blocked"; }
const char* impl_name(AttentionImpl impl) { return impl == AttentionImpl::Wmma ? "wmma" : "mma"; }

}  // namespace hymba::kernels::cuda
