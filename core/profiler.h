// Op-family profiler: wall time per kernel name, for `hymba bench train`.
//
// Scopes are opened in one place, the kernel dispatch macros (kernels/dispatch.h), and by
// the autograd engine around each node's backward. While profiling is off a scope costs one
// branch on a global flag. While on, each scope records its SELF time (its wall time minus
// that of the scopes nested in it, on the same thread), so nested scopes never count the
// same nanosecond twice and the self times of a run add up to the time spent inside scopes.
// Scopes opened inside an OpenMP parallel region are ignored: only the calling thread
// measures, and it measures the whole region.
//
// Times are host wall clock: on CUDA they are launch times unless the caller synchronizes. With
// a synchronizer installed (set_synchronizer: `hymba bench train --profile` on CUDA installs a
// device synchronize), each scope waits for the device at both ends, so its self time is the
// time its kernels ran plus one launch and one synchronization: the split is device time, and
// the whole run is slower by a few microseconds per scope.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace hymba::profiler {

namespace detail {
extern std::atomic<bool> g_enabled;
using Synchronizer = void (*)();
extern std::atomic<Synchronizer> g_sync;
// Returns false when the scope must not record (inside an OpenMP parallel region).
bool begin_scope();
void end_scope(const char* name, int64_t elapsed_ns);
}  // namespace detail

inline bool enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }
// Turns recording on or off for every thread (scopes already open finish normally).
void set_enabled(bool on);
// Drops every recorded figure.
void reset();
// Called at both ends of every recording scope (nullptr: none, the default).
void set_synchronizer(detail::Synchronizer fn);

class Scope {
 public:
  // `name` must outlive the profile (a string literal: the dispatch macros pass #fn).
  explicit Scope(const char* name) {
    if (enabled() && detail::begin_scope()) {
      name_ = name;
      sync();
      t0_ = std::chrono::steady_clock::now();
    }
  }
  ~Scope() {
    if (name_) {
      sync();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count();
      detail::end_scope(name_, int64_t(ns));
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  static void sync() {
    if (detail::Synchronizer fn = detail::g_sync.load(std::memory_order_relaxed)) fn();
  }
  const char* name_ = nullptr;
  std::chrono::steady_clock::time_point t0_;
};

struct Entry {
  std::string name;
  int64_t calls = 0;
  double self_seconds = 0.0;
};

// Every name recorded since the last reset, summed over threads, largest self time first.
std::vector<Entry> snapshot();

// The op family of a kernel (or autograd node) name: matmul, attention, selective scan,
// conv1d, norm, elementwise, embedding, cross-entropy, softmax, rope, meta tokens, adamw,
// copy (Tensor::copy_ and fill_), autograd (node bookkeeping outside kernels) or other.
const char* family_of(const std::string& name);

struct FamilyEntry {
  std::string family;
  int64_t calls = 0;
  double self_seconds = 0.0;
};
// snapshot() grouped by family_of, largest first.
std::vector<FamilyEntry> by_family(const std::vector<Entry>& entries);

}  // namespace hymba::profiler
