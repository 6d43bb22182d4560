// Validation: loss, perplexity and (on MQAR data) recall accuracy of a model over a val split.
//
// The loss is the mean next-token cross entropy over every counted target of the walked
// windows (ValLoader: each token after the first is a target once; padding and loss-masked
// positions are not counted), accumulated in double from one forward's logits, so perplexity =
// exp(loss) is the per-token perplexity of the split (or of the first max_batches batches).
#pragma once

#include <cstdint>
#include <memory>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/mqar.h"
#include "layers/model.h"

namespace hymba::train {

struct EvalOptions {
  int64_t seq_len = 0;      // must be sample_len - 1 on fixed-length data
  int64_t batch = 8;        // rows per forward
  int64_t max_batches = 0;  // 0: the whole split
};

struct EvalResult {
  double loss = 0.0;
  double perplexity = 0.0;
  uint64_t tokens = 0;  // counted targets
  uint64_t batches = 0;
  double seconds = 0.0;
  double tokens_per_s = 0.0;
  bool mqar = false;  // the data are MQAR: `accuracy` is filled
  data::MqarAccuracy accuracy;
  // {"val_loss":..,"val_ppl":..,"tokens":..,"tokens_per_s":.., "mqar_accuracy":.., "mqar_sequence_accuracy":..}
  nlohmann::json to_json() const;
};

// Logits (B, L, vocab) and the mean next-token loss (ignore index -100) under this thread's
// compute dtype (layers/precision.h): the LM head weight is cast like every matmul weight and
// the cross entropy gives an fp32 loss (layers/precision.h loss_logits). With no compute
// dtype set they are Model::forward and Model::loss exactly (the same ops). ids must be on
// the model's device. `scale` multiplies the loss inside the cross entropy (Model::loss).
Tensor model_logits(const Model& model, const Tensor& ids);
Tensor model_loss(const Model& model, const Tensor& ids, const Tensor& targets, double scale = 1.0);

// Runs under NoGradGuard, on the model's device and in this thread's compute dtype; the model is switched to eval mode and back.
EvalResult evaluate(const Model& model, const std::shared_ptr<data::TokenDataset>& data, const EvalOptions& opts);

// The unigram baseline: the per-token cross entropy on `val` of the token frequencies of
// `train` (add-one smoothed over the vocabulary, so an unseen token costs a finite amount),
// over the same targets the val loader counts (every token after the first; loss-masked
// tokens excluded). exp() of it is the perplexity a model must beat to have learned more
// than word frequencies. Reads both streams once, in blocks.
double unigram_baseline_loss(data::TokenDataset& train, data::TokenDataset& val);

}  // namespace hymba::train
