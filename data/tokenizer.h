// Tokenizer: any sentencepiece model (ours from `hymba tokenizer train`, or Llama-2 style
// tokenizer.model files such as Hymba-1.5B's), plus training a new one.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace hymba::data {

// Overrides of the special ids read from the model. -1 means "none" (for pad only).
struct SpecialIds {
  std::optional<int> bos, eos, pad;
};

// A token id with the byte span [begin, end) of the input text it came from.
struct TokenSpan {
  int32_t id;
  uint32_t begin, end;
};

class Tokenizer {
 public:
  // Loads a sentencepiece model file; throws UserError when it is missing or invalid, or when
  // an override is outside the vocabulary.
  static Tokenizer load(const std::string& path, const SpecialIds& overrides = {});

  int vocab_size() const { return vocab_size_; }
  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int pad_id() const { return pad_; }  // -1 when the model has none
  int unk_id() const { return unk_; }
  bool byte_fallback() const { return byte_fallback_; }
  const std::string& path() const { return path_; }
  // FNV-1a 64 of the serialized model: identifies the exact tokenizer a dataset was made with.
  uint64_t fingerprint() const { return fingerprint_; }

  // Thread-safe (sentencepiece encoding is const and keeps no shared mutable state).
  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  std::vector<TokenSpan> encode_spans(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  std::string id_to_piece(int id) const;
  // -1 when the piece is not in the vocabulary.
  int piece_to_id(std::string_view piece) const;
  bool is_control(int id) const;

 private:
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
  int vocab_size_ = 0, bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1;
  bool byte_fallback_ = false;
  uint64_t fingerprint_ = 0;
};

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // files or directories, plain text or .jsonl
  int vocab_size = 4096;
  std::string out_prefix;           // writes <out_prefix>.model and <out_prefix>.vocab
  std::string model_type = "bpe";   // bpe | unigram
  double character_coverage = 0.9995;
  // 0 = use every sentence; otherwise a seeded random sample of this many sentences.
  uint64_t max_sentences = 0;
  uint32_t seed = 0;
  // Always pieces of their own: the chat template's markers by default.
  std::vector<std::string> user_symbols = {"<extra_id_0>", "<extra_id_1>"};
  std::string jsonl_key = "text";
  bool verbose = false;  // sentencepiece's own training log
  bool force = false;    // overwrite existing output files
};

struct TokenizerTrainStats {
  uint64_t sentences = 0, bytes = 0;
  double seconds = 0;
};

// Trains a sentencepiece model with byte fallback, identity normalization (text is kept
// byte-exact, so newlines and the chat template survive), digits split, and fixed seed /
// single thread for reproducibility. Files are written under temporary names and renamed.
TokenizerTrainStats train_tokenizer(const TokenizerTrainOptions& opts);

}  // namespace hymba::data
