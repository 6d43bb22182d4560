// Causal grouped-query attention with an optional sliding window and a meta-token prefix
// (HYMBA_SPEC section 2).
//
// q (B, Hq, T, dk), k (B, Hkv, T, dk), v (B, Hkv, T, dv); Hq is a multiple of Hkv and query
// head h reads kv head h / (Hq / Hkv); dv may differ from dk (Hymba: 64 and 128). Key j is
// visible from query i iff j <= i and (window < 0, or i - j <= window, or j < num_meta):
// a sliding-window layer sees window + 1 recent keys plus the meta prefix.
//
// Flash-style: the forward runs an online softmax over key tiles and never forms the T x T
// matrix; tiles wholly outside the mask are never visited, so a sliding-window layer costs
// O(T (window + num_meta)). It returns the output (B, Hq, T, dv) and the log-sum-exp of each
// query row (B, Hq, T), which is all backward needs to recompute the probabilities.
// lse is f64 for f64 inputs and f32 otherwise.
//
// Backward: dk and dv are summed over the query heads of a group, each (b, kv head, key tile)
// computed by one thread in a fixed order; dq by (b, q head, query tile). Results are
// bit-identical for any thread count.
//
// Decode: new queries at explicit positions against a cache of keys at explicit positions
// (see attention_decode). The mask rule is the same, so its output equals the corresponding
// rows of the full forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "core/macros.h"
#include "kernels/dispatch.h"

namespace hymba::kernels {

struct AttentionParams {
  double scale = 0;      // <= 0: 1 / sqrt(dk)
  int64_t window = -1;   // < 0: full causal attention
  int64_t num_meta = 0;  // keys [0, num_meta) stay visible to every later query
};

// Tile sizes of the CPU kernels; the visibility helpers below are written for any sizes so
// the CUDA kernels can use their own (they are HYMBA_HD: the CUDA kernels call the same
// definitions on the device).
inline constexpr int64_t kAttnQueryTile = 64;
inline constexpr int64_t kAttnKeyTile = 64;

// Whether key j is visible from query i (the one definition every kernel follows).
HYMBA_HD bool attention_visible(int64_t i, int64_t j, int64_t window, int64_t num_meta) {
  return j <= i && (window < 0 || i - j <= window || j < num_meta);
}

enum class TileVisibility { None, Partial, All };

// How much of the block queries [q0, q1) x keys [k0, k1) is visible (both ranges non-empty).
HYMBA_HD TileVisibility attention_tile_visibility(int64_t q0, int64_t q1, int64_t k0, int64_t k1, int64_t window,
                                                  int64_t num_meta) {
  // Some pair is visible iff the last query reaches the first key causally and either the
  // layer is full, the first key is a meta key (visible to every query at or after it), or the
  // smallest distance q0 - (k1 - 1) fits the window.
  const bool any = k0 <= q1 - 1 && (window < 0 || k0 < num_meta || q0 - (k1 - 1) <= window);
  if (!any) return TileVisibility::None;
  // Every pair is visible iff the whole block is below the diagonal and every non-meta key
  // is within the window of the farthest query.
  const bool all = k1 - 1 <= q0 && (window < 0 || k1 <= num_meta || q1 - 1 - std::max(k0, num_meta) <= window);
  return all ? TileVisibility::All : TileVisibility::Partial;
}

// The key tiles (of size key_tile) that queries [q0, q1) may see, as two ranges of tile
// indices [m0, m1) (the meta prefix) and [w0, w1) (the causal window), disjoint and ordered.
// Their total length is O(num_meta / key_tile + (window + q1 - q0) / key_tile + 2), which is
// what makes a sliding-window layer linear in T.
struct KeyTileRanges {
  int64_t m0, m1, w0, w1;
};
HYMBA_HD KeyTileRanges attention_key_tiles(int64_t q0, int64_t q1, int64_t key_tile, int64_t window,
                                           int64_t num_meta) {
  const int64_t last = (q1 - 1) / key_tile + 1;  // one past the tile holding key q1 - 1
  if (window < 0) return {0, 0, 0, last};
  const int64_t meta_tiles = std::min(last, (num_meta + key_tile - 1) / key_tile);
  const int64_t first_window_key = std::max<int64_t>(0, q0 - window);
  const int64_t w0 = std::max(meta_tiles, first_window_key / key_tile);
  return {0, meta_tiles, std::min(w0, last), last};
}

// Argument checks shared by the CPU and CUDA kernels. Each backend passes its own FloatCheck
// (float_check() with the dtypes it takes, plus its device rule) and adds its own limits.
namespace attn_check {

using FloatCheck = void (*)(const char* op, const char* what, const Tensor& t);

inline void float_check(const char* op, const char* what, const Tensor& t, bool (*dtype_ok)(DType),
                        const char* dtypes) {
  HYMBA_CHECK(t.defined(), op, ": ", what, " is undefined");
  HYMBA_CHECK(dtype_ok(t.dtype()), op, ": ", what, " has dtype ", dtype_name(t.dtype()), ", expected ", dtypes, " (",
              t.meta_str(), ")");
}

// The lse dtype: f64 for f64 inputs, f32 otherwise.
inline DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// The softmax scale: p.scale, or 1 / sqrt(dk) when p.scale <= 0.
inline double scale_of(const AttentionParams& p, int64_t dk) {
  return p.scale > 0 ? p.scale : 1.0 / std::sqrt(double(dk));
}

struct QkvDims {
  int64_t B, Hq, Hkv, T, dk, dv;
};

// q, k and v of the forward and backward, up to the head dims (whose limits are the
// backend's). Checks num_meta and scale too.
inline QkvDims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                         FloatCheck check_float) {
  check_float(op, "q", q);
  check_float(op, "k", k);
  check_float(op, "v", v);
  HYMBA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": expected q (B, Hq, T, dk), k (B, Hkv, T, dk), v (B, Hkv, T, dv); got q ", shape_str(q.shape()),
              ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  check_same_dtype(op, q, k);
  check_same_dtype(op, q, v);
  check_same_device(op, q, k);
  check_same_device(op, q, v);
  const QkvDims d{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3), v.size(3)};
  HYMBA_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(2) == d.T && v.size(2) == d.T &&
                  v.size(1) == d.Hkv && k.size(3) == d.dk,
              op, ": shapes do not match: q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
              shape_str(v.shape()), " (expected q (B, Hq, T, dk), k (B, Hkv, T, dk), v (B, Hkv, T, dv))");
  HYMBA_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0, op, ": query heads (", d.Hq, ") must be a multiple of kv heads (",
              d.Hkv, "): q ", shape_str(q.shape()), ", k ", shape_str(k.shape()));
  HYMBA_CHECK(p.num_meta >= 0, op, ": num_meta must be >= 0, got ", p.num_meta);
  HYMBA_CHECK(std::isfinite(p.scale), op, ": scale must be finite, got ", p.scale);
  return d;
}

