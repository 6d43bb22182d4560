#include "layers/hybrid_mixer.h"

#include "autograd/ops.h"

namespace hymba {

HybridMixer::HybridMixer(const ModelConfig& cfg, int64_t li, Generator* gen)
    : hidden(cfg.hidden_size), fusion(cfg.fusion), attn(cfg, li) {
  const int64_t I = cfg.ssm_inner();
  in_proj = register_module("in_proj", std::make_shared<Linear>(hidden, attn.in_width() + 2 * I, false, gen, cfg.init_std));
  ssm.build(*this, cfg, gen);
  pre_avg_layernorm1 = register_module("pre_avg_layernorm1", std::make_shared<RMSNorm>(attn.out_width(), cfg.norm_eps));
  pre_avg_layernorm2 = register_module("pre_avg_layernorm2", std::make_shared<RMSNorm>(I, cfg.norm_eps));
  const int64_t fused = fusion == Fusion::Mean ? I : attn.out_width() + I;
  HYMBA_CHECK(fusion == Fusion::Concat || attn.out_width() == I, "HybridMixer (layer ", li,
              "): mean fusion needs attention width ", attn.out_width(), " == ssm width ", I);
  out_proj = register_module("out_proj", std::make_shared<Linear>(fused, hidden, false, gen, cfg.init_std));
}

Tensor HybridMixer::forward(const Tensor& u, KVStore& store) const {
  HYMBA_CHECK(u.dim() == 3 && u.size(2) == hidden, "HybridMixer (layer ", attn.layer, "): expected (B, T, ", hidden,
              "), got ", shape_str(u.shape()));
  Tensor P = in_proj->forward(u);
  const int64_t I = ssm.inner, qw = attn.num_heads * attn.head_dim;
  Tensor o, x, z;
  if (attn.kv_producer >= 0) {
    auto p = split(P, {qw, I, I}, -1);
    o = attn.forward(p[0], Tensor(), Tensor(), store);
    x = p[1];
    z = p[2];
  } else {
    auto p = split(P, {qw, attn.num_kv_heads * attn.head_dim, attn.num_kv_heads * attn.v_head_dim, I, I}, -1);
    o = attn.forward(p[0], p[1], p[2], store);
    x = p[3];
    z = p[4];
  }
  Tensor y = ssm.forward(x, z, store.capture ? &store.capture->layers.at(size_t(attn.layer)) : nullptr);
  return fuse(o, y);
}

Tensor HybridMixer::fuse(const Tensor& o, const Tensor& y) const {
  Tensor a = pre_avg_layernorm1->forward(o), s = pre_avg_layernorm2->forward(y);
  Tensor fused = fusion == Fusion::Mean ? (a + s) * 0.5 : cat({a, s}, -1);
  return out_proj->forward(fused);
}

Tensor HybridMixer::decode(const Tensor& u, InferenceCache& cache) const {
  Tensor P = in_proj->forward(u);
  const int64_t I = ssm.inner, qw = attn.num_heads * attn.head_dim;
  Tensor o, x, z;
  if (attn.kv_producer >= 0) {
    auto p = split(P, {qw, I, I}, -1);
    o = attn.decode(p[0], Tensor(), Tensor(), cache);
    x = p[1];
    z = p[2];
  } else {
    auto p = split(P, {qw, attn.num_kv_heads * attn.head_dim, attn.num_kv_heads * attn.v_head_dim, I, I}, -1);
    o = attn.decode(p[0], p[1], p[2], cache);
    x = p[3];
    z = p[4];
  }
  return fuse(o, ssm.decode(x, z, cache.layers.at(size_t(attn.layer))));
}

}  // namespace hymba
