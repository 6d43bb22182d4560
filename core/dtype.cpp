#include "core/dtype.h"

namespace hymba {

DType parse_dtype(const std::string& s) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8})
    if (s == dtype_name(t)) return t;
  if (s == "float32" || s == "fp32") return DType::F32;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16" || s == "fp16") return DType::F16;
  HYMBA_USER_ERROR("unknown dtype '", s, "': expected one of f32, f64, bf16, f16, i32, i64, u8");
}

}  // namespace hymba
