#include "core/profiler.h"

#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string_view>
#include <unordered_map>

namespace hymba::profiler {

namespace detail {
std::atomic<bool> g_enabled{false};
std::atomic<Synchronizer> g_sync{nullptr};
}

namespace {

struct Stat {
  int64_t calls = 0;
  int64_t self_ns = 0;
};

// Keyed by the name's address: the same literal in two translation units may be two keys,
// merged by text in snapshot().
std::mutex g_mu;
std::unordered_map<const char*, Stat> g_stats;

// Per thread: for each open scope, the wall time of the scopes nested in it so far.
thread_local std::vector<int64_t> t_child_ns;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool contains(std::string_view s, std::string_view p) { return s.find(p) != std::string_view::npos; }

}  // namespace

namespace detail {

bool begin_scope() {
  if (omp_in_parallel()) return false;
  t_child_ns.push_back(0);
  return true;
}

void end_scope(const char* name, int64_t elapsed_ns) {
  int64_t child = 0;
  if (!t_child_ns.empty()) {
    child = t_child_ns.back();
    t_child_ns.pop_back();
  }
  if (!t_child_ns.empty()) t_child_ns.back() += elapsed_ns;
  std::lock_guard<std::mutex> lock(g_mu);
  Stat& s = g_stats[name];
  s.calls++;
  s.self_ns += std::max<int64_t>(0, elapsed_ns - child);
}

}  // namespace detail

void set_enabled(bool on) { detail::g_enabled.store(on, std::memory_order_relaxed); }

void set_synchronizer(detail::Synchronizer fn) { detail::g_sync.store(fn, std::memory_order_relaxed); }

void reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_stats.clear();
}

std::vector<Entry> snapshot() {
  std::map<std::string, Entry> merged;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (const auto& [name, s] : g_stats) {
      Entry& e = merged[name];
      e.name = name;
      e.calls += s.calls;
      e.self_seconds += double(s.self_ns) * 1e-9;
    }
  }
  std::vector<Entry> out;
  for (auto& [_, e] : merged) out.push_back(std::move(e));
  std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

const char* family_of(const std::string& name) {
  std::string_view n = name;
  if (starts_with(n, "matmul")) return "matmul";
  if (starts_with(n, "attention")) return "attention";
  if (starts_with(n, "selective_scan")) return "selective scan";
  if (starts_with(n, "causal_conv1d")) return "conv1d";
  if (starts_with(n, "rms_norm")) return "norm";
  if (starts_with(n, "embed_with_meta") || starts_with(n, "prepend_meta") || starts_with(n, "drop_meta"))
    return "meta tokens";
  if (starts_with(n, "embedding")) return "embedding";
  if (starts_with(n, "cross_entropy")) return "cross-entropy";
  if (contains(n, "softmax")) return "softmax";
  if (starts_with(n, "rope")) return "rope";
  if (starts_with(n, "adamw")) return "adamw";
  // Tensor::copy_ and fill_: layout changes (contiguous, transposes), casts, device moves, zeroing.
  if (n == "copy_" || n == "fill_") return "copy";
  // Element-wise maps and activations, and the reductions over them.
  static const char* const kElementwise[] = {"binary_out", "scalar_out", "unary_out", "unary_backward_out", "axpy_",
                                             "silu_", "sigmoid_", "softplus_", "swiglu_", "sum", "mean", "max"};
  for (const char* p : kElementwise)
    if (starts_with(n, p)) return "elementwise";
  // Autograd nodes (their time outside the kernels they call: copies, views, allocation).
  if (n == "AccumulateGrad" || (n.size() > 8 && n.substr(n.size() - 8) == "Backward")) return "autograd";
  return "other";
}

std::vector<FamilyEntry> by_family(const std::vector<Entry>& entries) {
  std::map<std::string, FamilyEntry> fam;
  for (const auto& e : entries) {
    FamilyEntry& f = fam[family_of(e.name)];
    f.family = family_of(e.name);
    f.calls += e.calls;
    f.self_seconds += e.self_seconds;
  }
  std::vector<FamilyEntry> out;
  for (auto& [_, f] : fam) out.push_back(std::move(f));
  std::stable_sort(out.begin(), out.end(),
                   [](const FamilyEntry& a, const FamilyEntry& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

}  // namespace hymba::profiler