// The backward's dout and saved out, both (B, Hq, T, dv) like q's dtype, dout on q's device.
inline void check_dout_out(const char* op, const Tensor& dout, const Tensor& out, const Tensor& q,
                           const QkvDims& d) {
  const Shape oshape{d.B, d.Hq, d.T, d.dv};
  HYMBA_CHECK(dout.defined() && dout.shape() == oshape, op, ": gradient shape ",
              dout.defined() ? shape_str(dout.shape()) : std::string("undefined"), " does not match the output shape ",
              shape_str(oshape));
  HYMBA_CHECK(out.defined() && out.shape() == oshape, op, ": saved output shape ",
              out.defined() ? shape_str(out.shape()) : std::string("undefined"), ", expected ", shape_str(oshape));
  check_same_dtype(op, dout, q);
  check_same_dtype(op, out, q);
  check_same_device(op, dout, q);
}

// The saved lse (B, Hq, T) of stat_dtype(q); `device_ok` is the backend's device rule.
inline void check_lse(const char* op, const Tensor& lse, const Tensor& q, const QkvDims& d, bool device_ok) {
  HYMBA_CHECK(lse.defined() && lse.shape() == Shape({d.B, d.Hq, d.T}) && lse.dtype() == stat_dtype(q.dtype()) &&
                  device_ok,
              op, ": lse ", lse.meta_str(), " does not match q ", q.meta_str());
}

struct DecodeDims {
  int64_t B, Hq, Hkv, Tq, S, dk, dv;
};

