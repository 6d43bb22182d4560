// Meta tokens (HYMBA_SPEC section 3): a learned (M, H) block prepended to every sequence of a
// batch, and dropped again after the final norm.
//
//   prepend:  meta (M, H), x (B, L, H) -> (B, M + L, H); backward: dmeta = sum over the batch
//             of dy[:, :M], dx = dy[:, M:].
//   drop:     x (B, M + L, H) -> x[:, M:] (B, L, H); backward pads the gradient with M zero rows.
//   embed_with_meta: the embedding lookup fused with prepend, so the (B, L, H) embeddings are
//             never written and read again: out[b, :M] = meta, out[b, M + t] = weight[ids[b, t]].
//             Backward scatter-adds dy into the table (rows equal to padding_idx get no
//             gradient; padding_idx < 0: none) and sums dy[:, :M] over the batch into dmeta.
// Reductions (dmeta, dweight) are split over columns, each column summed by one thread in
// token order: deterministic for any thread count, and free of atomics.
#pragma once

#include <cstdint>
#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
Tensor prepend_meta_forward(const Tensor& meta, const Tensor& x);
// Returns (dmeta, dx); either left undefined when not needed.
std::tuple<Tensor, Tensor> prepend_meta_backward(const Tensor& dy, int64_t num_meta, bool need_meta, bool need_x);
Tensor drop_meta_forward(const Tensor& x, int64_t num_meta);
Tensor drop_meta_backward(const Tensor& dy, int64_t num_meta);
Tensor embed_with_meta_forward(const Tensor& weight, const Tensor& ids, const Tensor& meta);
// Returns (dweight (V, H), dmeta (M, H)); either left undefined when not needed.
std::tuple<Tensor, Tensor> embed_with_meta_backward(const Tensor& dy, const Tensor& ids, int64_t vocab,
                                                    int64_t num_meta, int64_t padding_idx, bool need_weight,
                                                    bool need_meta);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// Same contract, for f32, f64 and bf16. embed_with_meta_forward validates the ids on the
// device and reads back one word; the backward sorts the ids on the host (a copy of B * L
// ids), which keeps the table gradient deterministic without atomics.
namespace cuda {
Tensor prepend_meta_forward(const Tensor& meta, const Tensor& x);
std::tuple<Tensor, Tensor> prepend_meta_backward(const Tensor& dy, int64_t num_meta, bool need_meta, bool need_x);
Tensor drop_meta_forward(const Tensor& x, int64_t num_meta);
Tensor drop_meta_backward(const Tensor& dy, int64_t num_meta);
Tensor embed_with_meta_forward(const Tensor& weight, const Tensor& ids, const Tensor& meta);
std::tuple<Tensor, Tensor> embed_with_meta_backward(const Tensor& dy, const Tensor& ids, int64_t vocab,
                                                    int64_t num_meta, int64_t padding_idx, bool need_weight,
                                                    bool need_meta);
}  // namespace cuda
#endif

inline Tensor prepend_meta_forward(const Tensor& meta, const Tensor& x) {
  return HYMBA_DISPATCH(x.device(), prepend_meta_forward, meta, x);
}
inline std::tuple<Tensor, Tensor> prepend_meta_backward(const Tensor& dy, int64_t num_meta, bool need_meta = true,
                                                        bool need_x = true) {
  return HYMBA_DISPATCH(dy.device(), prepend_meta_backward, dy, num_meta, need_meta, need_x);
}
inline Tensor drop_meta_forward(const Tensor& x, int64_t num_meta) {
  return HYMBA_DISPATCH(x.device(), drop_meta_forward, x, num_meta);
}
inline Tensor drop_meta_backward(const Tensor& dy, int64_t num_meta) {
  return HYMBA_DISPATCH(dy.device(), drop_meta_backward, dy, num_meta);
}
inline Tensor embed_with_meta_forward(const Tensor& weight, const Tensor& ids, const Tensor& meta) {
  return HYMBA_DISPATCH(weight.device(), embed_with_meta_forward, weight, ids, meta);
}
inline std::tuple<Tensor, Tensor> embed_with_meta_backward(const Tensor& dy, const Tensor& ids, int64_t vocab,
                                                           int64_t num_meta, int64_t padding_idx = -1,
                                                           bool need_weight = true, bool need_meta = true) {
  return HYMBA_DISPATCH(dy.device(), embed_with_meta_backward, dy, ids, vocab, num_meta, padding_idx, need_weight,
                        need_meta);
}

}  // namespace hymba::kernels
