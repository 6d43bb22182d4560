#include "layers/precision.h"

#include "autograd/ops.h"

namespace hymba {

namespace {
thread_local std::optional<DType> t_compute_dtype;
}  // namespace

std::optional<DType> compute_dtype() { return t_compute_dtype; }

void set_compute_dtype(std::optional<DType> dtype) {
  HYMBA_CHECK(!dtype || is_floating(*dtype), "set_compute_dtype: ", dtype_name(*dtype), " is not a floating dtype");
  t_compute_dtype = dtype;
}

Tensor compute_cast(const Tensor& t) {
  if (!t_compute_dtype || !t.defined() || !is_floating(t.dtype()) || t.dtype() == *t_compute_dtype) return t;
  return cast(t, *t_compute_dtype);
}

Tensor cast_like(const Tensor& p, const Tensor& like) {
  if (!p.defined() || p.dtype() == like.dtype()) return p;
  return cast(p, like.dtype());
}

Tensor loss_logits(const Tensor& logits) {
  if (logits.dtype() == DType::BF16 && logits.device().is_cuda()) return logits;
  if (logits.dtype() == DType::BF16 || logits.dtype() == DType::F16) return cast(logits, DType::F32);
  return logits;
}

}  // namespace hymba
