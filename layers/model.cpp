#include "layers/model.h"

#include "autograd/ops.h"

namespace hymba {

Model::Model(const ModelConfig& cfg, uint64_t seed) : cfg_(cfg) {
  HYMBA_CHECK(int64_t(cfg.layers.size()) == cfg.num_layers, "Model: config has ", cfg.layers.size(),
              " resolved layers for num_layers ", cfg.num_layers, " (build configs with parse_model_config)");
  Generator gen(seed);
  const int64_t H = cfg.hidden_size;
  if (cfg.num_meta_tokens > 0)
    memory_tokens = register_parameter("memory_tokens", randn({cfg.num_meta_tokens, H}, {}, &gen, 0.0, 1.0));
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(cfg.vocab_size, H, &gen, cfg.init_std));
  layers = register_module("layers", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < cfg.num_layers; ++i) layers->push_back(std::make_shared<DecoderLayer>(cfg, i, &gen));
  final_layernorm = register_module("final_layernorm", std::make_shared<RMSNorm>(H, cfg.norm_eps));
  if (!cfg.tie_embeddings)
    lm_head = register_module("lm_head", std::make_shared<Linear>(H, cfg.vocab_size, false, &gen, cfg.init_std));
}

void Model::check_ids(const Tensor& ids) const {
  HYMBA_CHECK(ids.defined() && ids.dim() == 2 && (ids.dtype() == DType::I32 || ids.dtype() == DType::I64),
              "Model: expected ids (B, L) of i32 or i64, got ", ids.defined() ? ids.meta_str() : "undefined");
  HYMBA_CHECK(ids.size(1) > 0, "Model: empty sequence, ids ", shape_str(ids.shape()));
}

Tensor Model::hidden_states(const Tensor& ids) const {
  check_ids(ids);
  const int64_t M = cfg_.num_meta_tokens;
  Tensor x = M > 0 ? embed_with_meta(embed_tokens->weight, ids, memory_tokens) : embed_tokens->forward(ids);
  KVStore store(size_t(cfg_.num_layers));
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<DecoderLayer>(i)->forward(x, store);
  // RMSNorm is per position, so dropping the meta rows first gives the same result cheaper.
  if (M > 0) x = drop_meta(x, M);
  return final_layernorm->forward(x);
}

Tensor Model::forward(const Tensor& ids) const { return linear(hidden_states(ids), head_weight()); }

Tensor Model::loss(const Tensor& ids) const {
  check_ids(ids);
  const int64_t B = ids.size(0), L = ids.size(1);
  Tensor targets = full({B, L}, -100.0, DType::I64);
  if (L > 1) targets.narrow(1, 0, L - 1).copy_(ids.narrow(1, 1, L - 1));
  return loss(ids, targets);
}

Tensor Model::loss(const Tensor& ids, const Tensor& targets) const {
  check_ids(ids);
  HYMBA_CHECK(targets.defined() && targets.shape() == ids.shape(), "Model::loss: targets ",
              targets.defined() ? shape_str(targets.shape()) : "undefined", " must match ids ", shape_str(ids.shape()));
  return cross_entropy(forward(ids), targets, -100);
}

}  // namespace hymba
