// The language model built from a ModelConfig (HYMBA_SPEC section 3):
//   X = cat(memory_tokens, embed_tokens[ids])     (meta tokens first, shared by all rows)
//   X = layers(X); X = final_layernorm(X)[:, M:]  (meta outputs dropped: no logits, no loss)
//   logits = X @ embed_tokens.weight^T            (tied; else lm_head.weight)
//
// Our parameter names and the Hugging Face Hymba names (prefix `model.` on the HF side; HF
// names exist only for hybrid layers, the published layer kind). `convert` uses this table.
//   ours                                         HF (nvidia/Hymba-1.5B-Base)
//   memory_tokens                                model.memory_tokens
//   embed_tokens.weight                          model.embed_tokens.weight (lm_head.weight tied)
//   final_layernorm.weight                       model.final_layernorm.weight
//   lm_head.weight (untied only)                 lm_head.weight
//   layers.{i}.input_layernorm.weight            model.layers.{i}.input_layernorm.weight
//   layers.{i}.pre_mlp_layernorm.weight          model.layers.{i}.pre_moe_layernorm.weight
//   layers.{i}.mlp.{gate,up,down}_proj.weight    model.layers.{i}.moe.experts.0.{gate,up,down}_proj.weight
//   layers.{i}.mixer.in_proj.weight              model.layers.{i}.mamba.in_proj.weight
//   layers.{i}.mixer.out_proj.weight             model.layers.{i}.mamba.out_proj.weight
//   layers.{i}.mixer.conv1d.weight (I, W)        model.layers.{i}.mamba.conv1d.weight (I, 1, W): reshape
//   layers.{i}.mixer.conv1d.bias                 model.layers.{i}.mamba.conv1d.bias
//   layers.{i}.mixer.x_proj.weight               model.layers.{i}.mamba.x_proj.0.weight
//   layers.{i}.mixer.dt_proj.weight / .bias      model.layers.{i}.mamba.dt_proj.0.weight / .bias
//   layers.{i}.mixer.A_log                       model.layers.{i}.mamba.A_log.0
//   layers.{i}.mixer.D                           model.layers.{i}.mamba.D.0
//   layers.{i}.mixer.{dt,B,C}_layernorm.weight   model.layers.{i}.mamba.{dt,B,C}_layernorm.weight
//   layers.{i}.mixer.pre_avg_layernorm1.weight   model.layers.{i}.mamba.pre_avg_layernorm1.weight (attention)
//   layers.{i}.mixer.pre_avg_layernorm2.weight   model.layers.{i}.mamba.pre_avg_layernorm2.weight (SSM)
// The in_proj row layout is the same on both sides: q | k | v | x | z (consumer: q | x | z).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "layers/basic.h"
#include "layers/block.h"
#include "layers/inference_cache.h"
#include "layers/model_config.h"

namespace hymba {

class Model : public Module {
 public:
  // Parameters in f32 on the CPU, initialized from `seed` (HYMBA_SPEC section 2 init).
  explicit Model(const ModelConfig& cfg, uint64_t seed = 0);
  std::string type_name() const override { return "Model"; }

  // ids (B, L) i32/i64 -> logits (B, L, vocab).
  Tensor forward(const Tensor& ids) const;
  // Final hidden states of the L token positions (B, L, hidden), after the final norm.
  Tensor hidden_states(const Tensor& ids) const;
  // Next-token cross entropy: position t predicts ids[:, t + 1]; mean over counted
  // positions, ignore index -100.
  Tensor loss(const Tensor& ids) const;
  // With explicit targets (B, L), already aligned: targets[:, t] is what position t predicts
  // (-100 ignores it; SFT masks prompts this way). `scale` multiplies the loss inside the
  // cross entropy (a micro-batch's weight in its step; see cross_entropy).
  Tensor loss(const Tensor& ids, const Tensor& targets, double scale = 1.0) const;

  // ---- generation (no graph; caches in layers/inference_cache.h) ----
  // Prefill: ids (B, L), left-padded: row b's prompt is its last lengths[b] ids (lengths
  // empty: every row is all L ids; each length in 1..L). Runs the meta tokens and the prompts,
  // replaces `cache` with a filled cache for B rows and returns the logits (B, vocab) of each
  // row's last prompt token. Rows of equal length run as one batch; rows of different
  // lengths run separately, so pads never reach a row's attention keys or its conv and scan
  // states and a padded row decodes exactly as it would alone.
  Tensor prefill(const Tensor& ids, InferenceCache& cache, const std::vector<int64_t>& lengths = {}) const;
  // One token per row, ids (B) i32/i64 -> logits (B, vocab); advances cache.pos by one.
  // Attention costs O(M + W) per token in sliding-window layers, O(M + position) in full ones.
  Tensor decode_step(const Tensor& ids, InferenceCache& cache) const;

  // Activation recomputation for training (run.recompute): the forward keeps only the input
  // of each checkpointed unit and the backward recomputes the unit (autograd/checkpoint.h).
  // A unit is one decoder layer, except that a KV-sharing group, from its producer to its
  // last consumer and every layer between, is one unit: the consumers read k and v made
  // inside the producer. Gradients are the same as without recomputation; only used while
  // grad mode is on (generation and eval run as usual).
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }
  // The checkpointed units as inclusive layer ranges [first, last], in order.
  std::vector<std::pair<int64_t, int64_t>> recompute_units() const;

  const ModelConfig& config() const { return cfg_; }
  const Tensor& head_weight() const { return lm_head ? lm_head->weight : embed_tokens->weight; }

  Tensor memory_tokens;  // (M, hidden); undefined when M = 0
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList> layers;
  std::shared_ptr<RMSNorm> final_layernorm;
  std::shared_ptr<Linear> lm_head;  // null when tied

 private:
  void check_ids(const Tensor& ids) const;
  // The layers and final norm over ids (B, L) -> (B, L, hidden), meta outputs dropped.
  Tensor run_layers(const Tensor& ids, KVStore& store) const;
  ModelConfig cfg_;
  bool recompute_ = false;
};

}  // namespace hymba
