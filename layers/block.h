// A decoder layer (pre-norm residual, HYMBA_SPEC section 2):
//   h = x + mixer(input_layernorm(x))
//   x = h + mlp(pre_mlp_layernorm(h))        (when the layer has an MLP)
// The mixer is an AttentionMixer, a MambaMixer or a HybridMixer by the layer's block kind.
#pragma once

#include <memory>

#include "layers/basic.h"
#include "layers/mixer.h"

namespace hymba {

class DecoderLayer : public Module {
 public:
  DecoderLayer(const ModelConfig& cfg, int64_t layer_index, Generator* gen);
  std::string type_name() const override;
  Tensor forward(const Tensor& x, KVStore& store) const;
  // One generation step, x (B, 1, hidden) (see Mixer::decode).
  Tensor decode(const Tensor& x, InferenceCache& cache) const;

  int64_t layer;
  BlockKind kind;
  std::shared_ptr<RMSNorm> input_layernorm, pre_mlp_layernorm;  // the latter null without MLP
  std::shared_ptr<Mixer> mixer;
  std::shared_ptr<SwiGLUMLP> mlp;  // null without MLP
};

}  // namespace hymba
