// train_tokenizer (declared in data/tokenizer.h): sentencepiece training fed by our own input
// reader, so training accepts the same files, directories and JSONL as `hymba prepare`.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <exception>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "data/inputs.h"
#include "data/tokenizer.h"

// Not in the public headers of sentencepiece 0.1.97, but exported by libsentencepiece: the
// only way to quiet its per-iteration training log.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
int GetMinLogLevel();
}  // namespace sentencepiece::logging

namespace fs = std::filesystem;

namespace hymba::data {

namespace {

// Feeds sentencepiece one line of input text at a time. Errors from our reader (bad UTF-8,
// bad JSONL) are caught here, end the iteration, and are rethrown after training returns,
// so they reach the user as the original UserError.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  LineIterator(std::vector<InputFile> files, const std::string& jsonl_key)
      : stream_(std::move(files), StreamOptions{TextDocMode::Line, jsonl_key, size_t(1) << 16}) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override {
    if (error_) return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, "input error");
    return {};
  }
  std::exception_ptr error() const { return error_; }
  uint64_t sentences() const { return sentences_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void advance() {
    try {
      while (lines_.empty()) {
        chunks_.clear();
        if (!stream_.next_batch(chunks_, size_t(4) << 20)) {
          done_ = true;
          return;
        }
        for (const auto& c : chunks_)
          for (auto l : split_lines(c.text))
            if (!l.empty()) lines_.emplace_back(l);
      }
      current_ = std::move(lines_.front());
      lines_.pop_front();
      ++sentences_;
      bytes_ += current_.size();
    } catch (...) {
      error_ = std::current_exception();
      done_ = true;
    }
  }

  DocumentStream stream_;
  std::vector<DocChunk> chunks_;
  std::deque<std::string> lines_;
  std::string current_;
  bool done_ = false;
  std::exception_ptr error_;
  uint64_t sentences_ = 0, bytes_ = 0;
};

// Writes under a temporary name and renames, so a crash never leaves a partial file.
void write_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      HYMBA_USER_ERROR(path, ": cannot write");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    HYMBA_USER_ERROR(path, ": cannot write (", ec.message(), ")");
  }
}

std::string join(const std::vector<std::string>& v, char sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? std::string(1, sep) : "") + v[i];
  return s;
}

}  // namespace

TokenizerTrainStats train_tokenizer(const TokenizerTrainOptions& opts) {
  if (opts.out_prefix.empty()) HYMBA_USER_ERROR("tokenizer train: no output prefix given (--out)");
  if (opts.model_type != "bpe" && opts.model_type != "unigram")
    HYMBA_USER_ERROR("tokenizer train: unknown model type '", opts.model_type, "' (expected bpe or unigram)");
  // Byte fallback needs 256 byte pieces, plus unk/bos/eos/pad and the user symbols.
  const int reserved = 256 + 4 + int(opts.user_symbols.size());
  if (opts.vocab_size <= reserved)
    HYMBA_USER_ERROR("tokenizer train: --vocab ", opts.vocab_size, " is too small: byte fallback and the special ",
                     "tokens take ", reserved, " ids; use at least ", reserved + 64);
  if (opts.character_coverage <= 0 || opts.character_coverage > 1)
    HYMBA_USER_ERROR("tokenizer train: character coverage must be in (0, 1], got ", opts.character_coverage);
  for (const auto& s : opts.user_symbols)
    if (s.empty() || s.find(',') != std::string::npos)
      HYMBA_USER_ERROR("tokenizer train: user symbol '", s, "' must be non-empty and contain no comma");

  const std::string model_path = opts.out_prefix + ".model", vocab_path = opts.out_prefix + ".vocab";
  std::error_code ec;
  if (!opts.force)
    for (const auto& p : {model_path, vocab_path})
      if (fs::exists(p, ec)) HYMBA_USER_ERROR(p, ": already exists (use --force to overwrite)");
  fs::path parent = fs::path(opts.out_prefix).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) HYMBA_USER_ERROR(parent.string(), ": cannot create directory (", ec.message(), ")");
  }

  LineIterator it(expand_inputs(opts.inputs), opts.jsonl_key);
  std::unordered_map<std::string, std::string> kw = {
      // No prefix: the model comes back serialized (the prefix would be recorded in the
      // model, making it depend on where it was written).
      {"model_prefix", ""},
      {"model_type", opts.model_type},
      {"vocab_size", std::to_string(opts.vocab_size)},
      {"character_coverage", std::to_string(opts.character_coverage)},
      {"byte_fallback", "true"},
      // Keep text byte-exact: newlines, repeated spaces and the chat template survive.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"max_sentence_length", "16384"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "3"},
      {"num_threads", "1"},  // the unigram trainer's result depends on its thread count
      {"input_sentence_size", std::to_string(opts.max_sentences)},
      {"shuffle_input_sentence", "true"},
  };
  if (!opts.user_symbols.empty()) kw["user_defined_symbols"] = join(opts.user_symbols, ',');

  sentencepiece::SetRandomGeneratorSeed(opts.seed);
  const int old_level = sentencepiece::logging::GetMinLogLevel();
  if (!opts.verbose) sentencepiece::logging::SetMinLogLevel(2);  // errors only
  auto t0 = std::chrono::steady_clock::now();
  std::string model;
  auto status = sentencepiece::SentencePieceTrainer::Train(kw, &it, &model);
  sentencepiece::logging::SetMinLogLevel(old_level);
  if (it.error()) std::rethrow_exception(it.error());
  if (it.sentences() == 0) HYMBA_USER_ERROR("tokenizer train: the inputs contain no text");
  if (!status.ok()) HYMBA_USER_ERROR("tokenizer training failed: ", status.ToString());

  // The .vocab file (piece <tab> score per line, like sentencepiece's) is for humans.
  sentencepiece::SentencePieceProcessor sp;
  auto load = sp.LoadFromSerializedProto(model);
  HYMBA_CHECK(load.ok(), "trained model does not load: ", load.ToString());
  std::string vocab;
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    char score[32];
    std::snprintf(score, sizeof score, "%g", double(sp.GetScore(i)));
    vocab += sp.IdToPiece(i) + "\t" + score + "\n";
  }
  write_atomically(vocab_path, vocab);
  write_atomically(model_path, model);
  TokenizerTrainStats st;
  st.sentences = it.sentences();
  st.bytes = it.bytes();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace hymba::data
