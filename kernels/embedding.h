// Embedding lookup: rows of a (V, H) table gathered by integer ids of any shape.
#pragma once

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
// weight (V, H) f32/f64, ids i32/i64 of any shape -> (ids..., H). Every id must lie in
// [0, V); the error names the first bad id and V.
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
// dW (V, H) = scatter-add of grad (ids..., H) rows into the rows named by ids; the row
// `padding_idx` gets no gradient (-1: none). Deterministic: each element of dW adds its
// contributions in id order whatever the thread count.
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_embeddings, int64_t padding_idx);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// kernels/cuda/embedding.cu: also bf16 (sums in fp32). Backward is deterministic and sums in
// the CPU's order. A bad id is detected on the device; each call reads one flag back.
namespace cuda {
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_embeddings, int64_t padding_idx);
}  // namespace cuda
#endif

inline Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  check_same_device("embedding", weight, ids);
  return HYMBA_DISPATCH(weight.device(), embedding_forward, weight, ids);
}

inline Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_embeddings,
                                 int64_t padding_idx = -1) {
  check_same_device("embedding_backward", grad, ids);
  return HYMBA_DISPATCH(grad.device(), embedding_backward, grad, ids, num_embeddings, padding_idx);
}

}  // namespace hymba::kernels
