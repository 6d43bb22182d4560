// Reads one token shard (layout in data/shard_format.h) by hyperslab: opening a shard reads
// only its attributes and two doc_offsets entries, never the token array.
//
// HDF5 (the Debian build) is not thread-safe: use a reader from one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/h5.h"

namespace hymba::data {

class ShardReader {
 public:
  // Opens and validates `path`; throws UserError naming the file and what is wrong.
  explicit ShardReader(std::string path);

  const std::string& path() const { return path_; }
  uint64_t num_tokens() const { return num_tokens_; }
  uint64_t num_docs() const { return num_docs_; }
  uint64_t vocab_size() const { return vocab_size_; }
  bool has_mask() const { return has_mask_; }
  int64_t sample_len() const { return sample_len_; }
  const std::string& kind() const { return kind_; }
  // Bytes per stored token: 2 (uint16) or 4 (uint32).
  int token_bytes() const { return token_bytes_; }

  // tokens[start, start + count) as int32, into out (count elements).
  void read_tokens(uint64_t start, uint64_t count, int32_t* out) const;
  // loss_mask[start, start + count) into out; requires has_mask().
  void read_mask(uint64_t start, uint64_t count, uint8_t* out) const;
  // doc_offsets[first, first + count).
  std::vector<uint64_t> read_doc_offsets(uint64_t first, uint64_t count) const;

  std::optional<std::string> attr_string(const std::string& name) const;
  std::optional<int64_t> attr_int(const std::string& name) const;

 private:
  void read_1d(hid_t dset, hid_t mtype, uint64_t start, uint64_t count, uint64_t length, void* out,
               const char* name) const;

  std::string path_;
  h5::Handle file_, tokens_, offsets_, mask_;
  uint64_t num_tokens_ = 0, num_docs_ = 0, vocab_size_ = 0;
  int64_t sample_len_ = 0;
  bool has_mask_ = false;
  int token_bytes_ = 0;
  std::string kind_;
};

}  // namespace hymba::data
