// The on-disk layout of a hymba token shard (one HDF5 file), shared by writer and reader.
//
//   /tokens       uint16 (vocab_size <= 65536) or uint32, length num_tokens, chunked
//   /doc_offsets  uint64, length num_docs + 1: document d is tokens[off[d], off[d+1])
//   /loss_mask    uint8, length num_tokens, optional: 1 where the token is a training target
//   attributes on the root group:
//     format ("hymba-tokens"), format_version, kind (text | mqar | chat), split (train | val),
//     vocab_size, num_tokens, num_docs, sample_len (0 = a token stream; > 0 = fixed-length
//     samples that the loader must not cut), tokenizer, tokenizer_name, tokenizer_fingerprint,
//     bos_id, eos_id, pad_id, source, settings (JSON text of the kind-specific options)
#pragma once

#include <cstdint>

namespace hymba::data::format {

inline constexpr const char* kTokens = "tokens";
inline constexpr const char* kDocOffsets = "doc_offsets";
inline constexpr const char* kLossMask = "loss_mask";
inline constexpr const char* kFormatName = "hymba-tokens";
inline constexpr int64_t kFormatVersion = 1;

// Largest vocabulary stored as uint16: ids 0..65535.
inline constexpr uint64_t kMaxU16Vocab = 65536;

// Chunk sizes, in elements. 32K tokens (64 KiB as uint16) keeps a random window read to one
// or two chunks while keeping the chunk index small for multi-GB shards.
inline constexpr uint64_t kTokenChunk = 1 << 15;
inline constexpr uint64_t kOffsetChunk = 1 << 12;

}  // namespace hymba::data::format
