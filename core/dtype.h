// Element types. f64 exists for reference checks and gradcheck; models use f32/bf16/f16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "core/error.h"
#include "core/half.h"

namespace hymba {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8 };

inline constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

inline constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
  }
  return "?";
}

inline constexpr bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

// Parses "f32", "bf16", ...; throws UserError naming the accepted values.
DType parse_dtype(const std::string& s);

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };

template <typename T> struct type_tag { using type = T; };

// Calls f(type_tag<T>{}) with T the C++ type of `t`. The *_float variant accepts only the
// types CPU kernels compute in (f32 and f64) and names the op in the error otherwise.
template <typename F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(type_tag<float>{});
    case DType::F64: return f(type_tag<double>{});
    case DType::BF16: return f(type_tag<bf16>{});
    case DType::F16: return f(type_tag<f16>{});
    case DType::I32: return f(type_tag<int32_t>{});
    case DType::I64: return f(type_tag<int64_t>{});
    case DType::U8: return f(type_tag<uint8_t>{});
  }
  HYMBA_FAIL(op, ": unknown dtype");
}

template <typename F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(type_tag<float>{});
    case DType::F64: return f(type_tag<double>{});
    default: break;
  }
  HYMBA_FAIL(op, ": dtype ", dtype_name(t), " not supported here, expected f32 or f64");
}

template <typename F>
decltype(auto) dispatch_index(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32: return f(type_tag<int32_t>{});
    case DType::I64: return f(type_tag<int64_t>{});
    default: break;
  }
  HYMBA_FAIL(op, ": index dtype ", dtype_name(t), " not supported, expected i32 or i64");
}

}  // namespace hymba
