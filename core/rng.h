// Random number generator state: a Philox key (the seed) and a counter offset. Each fill
// consumes a contiguous range of counters, so a generator replays exactly from (seed, offset)
// - which is what a checkpoint stores to resume bit-identically.
#pragma once

#include <cstdint>

namespace hymba {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves `blocks` Philox counters and returns the first.
  uint64_t advance(uint64_t blocks) { uint64_t o = offset_; offset_ += blocks; return o; }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

// The process-wide default generator (seed 0 until manual_seed is called).
Generator& default_generator();
inline void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace hymba
