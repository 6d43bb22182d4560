#include "train/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "autograd/ops.h"
#include "core/error.h"
#include "data/loader.h"
#include "layers/precision.h"

namespace hymba::train {

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"val_loss", loss}, {"val_ppl", perplexity}, {"tokens", tokens},
                      {"batches", batches}, {"tokens_per_s", tokens_per_s}};
  if (mqar) {
    j["mqar_accuracy"] = accuracy.accuracy();
    j["mqar_sequence_accuracy"] = accuracy.sequence_accuracy();
  }
  return j;
}

Tensor model_logits(const Model& model, const Tensor& ids) {
  return linear(model.hidden_states(ids), compute_cast(model.head_weight()));
}

Tensor model_loss(const Model& model, const Tensor& ids, const Tensor& targets, double scale) {
  HYMBA_CHECK(targets.defined() && targets.shape() == ids.shape(), "model_loss: targets ",
              targets.defined() ? shape_str(targets.shape()) : "undefined", " must match ids ", shape_str(ids.shape()));
  return cross_entropy(loss_logits(model_logits(model, ids)), targets, -100, LossReduction::Mean, scale);
}

EvalResult evaluate(const Model& model, const std::shared_ptr<data::TokenDataset>& data, const EvalOptions& opts) {
  HYMBA_CHECK(data != nullptr, "evaluate: no dataset");
  HYMBA_CHECK(opts.seq_len > 0 && opts.batch > 0, "evaluate: seq_len ", opts.seq_len, " and batch ", opts.batch,
              " must be positive");
  if (data->vocab_size() > uint64_t(model.config().vocab_size))
    HYMBA_USER_ERROR(data->description(), ": vocabulary of ", data->vocab_size(),
                     " tokens does not fit the model's ", model.config().vocab_size);
  NoGradGuard ng;
  // Module::train/eval are non-const; the forward itself is const. Restore the mode after.
  auto& m = const_cast<Model&>(model);
  const bool was_training = m.is_training();
  m.eval();
  const Device device = model.head_weight().device();

  auto t0 = std::chrono::steady_clock::now();
  data::ValLoader loader(data, opts.seq_len, opts.batch);
  EvalResult r;
  r.mqar = data->kind() == "mqar";
  const int64_t L = opts.seq_len, V = model.config().vocab_size;
  double nll = 0.0;
  data::Batch b;
  std::vector<int32_t> pred;
  while ((opts.max_batches == 0 || int64_t(r.batches) < opts.max_batches) && loader.next(b)) {
    Tensor ids = from_vector(b.inputs, {b.batch, L}, DType::I32).to(device);
    Tensor logits = model_logits(model, ids).to(DType::F32).to(Device::cpu()).contiguous();
    const float* lg = logits.data<float>();
    const int64_t rows = b.batch * L;
    pred.assign(size_t(rows), 0);
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = lg + i * V;
      int64_t arg = 0;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v)
        if (row[v] > mx) mx = row[v], arg = v;
      pred[size_t(i)] = int32_t(arg);
      const int32_t t = b.targets[size_t(i)];
      if (t == data::kIgnoreIndex) continue;
      double z = 0.0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      nll += mx + std::log(z) - double(row[t]);
      ++r.tokens;
    }
    if (r.mqar) r.accuracy += data::mqar_accuracy(pred, b.targets, L);
    ++r.batches;
  }
  m.train(was_training);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.loss = r.tokens ? nll / double(r.tokens) : std::numeric_limits<double>::quiet_NaN();
  r.perplexity = std::exp(r.loss);
  r.tokens_per_s = r.seconds > 0 ? double(r.batches) * double(opts.batch * L) / r.seconds : 0.0;
  return r;
}

double unigram_baseline_loss(data::TokenDataset& train, data::TokenDataset& val) {
  const uint64_t V = std::max(train.vocab_size(), val.vocab_size());
  std::vector<uint64_t> counts(V, 0);
  const uint64_t block = uint64_t(1) << 16;
  std::vector<int32_t> tok(block);
  std::vector<uint8_t> mask(block);
  for (uint64_t at = 0; at < train.num_tokens(); at += block) {
    const uint64_t n = std::min(block, train.num_tokens() - at);
    train.read(at, n, tok.data());
    for (uint64_t i = 0; i < n; ++i) ++counts[size_t(tok[i])];
  }
  const double denom = double(train.num_tokens()) + double(V);
  double nll = 0.0;
  uint64_t n_targets = 0;
  for (uint64_t at = 0; at < val.num_tokens(); at += block) {
    const uint64_t n = std::min(block, val.num_tokens() - at);
    val.read(at, n, tok.data(), mask.data());
    for (uint64_t i = 0; i < n; ++i) {
      if (at + i == 0 || !mask[i]) continue;
      nll -= std::log((double(counts[size_t(tok[i])]) + 1.0) / denom);
      ++n_targets;
    }
  }
  return n_targets ? nll / double(n_targets) : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace hymba::train
