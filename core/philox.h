// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Counter-based: the numbers for element i depend only on (seed, counter), so CPU and CUDA
// compute the same values with no shared state, and any element can be generated alone.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/macros.h"

namespace hymba::philox {

struct U32x4 {
  uint32_t v[4];
};

HYMBA_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// 10 rounds on a 128-bit counter with a 64-bit key.
HYMBA_HD U32x4 philox4x32_10(uint64_t counter, uint64_t key) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 (float) or 53 (double) random bits.
HYMBA_HD float u32_to_unit_float(uint32_t x) { return float(x >> 8) * 5.9604644775390625e-08f; }
HYMBA_HD double u64_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t x = (uint64_t(hi) << 21) ^ (uint64_t(lo) >> 11);
  return double(x & ((uint64_t(1) << 53) - 1)) * 1.1102230246251565e-16;
}

// a + s * x with two roundings, on both sides. Compilers contract it into one FMA when they
// may (nvcc always; GCC for C++ with FMA hardware), which changes the last bit of f64 fills,
// and uniform fills must match bit for bit between CPU and CUDA.
HYMBA_HD double affine_rn(double a, double s, double x) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, __dmul_rn(s, x));
#else
  volatile double p = s * x;
  return a + p;
#endif
}

// The layout shared by the CPU and CUDA generators. Element i of a fill with generator state
// (seed, offset):
//  - 32-bit outputs (f32/bf16/f16 values): block = offset + i / 4, lane i % 4.
//    normal: Box-Muller on the pairs (lane 0, 1) and (lane 2, 3) of the block.
//  - f64 outputs: block = offset + i / 2; element uses lanes (2*(i%2), 2*(i%2)+1) for its
//    uniform; normal uses all four lanes (two 53-bit uniforms) and takes cos or sin.
// Box-Muller runs in double on both sides and is rounded once, so f32 results agree
// bit-for-bit between CPU and CUDA up to the last-ulp accuracy of the device's log/cos.
HYMBA_HD uint64_t blocks_needed(uint64_t n, bool wide) { return wide ? (n + 1) / 2 : (n + 3) / 4; }

HYMBA_HD double uniform_at(uint64_t seed, uint64_t offset, uint64_t i, bool wide) {
  if (wide) {
    U32x4 r = philox4x32_10(offset + i / 2, seed);
    int l = int(i % 2) * 2;
    return u64_to_unit_double(r.v[l], r.v[l + 1]);
  }
  U32x4 r = philox4x32_10(offset + i / 4, seed);
  return double(u32_to_unit_float(r.v[i % 4]));
}

HYMBA_HD double normal_at(uint64_t seed, uint64_t offset, uint64_t i, bool wide) {
  const double two_pi = 6.283185307179586;
  if (wide) {
    U32x4 r = philox4x32_10(offset + i / 2, seed);
    double u1 = u64_to_unit_double(r.v[0], r.v[1]);
    double u2 = u64_to_unit_double(r.v[2], r.v[3]);
    double rad = sqrt(-2.0 * log(1.0 - u1));  // 1 - u1 in (0, 1]: log is finite
    return (i % 2 == 0) ? rad * cos(two_pi * u2) : rad * sin(two_pi * u2);
  }
  U32x4 r = philox4x32_10(offset + i / 4, seed);
  int pair = int(i % 4) / 2;
  double u1 = double(u32_to_unit_float(r.v[2 * pair]));
  double u2 = double(u32_to_unit_float(r.v[2 * pair + 1]));
  double rad = sqrt(-2.0 * log(1.0 - u1));
  return (i % 2 == 0) ? rad * cos(two_pi * u2) : rad * sin(two_pi * u2);
}

}  // namespace hymba::philox
