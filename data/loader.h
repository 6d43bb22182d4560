// The training and validation data loaders.
//
// A loader turns a TokenDataset into batches of `seq_len + 1`-token samples: inputs are the
// first seq_len tokens, targets the last seq_len (targets are -100 where loss_mask is 0).
//
// Modes:
//  - random: each sample is a contiguous window starting at a uniformly random offset of the
//    concatenated token stream (documents are separated by the EOS tokens already in the data).
//  - packed: the stream is cut in order into windows of seq_len + 1 tokens that overlap by one
//    token (window i starts at i * seq_len), so every token after the first is a target
//    exactly once per epoch.
//  For fixed-length data (sample_len > 0: MQAR, packed chat) windows are whole samples instead:
//  random picks a random sample, packed takes them in order; seq_len + 1 must equal sample_len.
//
// Determinism and sharding: global sample g (0, 1, 2, ... over the whole run) is a pure
// function of (seed, g). Global batch b holds samples [b*B, (b+1)*B); rank r of W gets rows
// [r*B/W, (r+1)*B/W). So the global batch sequence is the same for every world size, and the
// state needed to resume is one counter.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace hymba::data {

inline constexpr int32_t kIgnoreIndex = -100;

enum class LoaderMode { Random, Packed };
LoaderMode parse_loader_mode(const std::string& s);  // "random" | "packed"
const char* to_string(LoaderMode m);

struct LoaderConfig {
  LoaderMode mode = LoaderMode::Random;
  int64_t seq_len = 0;
  int64_t global_batch = 0;  // samples per optimizer step over all ranks
  int rank = 0, world = 1;
  uint64_t seed = 0;
};

// What a checkpoint stores to resume. rng_counter (global samples drawn) is the ground truth;
// epoch and position (sample index within the epoch) are derived from it and kept for humans
// and as a consistency check. mode, seed, seq_len and num_tokens identify the stream: a state
// is only accepted by a loader over the same data with the same settings. The global batch
// and world size may change between runs (the sample stream does not depend on them).
struct LoaderState {
  std::string mode;
  uint64_t seed = 0;
  int64_t seq_len = 0;
  uint64_t num_tokens = 0;
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint64_t rng_counter = 0;
  bool operator==(const LoaderState&) const = default;
};
void to_json(nlohmann::json& j, const LoaderState& s);
void from_json(const nlohmann::json& j, LoaderState& s);  // throws UserError on missing keys

struct Batch {
  int64_t batch = 0, seq_len = 0;  // this rank's rows, tokens per row
  std::vector<int32_t> inputs;     // batch * seq_len
  std::vector<int32_t> targets;    // batch * seq_len, kIgnoreIndex where not trained on
  int64_t valid_rows = 0;          // val loader: rows that hold data (the rest are padding)
  uint64_t epoch = 0;              // epoch of the batch's first sample
};

class DataLoader {
 public:
  // Throws UserError when the dataset is too small for seq_len, or seq_len does not match
  // fixed-length data; HYMBA_CHECK for a config that is not divisible by the world size.
  DataLoader(std::shared_ptr<TokenDataset> data, LoaderConfig cfg);

  Batch next();
  // Samples one epoch holds (random mode: as many windows as packed mode would have).
  uint64_t samples_per_epoch() const { return per_epoch_; }
  int64_t local_batch() const { return cfg_.global_batch / cfg_.world; }
  const LoaderConfig& config() const { return cfg_; }

  LoaderState state() const;
  // Throws UserError when the state belongs to other data or settings.
  void set_state(const LoaderState& s);

 private:
  // Start offset in the token stream of global sample g.
  uint64_t sample_start(uint64_t g) const;

  std::shared_ptr<TokenDataset> data_;
  LoaderConfig cfg_;
  uint64_t per_epoch_ = 0, window_ = 0, stride_ = 0;
  uint64_t counter_ = 0;  // global samples consumed
  std::vector<int32_t> tok_buf_;
  std::vector<uint8_t> mask_buf_;
};

// Walks the whole validation split once, in order, in windows like packed mode; the last
// window is padded (targets kIgnoreIndex), as are rows past the end in the last batch, so
// every token after the first is a target exactly once. Shards rows by rank like DataLoader.
class ValLoader {
 public:
  ValLoader(std::shared_ptr<TokenDataset> data, int64_t seq_len, int64_t global_batch, int rank = 0, int world = 1);
  // False when the walk is over (then reset() starts again).
  bool next(Batch& out);
  void reset() { next_sample_ = 0; }
  uint64_t num_samples() const { return samples_; }
  uint64_t num_batches() const { return (samples_ + uint64_t(global_batch_) - 1) / uint64_t(global_batch_); }

 private:
  std::shared_ptr<TokenDataset> data_;
  int64_t seq_len_, global_batch_;
  int rank_, world_;
  uint64_t samples_ = 0, stride_ = 0, window_ = 0;
  uint64_t next_sample_ = 0;
  std::vector<int32_t> tok_buf_;
  std::vector<uint8_t> mask_buf_;
};

}  // namespace hymba::data
