// Counter-based hashing and a tiny PRNG for the data pipeline.
//
// Data decisions (train/val split, random windows, MQAR samples) must be reproducible on any
// machine, thread count and rank count, so they never use std:: distributions (whose output
// differs between standard libraries) nor shared generator state: every decision is a pure
// function of (seed, index).
#pragma once

#include <cstdint>

namespace hymba::data {

// SplitMix64 finalizer (Steele et al., 2014): a bijective, well-mixed 64-bit hash.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Hash of (seed, stream, index): distinct streams give independent sequences for one seed.
inline uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ stream) ^ index);
}

// Uniform double in [0, 1) from the top 53 bits.
inline double unit_double(uint64_t x) { return double(x >> 11) * 0x1.0p-53; }

// Uniform integer in [0, n) from a hash value (n > 0). Uses the 128-bit multiply-shift
// (Lemire); the bias is at most n / 2^64, far below anything measurable here.
inline uint64_t bounded(uint64_t x, uint64_t n) {
  return uint64_t((static_cast<unsigned __int128>(x) * n) >> 64);
}

// Stream ids, so that the same seed never correlates two kinds of decision.
enum : uint64_t {
  kStreamSplit = 0x5350'4C49'5400ull,    // train/val split of documents
  kStreamWindow = 0x5749'4E44'4F57ull,   // random loader windows
  kStreamMqar = 0x4D51'4152'0000ull,     // MQAR samples
};

// A small sequential generator (SplitMix64 stream) for code that draws several numbers per
// item, seeded per item from hash3 so items stay independent of each other.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    s_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = s_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return bounded(next(), n); }
  double uniform() { return unit_double(next()); }

 private:
  uint64_t s_;
};

// True when document `doc_index` belongs to the validation split.
inline bool is_val_document(uint64_t seed, uint64_t doc_index, double val_fraction) {
  return val_fraction > 0 && unit_double(hash3(seed, kStreamSplit, doc_index)) < val_fraction;
}

}  // namespace hymba::data
