#include "layers/block.h"

#include "autograd/ops.h"
#include "layers/attention_mixer.h"
#include "layers/hybrid_mixer.h"
#include "layers/ssm_mixer.h"

namespace hymba {

DecoderLayer::DecoderLayer(const ModelConfig& cfg, int64_t li, Generator* gen)
    : layer(li), kind(cfg.layers.at(size_t(li)).kind) {
  const LayerSpec& spec = cfg.layers.at(size_t(li));
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(cfg.hidden_size, cfg.norm_eps));
  switch (kind) {
    case BlockKind::Attention: mixer = std::make_shared<AttentionMixer>(cfg, li, gen); break;
    case BlockKind::SSM: mixer = std::make_shared<MambaMixer>(cfg, li, gen); break;
    case BlockKind::Hybrid: mixer = std::make_shared<HybridMixer>(cfg, li, gen); break;
  }
  register_module("mixer", mixer);
  if (spec.mlp) {
    pre_mlp_layernorm = register_module("pre_mlp_layernorm", std::make_shared<RMSNorm>(cfg.hidden_size, cfg.norm_eps));
    mlp = register_module("mlp", std::make_shared<SwiGLUMLP>(cfg.hidden_size, cfg.intermediate_size, gen, cfg.init_std));
  }
}

std::string DecoderLayer::type_name() const { return std::string("DecoderLayer(") + block_kind_name(kind) + ")"; }

Tensor DecoderLayer::forward(const Tensor& x, KVStore& store) const {
  Tensor h = x + mixer->forward(input_layernorm->forward(x), store);
  if (!mlp) return h;
  return h + mlp->forward(pre_mlp_layernorm->forward(h));
}

Tensor DecoderLayer::decode(const Tensor& x, InferenceCache& cache) const {
  Tensor h = x + mixer->decode(input_layernorm->forward(x), cache);
  if (!mlp) return h;
  return h + mlp->forward(pre_mlp_layernorm->forward(h));
}

}  // namespace hymba
