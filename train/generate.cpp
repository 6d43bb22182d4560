#include "train/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "layers/inference_cache.h"

namespace hymba::train {

void check_sampling_options(const SamplingOptions& o) {
  if (o.max_new_tokens < 0) throw UserError(str("generate: max_new_tokens must be >= 0, got ", o.max_new_tokens));
  if (o.top_k < 0) throw UserError(str("generate: top_k must be >= 0 (0: off), got ", o.top_k));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) throw UserError(str("generate: top_p must be in (0, 1], got ", o.top_p));
  if (!std::isfinite(o.temperature))
    throw UserError(str("generate: temperature must be finite, got ", o.temperature));
}

int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& o, double u) {
  HYMBA_CHECK(!logits.empty(), "sample_token: empty logits");
  const int64_t V = int64_t(logits.size());
  if (o.temperature <= 0) return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // Descending logit, ascending id on ties: the draw depends on nothing but the values.
  auto before = [&](int64_t a, int64_t b) {
    return logits[size_t(a)] != logits[size_t(b)] ? logits[size_t(a)] > logits[size_t(b)] : a < b;
  };
  const int64_t keep = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), before);
  order.resize(size_t(keep));
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = logits[size_t(order[0])];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[size_t(i)] = std::exp((logits[size_t(order[size_t(i)])] - mx) / o.temperature);
  int64_t n = keep;
  if (o.top_p < 1.0) {
    double cum = 0;
    for (n = 0; n < keep;) {
      cum += p[size_t(n++)] / total;
      if (cum >= o.top_p) break;
    }
    total = std::accumulate(p.begin(), p.begin() + n, 0.0);
  }
  const double target = u * total;
  double cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += p[size_t(i)];
    if (target < cum) return order[size_t(i)];
  }
  return order[size_t(n - 1)];  // u * total rounded onto the last boundary
}

std::vector<std::vector<int64_t>> generate(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingOptions& o) {
  check_sampling_options(o);
  if (prompts.empty()) throw UserError("generate: no prompts");
  const int64_t B = int64_t(prompts.size()), V = model.config().vocab_size;
  int64_t L = 0;
  std::vector<int64_t> lengths;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw UserError(str("generate: prompt ", b, " is empty (add a bos token)"));
    for (int64_t id : prompts[b])
      if (id < 0 || id >= V)
        throw UserError(str("generate: prompt ", b, " has token id ", id, " outside the vocabulary [0, ", V, ")"));
    lengths.push_back(int64_t(prompts[b].size()));
    L = std::max(L, lengths.back());
  }
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  if (o.max_new_tokens == 0) return out;
  // Left padding: the pad value is never computed on (Model::prefill runs rows by length).
  std::vector<int64_t> flat(size_t(B * L), 0);
  for (int64_t b = 0; b < B; ++b)
    std::copy(prompts[size_t(b)].begin(), prompts[size_t(b)].end(), flat.begin() + (b + 1) * L - lengths[size_t(b)]);
  InferenceCache cache;
  Tensor logits = model.prefill(from_vector<int64_t>(flat, {B, L}), cache, lengths);
  Generator gen(o.seed);
  std::vector<bool> done(size_t(B), false);
  const int64_t filler = o.eos_id >= 0 && o.eos_id < V ? o.eos_id : 0;
  for (int64_t step = 0;; ++step) {
    std::vector<double> all = logits.to(DType::F64).contiguous().to_vector<double>();
    std::vector<double> u = o.temperature > 0 ? rand({B}, DType::F64, &gen).to_vector<double>()
                                              : std::vector<double>(size_t(B), 0.0);
    std::vector<int64_t> next(size_t(B), filler);
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[size_t(b)]) continue;
      std::vector<double> row(all.begin() + b * V, all.begin() + (b + 1) * V);
      const int64_t t = sample_token(row, o, u[size_t(b)]);
      if (t == o.eos_id) {
        done[size_t(b)] = true;
        continue;
      }
      out[size_t(b)].push_back(t);
      next[size_t(b)] = t;
      if (int64_t(out[size_t(b)].size()) >= o.max_new_tokens) done[size_t(b)] = true;
      any = any || !done[size_t(b)];
    }
    if (!any) break;
    logits = model.decode_step(from_vector<int64_t>(next, {B}), cache);
  }
  return out;
}

}  // namespace hymba::train
