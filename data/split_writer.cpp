#include "data/split_writer.h"

#include <cstdio>

#include "core/error.h"

namespace hymba::data {

SplitWriter::SplitWriter(std::filesystem::path dir, std::string split, uint64_t vocab_size, bool with_mask,
                         uint64_t shard_tokens, ShardInfo info)
    : dir_(std::move(dir)), split_(std::move(split)), vocab_(vocab_size), with_mask_(with_mask),
      shard_tokens_(shard_tokens), info_(std::move(info)) {
  HYMBA_CHECK(shard_tokens_ > 0, "shard_tokens must be positive");
  info_.split = split_;
}

std::string SplitWriter::shard_name(const std::string& split, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "_%03zu.h5", index);
  return split + buf;
}

void SplitWriter::append(std::span<const int32_t> tokens, std::span<const uint8_t> mask) {
  if (!cur_) {
    std::string path = (dir_ / shard_name(split_, paths_.size())).string();
    cur_ = std::make_unique<ShardWriter>(path, vocab_, with_mask_);
    paths_.push_back(path);
  }
  cur_->append(tokens, mask);
}

void SplitWriter::end_document(bool may_rotate) {
  if (!cur_) return;
  cur_->end_document();
  if (may_rotate && cur_->num_tokens() >= shard_tokens_) close_current();
}

void SplitWriter::close_current() {
  if (!cur_) return;
  cur_->close(info_);
  tokens_ += cur_->num_tokens();
  docs_ += cur_->num_docs();
  cur_.reset();
}

std::vector<std::string> SplitWriter::close() {
  close_current();
  return paths_;
}

}  // namespace hymba::data
