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

// Argument checks shared by the CPU and CUDA kernels. Each backend passes its own FloatCheck:
// float_check() with the dtypes it takes, plus its device rule.
namespace meta_check {

using FloatCheck = void (*)(const char* op, const char* what, const Tensor& t);

inline void float_check(const char* op, const char* what, const Tensor& t, bool (*dtype_ok)(DType),
                        const char* dtypes) {
  HYMBA_CHECK(t.defined(), op, ": ", what, " is undefined");
  HYMBA_CHECK(dtype_ok(t.dtype()), op, ": ", what, " has dtype ", dtype_name(t.dtype()), ", expected ", dtypes, " (",
              t.meta_str(), ")");
}

inline void check_seq(const char* op, const char* what, const Tensor& t, FloatCheck check_float) {
  check_float(op, what, t);
  HYMBA_CHECK(t.dim() == 3, op, ": expected ", what, " (B, T, H), got ", shape_str(t.shape()));
}

inline void check_ids(const char* op, const Tensor& ids) {
  HYMBA_CHECK(ids.defined() && ids.dim() == 2 && (ids.dtype() == DType::I32 || ids.dtype() == DType::I64), op,
              ": expected ids (B, L) of i32 or i64, got ", ids.defined() ? ids.meta_str() : "undefined");
}

// num_meta within [0, T] of a (B, T, H) tensor.
inline void check_num_meta(const char* op, const char* what, const Tensor& t, int64_t M) {
  HYMBA_CHECK(M >= 0 && M <= t.size(1), op, ": num_meta ", M, " out of range for ", what, " ", shape_str(t.shape()));
}

inline void check_prepend(const char* op, const Tensor& meta, const Tensor& x, FloatCheck check_float) {
  check_float(op, "meta", meta);
  check_seq(op, "x", x, check_float);
  HYMBA_CHECK(meta.dim() == 2 && meta.size(1) == x.size(2), op, ": meta ", shape_str(meta.shape()),
              " does not match x ", shape_str(x.shape()), " (expected (M, ", x.size(2), "))");
  check_same_dtype(op, meta, x);
  check_same_device(op, meta, x);
}

inline void check_embed_forward(const char* op, const Tensor& w, const Tensor& ids, const Tensor& meta,
                                FloatCheck check_float) {
  check_float(op, "weight", w);
  check_float(op, "meta", meta);
  HYMBA_CHECK(w.dim() == 2, op, ": expected weight (V, H), got ", shape_str(w.shape()));
  check_ids(op, ids);
  HYMBA_CHECK(meta.dim() == 2 && meta.size(1) == w.size(1), op, ": meta ", shape_str(meta.shape()),
              " does not match weight ", shape_str(w.shape()), " (expected (M, ", w.size(1), "))");
  check_same_dtype(op, w, meta);
  check_same_device(op, w, meta);
  check_same_device(op, w, ids);
}

inline void check_embed_backward(const char* op, const Tensor& dy, const Tensor& ids, int64_t M,
                                 FloatCheck check_float) {
  check_seq(op, "dy", dy, check_float);
  check_ids(op, ids);
  HYMBA_CHECK(M >= 0 && dy.size(0) == ids.size(0) && dy.size(1) == M + ids.size(1), op, ": dy ",
              shape_str(dy.shape()), " does not match ids ", shape_str(ids.shape()), " with ", M, " meta tokens");
}

// The forward's error for the first bad id, at flat position n of (B, L) ids.
[[noreturn]] inline void fail_bad_token(const char* op, int64_t id, int64_t n, int64_t L, const Tensor& w) {
  HYMBA_FAIL(op, ": token id ", id, " at (", n / L, ", ", n % L, ") out of range for weight ", shape_str(w.shape()));
}

// The backward's check of n host ids against a vocab of V.
inline void check_token_ids(const char* op, const int64_t* ids, int64_t n, int64_t V) {
  for (int64_t i = 0; i < n; ++i)
    HYMBA_CHECK(ids[i] >= 0 && ids[i] < V, op, ": token id ", ids[i], " out of range for vocab ", V);
}

}  // namespace meta_check

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
