// Writes one token shard (layout in data/shard_format.h), appending in bounded memory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/h5.h"

namespace hymba::data {

// Descriptive attributes, written when the shard is closed.
struct ShardInfo {
  std::string kind = "text";  // text | mqar | chat
  std::string split;          // train | val
  std::string tokenizer;      // tokenizer model path as given by the user ("" for MQAR)
  std::string tokenizer_name; // its file name
  uint64_t tokenizer_fingerprint = 0;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;
  std::string source;         // input paths, one per line
  int64_t sample_len = 0;     // > 0: fixed-length samples of this many tokens
  std::string settings;       // JSON text of the options that produced the shard
};

class ShardWriter {
 public:
  // Creates `path` (which must not exist). with_mask adds the loss_mask dataset.
  ShardWriter(std::string path, uint64_t vocab_size, bool with_mask);
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  // A writer destroyed without close() deletes its file: a half-written shard never survives.
  ~ShardWriter();

  // Appends tokens to the current document (mask: same length, required iff with_mask).
  void append(std::span<const int32_t> tokens, std::span<const uint8_t> mask = {});
  // Ends the current document (an empty document is not recorded).
  void end_document();
  void add_document(std::span<const int32_t> tokens, std::span<const uint8_t> mask = {}) {
    append(tokens, mask);
    end_document();
  }

  uint64_t num_tokens() const { return written_ + tok_buf_.size(); }
  uint64_t num_docs() const { return docs_; }
  const std::string& path() const { return path_; }

  // Flushes, writes the attributes and closes the file.
  void close(const ShardInfo& info);

 private:
  void flush();

  std::string path_;
  uint64_t vocab_size_;
  bool with_mask_;
  bool closed_ = false;
  h5::Handle file_, tokens_, offsets_, mask_;
  std::vector<uint32_t> tok_buf_;
  std::vector<uint8_t> mask_buf_;
  std::vector<uint64_t> off_buf_;  // pending doc_offsets entries
  uint64_t written_ = 0;           // tokens already in the file
  uint64_t offsets_written_ = 0;   // doc_offsets entries already in the file
  uint64_t last_offset_ = 0;       // start of the current document
  uint64_t docs_ = 0;
};

}  // namespace hymba::data
