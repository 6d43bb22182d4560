// Embedding lookup: rows of a (V, H) table gathered by integer ids of any shape.
#pragma once

#include <string>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Argument checks and output shapes shared by the CPU and CUDA kernels (each backend adds its
// own dtype and device rules).
namespace embed_check {

// weight must be (V, H).
inline void check_weight(const char* op, const Tensor& weight) {
  HYMBA_CHECK(weight.defined() && weight.dim() == 2, op, ": weight must be 2-D (V, H), got ",
              weight.defined() ? weight.meta_str() : "undefined");
}

// The forward output: ids' shape + [H].
inline Shape output_shape(const Tensor& ids, int64_t H) {
  Shape s = ids.shape();
  s.push_back(H);
  return s;
}

inline void check_backward(const char* op, const Tensor& grad, const Tensor& ids, int64_t V, int64_t padding_idx) {
  HYMBA_CHECK(grad.defined() && ids.defined(), op, ": undefined gradient or ids");
  HYMBA_CHECK(V >= 0, op, ": negative table size ", V);
  HYMBA_CHECK(padding_idx == -1 || (padding_idx >= 0 && padding_idx < V), op, ": padding_idx ", padding_idx,
              " out of range for a table of V = ", V, " rows (-1 means none)");
  HYMBA_CHECK(grad.dim() == ids.dim() + 1 && Shape(grad.shape().begin(), grad.shape().end() - 1) == ids.shape(), op,
              ": gradient ", grad.meta_str(), " does not match ids ", ids.meta_str(), " (expected ids' shape + [H])");
}

// The error for the first id (in flat order) outside [0, V); `table` describes the table.
[[noreturn]] inline void fail_bad_id(const char* op, int64_t id, int64_t pos, const Tensor& ids, int64_t V,
                                     const std::string& table) {
  HYMBA_FAIL(op, ": id ", id, " (at flat position ", pos, " of ids ", ids.meta_str(),
             ") out of range for a table of V = ", V, " rows ", table);
}

}  // namespace embed_check

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
