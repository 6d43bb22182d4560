// Per-layer state for incremental decoding (HYMBA_SPEC sections 3 and 5).
//
//   attention (standalone or KV producer): keys after RoPE and values, (B, Hkv, S, d), with the
//     absolute position of each slot in k_pos (B, S) (-1: empty, never visible).
//     full attention: slot = position, S grows (doubling) as positions pass it;
//     sliding window W: slots [0, M) hold the meta keys, then a ring of W + 1 slots holds the
//     most recent keys (kernels::kv_ring_slot), so a step costs O(M + W) whatever the length.
//     A producer sizes its cache for the widest window of its group (full if any member is).
//   KV consumers keep nothing: they read their producer's entry, written earlier in the step.
//   ssm: conv_state (B, I, d_conv - 1), the last inputs oldest first, and the scan state
//     (B, I, N).
// pos (B) is each row's next absolute position (meta tokens count). Rows advance together
// but may sit at different positions: a left-padded batch is prefilled row by row (see
// Model::prefill), so a row's cache never sees its pads.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "layers/model_config.h"

namespace hymba {

struct LayerCache {
  bool has_kv = false;
  int64_t window = -1;  // the window the slots are sized for; -1: full (growing)
  int64_t ring = 0;     // window + 1 when window >= 0
  Tensor k, v, k_pos;
  bool has_ssm = false;
  Tensor conv_state, ssm_state;
};

struct InferenceCache {
  InferenceCache() = default;
  // Empty caches for `batch` rows: no keys, zero SSM and conv states, pos = 0.
  InferenceCache(const ModelConfig& cfg, int64_t batch, DType dtype, Device device = {});

  int64_t batch() const { return batch_; }
  int64_t num_meta() const { return num_meta_; }
  bool empty() const { return layers.empty(); }
  // Bytes held by keys, values and states (what `hymba info` reports as the cache size).
  size_t nbytes() const;

  // Writes keys k (Hkv, T, dk) and values v (Hkv, T, dv) at positions pos0 .. pos0 + T - 1
  // into row b of layer li; a ring keeps only the meta keys and the last `ring` of them.
  void write_kv(size_t li, int64_t b, const Tensor& k, const Tensor& v, int64_t pos0);
  // Row b's SSM states: conv (I, d_conv - 1), scan (I, N).
  void write_ssm(size_t li, int64_t b, const Tensor& conv_state, const Tensor& ssm_state);
  // The positions pos (B) as a (B, 1) i64 tensor: the query positions of one decode step.
  Tensor query_positions() const;

  std::vector<LayerCache> layers;
  std::vector<int64_t> pos;

 private:
  void grow(LayerCache& c, int64_t needed);
  int64_t batch_ = 0, num_meta_ = 0;
};

}  // namespace hymba
