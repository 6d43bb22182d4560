// bf16 and f16 storage types with bit-exact conversions usable on host and device.
//
// They are storage formats only: CPU kernels compute in f32 (DESIGN.md, Precision), so all
// we need is round-to-nearest-even conversion to and from float. On the GPU, kernels
// reinterpret these as __nv_bfloat16 / __half (same layout).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/macros.h"

namespace hymba {

HYMBA_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

HYMBA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

struct bf16 {
  uint16_t x = 0;
  bf16() = default;
  HYMBA_HD explicit bf16(float f) : x(from_float(f)) {}
  HYMBA_HD operator float() const { return bits_float(uint32_t(x) << 16); }
  HYMBA_HD static uint16_t from_float(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return uint16_t((u + rounding) >> 16);
  }
};

struct f16 {
  uint16_t x = 0;
  f16() = default;
  HYMBA_HD explicit f16(float f) : x(from_float(f)) {}
  HYMBA_HD operator float() const { return to_float(x); }

  HYMBA_HD static uint16_t from_float(float f) {
    uint32_t u = float_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // overflow -> inf
    if (a < 0x38800000u) {                                          // subnormal or zero
      // Scale into the subnormal range with float arithmetic, which rounds to nearest even.
      float v = bits_float(a) + 0.5f;  // 0.5 = 2^-1: pushes the mantissa bits we keep to the bottom
      return uint16_t(sign | (float_bits(v) - 0x3f000000u));
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
    return uint16_t(sign | (a >> 13));
  }

  HYMBA_HD static float to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
      // subnormal: mant * 2^-24
      float v = float(mant) * 5.9604644775390625e-08f;
      return sign ? -v : v;
    }
    return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  }
};

}  // namespace hymba
