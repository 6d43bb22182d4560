// The process-wide choice of CUDA scan and attention implementations (kernels/cuda_impl.h).
#include <atomic>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "core/error.h"
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

// -1: not read from the environment yet. Atomics because data-parallel trainers and test
// threads may launch kernels from several threads; the value itself changes only by hand.
std::atomic<int> g_scan{-1};
std::atomic<int> g_attention{-1};
std::atomic<int> g_scan_forward{-1};
std::atomic<int> g_scan_backward{-1};

// The value of `var` as an index into `names` (in enum order), or fallback when unset.
int from_env(const char* var, std::initializer_list<const char*> names, int fallback) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0') return fallback;
  const std::string s(v);
  const int count = int(names.size());
  int i = 0;
  std::string expected;
  for (const char* n : names) {
    if (s == n) return i;
    expected += std::string(i == 0 ? "" : i == count - 1 ? " or " : ", ") + "'" + n + "'";
    ++i;
  }
  HYMBA_USER_ERROR("environment variable ", var, "='", s, "': expected ", expected);
}

int resolve(std::atomic<int>& slot, const char* var, std::initializer_list<const char*> names, int fallback) {
  int v = slot.load(std::memory_order_relaxed);
  if (v < 0) {
    v = from_env(var, names, fallback);
    int expected = -1;
    // A concurrent setter wins: its explicit choice must not be overwritten by the default.
    if (!slot.compare_exchange_strong(expected, v)) v = expected;
  }
  return v;
}

constexpr std::initializer_list<const char*> kScanNames = {"sequential", "blocked"};
constexpr std::initializer_list<const char*> kAttentionNames = {"wmma", "mma"};
constexpr std::initializer_list<const char*> kScanForwardNames = {"steps16",  "steps8x2", "steps8b4",
                                                                    "steps16h", "steps16q", "steps16hg"};
constexpr std::initializer_list<const char*> kScanBackwardNames = {"steps8h", "steps8", "steps8q"};

// The fast kernels, since they passed the CUDA tests and the bf16 training curve on an H100
// (kernels/cuda_impl.h); the forward shape measured there.
constexpr ScanImpl kDefaultScan = ScanImpl::Blocked;
constexpr AttentionImpl kDefaultAttention = AttentionImpl::Mma;
constexpr ScanForward kDefaultScanForward = ScanForward::Steps16Half;
constexpr ScanBackward kDefaultScanBackward = ScanBackward::Steps8Half;

const char* name_at(std::initializer_list<const char*> names, int i) { return names.begin()[i]; }

}  // namespace

ScanImpl scan_impl() { return ScanImpl(resolve(g_scan, "HYMBA_CUDA_SCAN", kScanNames, int(kDefaultScan))); }
void set_scan_impl(ScanImpl impl) { g_scan.store(int(impl)); }
AttentionImpl attention_impl() {
  return AttentionImpl(resolve(g_attention, "HYMBA_CUDA_ATTENTION", kAttentionNames, int(kDefaultAttention)));
}
void set_attention_impl(AttentionImpl impl) { g_attention.store(int(impl)); }
ScanForward scan_forward() {
  return ScanForward(resolve(g_scan_forward, "HYMBA_CUDA_SCAN_FORWARD", kScanForwardNames, int(kDefaultScanForward)));
}
void set_scan_forward(ScanForward shape) { g_scan_forward.store(int(shape)); }
ScanBackward scan_backward() {
  return ScanBackward(
      resolve(g_scan_backward, "HYMBA_CUDA_SCAN_BACKWARD", kScanBackwardNames, int(kDefaultScanBackward)));
}
void set_scan_backward(ScanBackward shape) { g_scan_backward.store(int(shape)); }

const char* impl_name(ScanImpl impl) { return name_at(kScanNames, int(impl)); }
const char* impl_name(AttentionImpl impl) { return name_at(kAttentionNames, int(impl)); }
const char* impl_name(ScanForward shape) { return name_at(kScanForwardNames, int(shape)); }
const char* impl_name(ScanBackward shape) { return name_at(kScanBackwardNames, int(shape)); }

}  // namespace hymba::kernels::cuda