// q, k_cache and v_cache of attention_decode: the cache has S slots where the forward has T
// keys, and q's length Tq may differ from S.
inline DecodeDims check_decode_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                   FloatCheck check_float) {
  check_float(op, "q", q);
  check_float(op, "k_cache", k);
  check_float(op, "v_cache", v);
  HYMBA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": expected q (B, Hq, Tq, dk), k_cache (B, Hkv, S, dk), v_cache (B, Hkv, S, dv); got q ",
              shape_str(q.shape()), ", k_cache ", shape_str(k.shape()), ", v_cache ", shape_str(v.shape()));
  check_same_dtype(op, q, k);
  check_same_dtype(op, q, v);
  check_same_device(op, q, k);
  check_same_device(op, q, v);
  const DecodeDims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  HYMBA_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(3) == d.dk && v.size(1) == d.Hkv && v.size(2) == d.S,
              op, ": shapes do not match: q ", shape_str(q.shape()), ", k_cache ", shape_str(k.shape()),
              ", v_cache ", shape_str(v.shape()));
  HYMBA_CHECK(d.Hkv > 0 && d.Hq % d.Hkv == 0, op, ": query heads (", d.Hq, ") must be a multiple of kv heads (", d.Hkv,
              "): q ", shape_str(q.shape()), ", k_cache ", shape_str(k.shape()));
  return d;
}

}  // namespace attn_check

namespace cpu {
// Returns (out (B, Hq, T, dv), lse (B, Hq, T)).
std::tuple<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const AttentionParams& p);
// Returns (dq, dk, dv); each is skipped (left undefined) when its need_* flag is false.
std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& lse,
                                                      const AttentionParams& p, bool need_dq, bool need_dk,
                                                      bool need_dv);
Tensor attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& q_pos,
                        const Tensor& k_pos, const AttentionParams& p);
// The number of (query tile, key tile) blocks the CPU forward computes for one (b, head) at
// sequence length T: exposes the tile skipping to tests without timing anything.
int64_t attention_visited_tiles(int64_t T, const AttentionParams& p);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
namespace cuda {
// Same contracts as the cpu namespace (kernels/cuda/attention_*.cu). f32 and bf16 run
// natively (bf16 on tensor cores when dk, dv <= 128); other float dtypes and bf16 head dims
// above 128 are computed through f32 copies. lse is f32 (f64 for f64 inputs).
// attention_decode writes NaN for a query that sees no key (the CPU kernel throws).
std::tuple<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const AttentionParams& p);
std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& lse,
                                                      const AttentionParams& p, bool need_dq, bool need_dk,
                                                      bool need_dv);
Tensor attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& q_pos,
                        const Tensor& k_pos, const AttentionParams& p);
}  // namespace cuda
#endif

inline std::tuple<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                    const AttentionParams& p = {}) {
  return HYMBA_DISPATCH(q.device(), attention_forward, q, k, v, p);
}
inline std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                             const Tensor& v, const Tensor& out, const Tensor& lse,
                                                             const AttentionParams& p, bool need_dq = true,
                                                             bool need_dk = true, bool need_dv = true) {
  return HYMBA_DISPATCH(q.device(), attention_backward, dout, q, k, v, out, lse, p, need_dq, need_dk, need_dv);
}

// Attention of new queries against a KV cache, for generation.
//   q (B, Hq, Tq, dk); k_cache (B, Hkv, S, dk); v_cache (B, Hkv, S, dv);
//   q_pos (B, Tq) i64: the absolute position of each query (meta tokens count: the first
//     text token of a Hymba sequence is at position num_meta);
//   k_pos (B, S) i64: the absolute position of the key in each cache slot, or -1 for an
//     empty slot (never visible).
// Slots may be in any order, so one description covers a growing cache (full layers: slot =
// position) and a fixed-size one (sliding-window layers: num_meta slots for the meta keys,
// then a ring of window + Tq slots, slot = num_meta + (pos - num_meta) % ring; a ring of
// window + 1 slots suffices for one new query per step). See kv_ring_slot.
// Returns out (B, Hq, Tq, dv). No backward: generation runs without a graph.
inline Tensor attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& q_pos,
                               const Tensor& k_pos, const AttentionParams& p = {}) {
  return HYMBA_DISPATCH(q.device(), attention_decode, q, k_cache, v_cache, q_pos, k_pos, p);
}

// The cache slot of the key at position pos in a sliding-window cache that keeps the meta
// keys in slots [0, num_meta) and the recent keys in a ring of `ring` slots after them.
inline int64_t kv_ring_slot(int64_t pos, int64_t num_meta, int64_t ring) {
  return pos < num_meta ? pos : num_meta + (pos - num_meta) % ring;
}

}  // namespace hymba::kernels
