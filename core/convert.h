// Value conversion between element types: convert<To>(from). Floating types round to
// nearest; integers convert exactly between themselves; half types go through float.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "core/macros.h"

namespace hymba {

template <typename T>
inline constexpr bool is_half_v = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

template <typename To, typename From>
HYMBA_HD To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_half_v<From>) {
    return convert<To>(float(v));
  } else if constexpr (is_half_v<To>) {
    return To(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace hymba
