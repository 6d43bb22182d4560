// A split of a prepared dataset: its shards (DIR/<split>_NNN.h5, in numeric order) seen as one
// concatenated token stream, read through a small block cache.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/shard_reader.h"

namespace hymba::data {

struct DatasetOptions {
  // When set, every shard's vocab_size attribute must equal it (the tokenizer's vocabulary).
  std::optional<uint64_t> expected_vocab;
  // Cache: this many blocks of block_tokens tokens (with their loss mask): 1 Mi tokens,
  // about 5 MB. Blocks are small so that a random window does not drag in much more than
  // itself; packed and val reads are sequential and hit the cache.
  uint64_t block_tokens = uint64_t(1) << 14;
  size_t cache_blocks = 64;
};

class TokenDataset {
 public:
  // `path` is a directory made by `hymba prepare` (its <split>_*.h5 files are used) or a
  // single .h5 shard (split is then ignored). Throws UserError when no shard matches, when a
  // shard is invalid, or when shards disagree (vocab_size, sample_len, loss_mask presence).
  static std::shared_ptr<TokenDataset> open(const std::string& path, const std::string& split,
                                            const DatasetOptions& opts = {});

  // The shard files of a split, in numeric order (empty when there are none).
  static std::vector<std::string> shard_paths(const std::string& dir, const std::string& split);

  uint64_t num_tokens() const { return total_; }
  uint64_t num_docs() const { return docs_; }
  uint64_t vocab_size() const { return vocab_; }
  bool has_mask() const { return has_mask_; }
  // > 0 when the data are fixed-length samples (MQAR, packed chat) that must not be cut.
  int64_t sample_len() const { return sample_len_; }
  const std::string& kind() const { return kind_; }
  const std::string& description() const { return where_; }
  size_t num_shards() const { return shards_.size(); }
  const ShardReader& shard(size_t i) const { return *shards_[i]; }

  // Copies tokens [start, start + count) of the concatenated stream into tokens, and (when
  // mask is not null) the loss mask into mask (all ones when the data have no loss_mask).
  // Token ids are checked against vocab_size as blocks are loaded.
  void read(uint64_t start, uint64_t count, int32_t* tokens, uint8_t* mask = nullptr);

  uint64_t cache_misses() const { return misses_; }

 private:
  struct Block {
    std::vector<int32_t> tokens;
    std::vector<uint8_t> mask;
    std::list<uint64_t>::iterator lru;
  };
  const Block& block(size_t shard, uint64_t index);

  std::vector<std::unique_ptr<ShardReader>> shards_;
  std::vector<uint64_t> starts_;  // starts_[i]: stream offset of shard i; starts_.back() = total
  uint64_t total_ = 0, docs_ = 0, vocab_ = 0;
  int64_t sample_len_ = 0;
  bool has_mask_ = false;
  std::string kind_, where_;
  DatasetOptions opts_;
  // LRU of blocks keyed by shard * 2^40 + block index (2^40 blocks per shard is ample).
  std::unordered_map<uint64_t, Block> cache_;
  std::list<uint64_t> lru_;
  uint64_t misses_ = 0;
};

}  // namespace hymba::data
