// Attention: the attention half of a hybrid mixer (AttentionBranch) and the standalone
// attention mixer of an attention block (Llama-style or Samba-style).
//
// GQA with Hq query heads of width head_dim reading Hkv key/value heads (query head h reads kv
// head h / (Hq / Hkv)); values may be wider than keys (v_head_dim). RoPE (rotate-half, base
// from the config: default or NTK) rotates q and k. A KV consumer has no k, v projection: it
// uses its group producer's k (after RoPE) and v. Key j is visible from query i iff j <= i
// and (full attention, or i - j <= window, or j < num_meta_tokens).
#pragma once

#include <cstdint>
#include <memory>

#include "layers/basic.h"
#include "layers/mixer.h"

namespace hymba {

// The part shared by AttentionMixer and HybridMixer: no parameters of its own.
struct AttentionBranch {
  int64_t layer = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, v_head_dim = 0;
  int64_t window = -1, num_meta = 0;
  double rope_base = 10000.0;
  int64_t kv_producer = -1;  // >= 0: consumer of that layer
  bool kv_shared = false;    // producer with consumers: publish k, v to the store

  AttentionBranch() = default;
  AttentionBranch(const ModelConfig& cfg, int64_t layer_index);

  // Width of the projection this branch reads: q, plus k and v unless a consumer.
  int64_t in_width() const;
  int64_t out_width() const { return num_heads * v_head_dim; }
  // q (B, T, Hq*dk); k (B, T, Hkv*dk) and v (B, T, Hkv*dv), undefined for a consumer. Any
  // strides with a unit last stride (slices of the fused projection). -> (B, T, Hq*dv),
  // head-major.
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v, KVStore& store) const;
  // One decode step: q (B, 1, Hq*dk), k and v (B, 1, ...) or undefined for a consumer, at
  // positions cache.pos; appends k, v to this layer's cache (producer/standalone) and
  // attends over it (or the producer's) with kernels::attention_decode. -> (B, 1, Hq*dv).
  Tensor decode(const Tensor& q, const Tensor& k, const Tensor& v, InferenceCache& cache) const;
};

class AttentionMixer : public Mixer {
 public:
  AttentionMixer(const ModelConfig& cfg, int64_t layer_index, Generator* gen);
  std::string type_name() const override { return "AttentionMixer"; }
  Tensor forward(const Tensor& u, KVStore& store) const override;
  Tensor decode(const Tensor& u, InferenceCache& cache) const override;

  AttentionBranch attn;
  int64_t hidden;
  std::shared_ptr<Linear> in_proj;   // hidden -> q | k | v (producer/standalone) or q (consumer)
  std::shared_ptr<Linear> out_proj;  // Hq*dv -> hidden
};

}  // namespace hymba
