// Multi-query associative recall (MQAR; Arora et al., "Zoology", 2023), the synthetic recall
// task of the study. One sample of seq + 1 tokens:
//
//   k1 v1 k2 v2 ... kN vN | 0 0 k3 v3 0 0 0 0 k1 v1 0 ... k2 v2 ... 0
//
// - keys are N distinct ids from [1, vocab/2), values N distinct ids from [vocab/2, vocab);
// - each key is queried exactly once after the pairs: the query for key i sits at position
//   2N + 2*g_i and its value at 2N + 2*g_i + 1, where the gaps g_i are N distinct slots in
//   [0, (seq + 1 - 2N) / 2) drawn without replacement with probability proportional to
//   (g + 1)^(a - 1) (power law, a = 0.01 as in Zoology: short gaps are far more likely);
// - every other position holds 0 (Zoology's filler; 0 is never a key or a value);
// - loss_mask is 1 exactly at the N answer positions (the values after queries), so the
//   loss and accuracy count only recall.
// Sample g of a split depends only on (seed, split, g). Written with sample_len = seq + 1:
// train with seq_len = seq.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hymba::data {

struct MqarOptions {
  int64_t vocab = 8192;
  int64_t seq = 256;       // model sequence length; samples are seq + 1 tokens
  int64_t pairs = 16;
  uint64_t count = 20000;  // training samples
  uint64_t val_count = 1000;
  uint64_t seed = 0;
  double power_a = 0.01;
  std::string out;
  bool force = false;
};

struct MqarSample {
  std::vector<int32_t> tokens;  // seq + 1
  std::vector<uint8_t> mask;    // seq + 1
};

// Throws UserError when the options cannot make a valid task (vocab too small, seq too short
// for the pairs, ...).
void check_mqar_options(const MqarOptions& o);
// split: 0 = train, 1 = val (independent streams for one seed).
MqarSample make_mqar_sample(const MqarOptions& o, int split, uint64_t index);

struct MqarStats {
  uint64_t train_samples = 0, val_samples = 0;
  std::vector<std::string> shards;
};
// Writes DIR/train_000.h5 and DIR/val_000.h5 (and meta.json), atomically.
MqarStats prepare_mqar(const MqarOptions& o);

// Accuracy of argmax predictions at answer positions. predictions[i] is the model's argmax
// for input position i, targets[i] the loader's target (kIgnoreIndex where not an answer).
// Both are rows of seq_len; a sequence counts as solved when all its answers are right.
struct MqarAccuracy {
  uint64_t correct = 0, total = 0;
  uint64_t sequences_solved = 0, sequences = 0;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
  double sequence_accuracy() const { return sequences ? double(sequences_solved) / double(sequences) : 0.0; }
  MqarAccuracy& operator+=(const MqarAccuracy& o);
};
MqarAccuracy mqar_accuracy(std::span<const int32_t> predictions, std::span<const int32_t> targets, int64_t seq_len);

}  // namespace hymba::data
