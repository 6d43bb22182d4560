// Text generation from a Model: prefill the prompts (left-padded into one batch), then decode
// one token per row per step with the inference caches (layers/inference_cache.h).
//
// Sampling, per row and step, from the last logits l (vocab):
//   temperature <= 0: greedy, argmax (lowest id on ties); top_k, top_p and seed are unused.
//   otherwise: l / temperature; keep the top_k largest (top_k > 0); softmax (in double); keep
//   the smallest set of most likely tokens whose probability reaches top_p (top_p < 1; at
//   least one token); renormalize and draw with one uniform number from a Philox generator
//   seeded with `seed` (a (B) draw per step), so a seed reproduces the output exactly.
// A row stops after max_new_tokens or when it samples eos_id (not included in its output);
// finished rows keep stepping with eos_id as input until every row is done, their outputs
// untouched. With greedy decoding a row's output does not depend on the other rows.
#pragma once

#include <cstdint>
#include <vector>

#include "layers/model.h"

namespace hymba::train {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;
  int64_t top_k = 0;   // 0: no top-k cut
  double top_p = 1.0;  // 1: no nucleus cut
  uint64_t seed = 0;
  int64_t eos_id = -1;  // < 0: never stop early
};

// Throws hymba::UserError naming the bad option (top_k < 0, top_p outside (0, 1], ...).
void check_sampling_options(const SamplingOptions& o);

// The token drawn from `logits` with uniform u in [0, 1) under options o (see above).
int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& o, double u);

// The new tokens of each prompt (prompts non-empty, ids in [0, vocab)).
std::vector<std::vector<int64_t>> generate(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const SamplingOptions& o);

}  // namespace hymba::train
