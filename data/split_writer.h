// Writes one split (train or val) of a dataset as numbered shards DIR/<split>_NNN.h5,
// starting a new shard at the first document end after a shard reaches shard_tokens (a
// document is never split across shards). No file is created for a split with no documents.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/shard_writer.h"

namespace hymba::data {

class SplitWriter {
 public:
  SplitWriter(std::filesystem::path dir, std::string split, uint64_t vocab_size, bool with_mask,
              uint64_t shard_tokens, ShardInfo info);

  void append(std::span<const int32_t> tokens, std::span<const uint8_t> mask = {});
  // Ends a document; starts a new shard afterwards when this one is full and may_rotate
  // (fixed-length data pass false inside a sample so that shards hold whole samples).
  void end_document(bool may_rotate = true);
  // Closes the open shard; returns the paths of all shards written.
  std::vector<std::string> close();

  uint64_t tokens() const { return tokens_ + (cur_ ? cur_->num_tokens() : 0); }
  uint64_t docs() const { return docs_ + (cur_ ? cur_->num_docs() : 0); }
  size_t shards() const { return paths_.size(); }

  static std::string shard_name(const std::string& split, size_t index);

 private:
  void close_current();

  std::filesystem::path dir_;
  std::string split_;
  uint64_t vocab_;
  bool with_mask_;
  uint64_t shard_tokens_;
  ShardInfo info_;
  std::unique_ptr<ShardWriter> cur_;
  std::vector<std::string> paths_;
  uint64_t tokens_ = 0, docs_ = 0;  // in closed shards
};

}  // namespace hymba::data
