// The parallel hybrid mixer of Hymba (HYMBA_SPEC section 2): one fused input projection
//   producer / standalone: q | k | v | x | z     consumer: q | x | z
// feeding attention heads and SSM heads side by side on the same input, fused by
//   mean:   out_proj((pre_avg_layernorm1(o) + pre_avg_layernorm2(y)) / 2)
//   concat: out_proj(cat(pre_avg_layernorm1(o), pre_avg_layernorm2(y)))  (out_proj is wider)
// The concat variant (the paper's roadmap ablation) keeps the per-branch norms so the two
// fusions differ only in how the normalized branches are combined.
#pragma once

#include <memory>

#include "layers/attention_mixer.h"
#include "layers/ssm_mixer.h"

namespace hymba {

class HybridMixer : public Mixer {
 public:
  HybridMixer(const ModelConfig& cfg, int64_t layer_index, Generator* gen);
  std::string type_name() const override { return "HybridMixer"; }
  Tensor forward(const Tensor& u, KVStore& store) const override;
  Tensor decode(const Tensor& u, InferenceCache& cache) const override;

  int64_t hidden;
  Fusion fusion;
  AttentionBranch attn;
  SSMBranch ssm;
  std::shared_ptr<Linear> in_proj, out_proj;
  std::shared_ptr<RMSNorm> pre_avg_layernorm1, pre_avg_layernorm2;  // attention side, SSM side

 private:
  Tensor fuse(const Tensor& o, const Tensor& y) const;  // norms, mean or concat, out_proj
};

}  // namespace hymba
