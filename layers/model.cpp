#include "layers/model.h"

#include <algorithm>

#include "autograd/checkpoint.h"
#include "autograd/ops.h"
#include "layers/precision.h"

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
  KVStore store(size_t(cfg_.num_layers));
  return run_layers(ids, store);
}

std::vector<std::pair<int64_t, int64_t>> Model::recompute_units() const {
  const int64_t n = cfg_.num_layers;
  // last[i]: the last layer that must share a unit with layer i (its last KV consumer).
  std::vector<int64_t> last(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) last[size_t(i)] = i;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = cfg_.layers[size_t(i)].kv_producer;
    if (p >= 0) last[size_t(p)] = std::max(last[size_t(p)], i);
  }
  std::vector<std::pair<int64_t, int64_t>> units;
  for (int64_t a = 0; a < n;) {
    int64_t b = last[size_t(a)];
    for (int64_t j = a; j <= b; ++j) b = std::max(b, last[size_t(j)]);  // overlapping groups merge
    units.emplace_back(a, b);
    a = b + 1;
  }
  return units;
}

Tensor Model::run_layers(const Tensor& ids, KVStore& store) const {
  const int64_t M = cfg_.num_meta_tokens;
  // Mixed precision: the meta-token rows and the gathered embeddings enter the layers in the
  // compute dtype (Embedding::forward casts its own output).
  Tensor x = M > 0 ? compute_cast(embed_with_meta(embed_tokens->weight, ids, memory_tokens))
                   : embed_tokens->forward(ids);
  if (recompute_ && GradMode::is_enabled() && store.capture == nullptr) {
    for (const auto& [a, b] : recompute_units()) {
      std::vector<Tensor> params;
      for (int64_t l = a; l <= b; ++l) {
        auto p = layers->at<DecoderLayer>(size_t(l))->parameters();
        params.insert(params.end(), p.begin(), p.end());
      }
      // The unit's own store: its k, v never outlive it (consumers are inside the unit).
      auto unit = [this, a = a, b = b](const std::vector<Tensor>& in) -> std::vector<Tensor> {
        KVStore local(size_t(cfg_.num_layers));
        Tensor y = in[0];
        for (int64_t l = a; l <= b; ++l) y = layers->at<DecoderLayer>(size_t(l))->forward(y, local);
        return {y};
      };
      x = autograd::checkpoint(unit, {x}, params)[0];
    }
  } else {
    for (size_t i = 0; i < layers->size(); ++i) x = layers->at<DecoderLayer>(i)->forward(x, store);
  }
  // RMSNorm is per position, so dropping the meta rows first gives the same result cheaper.
  if (M > 0) x = drop_meta(x, M);
  return final_layernorm->forward(x);
}

Tensor Model::forward(const Tensor& ids) const { return linear(hidden_states(ids), compute_cast(head_weight())); }

Tensor Model::loss(const Tensor& ids) const {
  check_ids(ids);
  const int64_t B = ids.size(0), L = ids.size(1);
  Tensor targets = full({B, L}, -100.0, DType::I64);
  if (L > 1) targets.narrow(1, 0, L - 1).copy_(ids.narrow(1, 1, L - 1));
  return loss(ids, targets);
}

Tensor Model::loss(const Tensor& ids, const Tensor& targets, double scale) const {
  check_ids(ids);
  HYMBA_CHECK(targets.defined() && targets.shape() == ids.shape(), "Model::loss: targets ",
              targets.defined() ? shape_str(targets.shape()) : "undefined", " must match ids ", shape_str(ids.shape()));
  return cross_entropy(loss_logits(forward(ids)), targets, -100, LossReduction::Mean, scale);
}

Tensor Model::prefill(const Tensor& ids, InferenceCache& cache, const std::vector<int64_t>& lengths) const {
  check_ids(ids);
  NoGradGuard ng;
  const int64_t B = ids.size(0), L = ids.size(1), M = cfg_.num_meta_tokens, H = cfg_.hidden_size;
  std::vector<int64_t> len = lengths.empty() ? std::vector<int64_t>(size_t(B), L) : lengths;
  HYMBA_CHECK(int64_t(len.size()) == B, "Model::prefill: ", len.size(), " lengths for ids ", shape_str(ids.shape()));
  for (int64_t n : len)
    HYMBA_CHECK(n >= 1 && n <= L, "Model::prefill: prompt length ", n, " outside 1..", L, " for ids ",
                shape_str(ids.shape()));
  cache = InferenceCache(cfg_, B, head_weight().dtype(), head_weight().device());
  std::vector<Tensor> last(static_cast<size_t>(B));
  std::vector<bool> done(size_t(B), false);
  for (int64_t b0 = 0; b0 < B; ++b0) {
    if (done[size_t(b0)]) continue;
    // One forward for every row of this length: no pad ever enters the computation.
    const int64_t n = len[size_t(b0)];
    std::vector<int64_t> rows;
    for (int64_t b = b0; b < B; ++b)
      if (!done[size_t(b)] && len[size_t(b)] == n) rows.push_back(b), done[size_t(b)] = true;
    Tensor sub = empty({int64_t(rows.size()), n}, ids.dtype());
    for (size_t r = 0; r < rows.size(); ++r) sub.select(0, int64_t(r)).copy_(ids.select(0, rows[r]).narrow(0, L - n, n));
    InferenceCache cap;
    cap.layers.resize(cfg_.layers.size());
    KVStore store(size_t(cfg_.num_layers));
    store.capture = &cap;
    Tensor h = run_layers(sub, store);  // (R, n, H)
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t b = rows[r];
      for (size_t li = 0; li < cache.layers.size(); ++li) {
        const LayerCache& c = cap.layers[li];
        if (cache.layers[li].has_kv) cache.write_kv(li, b, c.k.select(0, int64_t(r)), c.v.select(0, int64_t(r)), 0);
        if (cache.layers[li].has_ssm)
          cache.write_ssm(li, b, c.conv_state.select(0, int64_t(r)), c.ssm_state.select(0, int64_t(r)));
      }
      cache.pos[size_t(b)] = M + n;
      last[size_t(b)] = h.select(0, int64_t(r)).narrow(0, n - 1, 1).reshape({1, H});
    }
  }
  return linear(cat(last, 0), head_weight());
}

Tensor Model::decode_step(const Tensor& ids, InferenceCache& cache) const {
  HYMBA_CHECK(!cache.empty() && cache.layers.size() == cfg_.layers.size(),
              "Model::decode_step: the cache was not filled by Model::prefill of this model");
  HYMBA_CHECK(ids.defined() && ids.dim() == 1 && ids.size(0) == cache.batch() &&
                  (ids.dtype() == DType::I32 || ids.dtype() == DType::I64),
              "Model::decode_step: expected ids (", cache.batch(), ") of i32 or i64, got ",
              ids.defined() ? ids.meta_str() : "undefined");
  NoGradGuard ng;
  const int64_t B = cache.batch();
  Tensor x = embed_tokens->forward(ids.reshape({B, 1}));
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<DecoderLayer>(i)->decode(x, cache);
  x = final_layernorm->forward(x);
  for (int64_t& p : cache.pos) ++p;
  return linear(x, head_weight()).reshape({B, cfg_.vocab_size});
}

}  // namespace hymba
