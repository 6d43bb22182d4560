// Chat / SFT data: JSONL conversations {"messages": [{"role": ..., "content": ...}, ...]}
// rendered with the Hymba chat template (HYMBA_SPEC section 6) and packed into fixed-length
// samples with a loss mask on the assistant's tokens.
//
// Template (contents are stripped of surrounding whitespace, like the published template):
//   <extra_id_0>System[\n{system}]\n\n
//   <extra_id_1>User\n{user}\n
//   <extra_id_1>Assistant\n{assistant}<EOS>
//   <extra_id_1>User\n{user}\n ...            (further turns)
// The mask is 1 on the tokens of each assistant content and on the EOS after it, 0 elsewhere.
// The text between EOS tokens is tokenized in one piece (not segment by segment), so the
// tokens are exactly those a generation prompt built by render_prompt() produces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"

namespace hymba::data {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};
using Conversation = std::vector<ChatMessage>;

// Checks and converts one JSONL record; `where` ("file:line") prefixes every error. A system
// message may only come first.
Conversation parse_conversation(const nlohmann::json& j, const std::string& where);

struct ChatTokens {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
};

// Renders a whole conversation for training.
ChatTokens render_conversation(const Tokenizer& tok, const Conversation& c);
// Renders the conversation so far plus "<extra_id_1>Assistant\n", for generation.
std::vector<int32_t> render_prompt(const Tokenizer& tok, const Conversation& c);
// The template text of a conversation without the EOS tokens (for inspection and tests).
std::string render_text(const Conversation& c);

// Packs rendered conversations in order into samples of exactly sample_len tokens: a sample
// takes conversations while they fit and is then padded (pad id, mask 0). A conversation is
// never split across samples; one longer than sample_len is cut to its first sample_len
// tokens, or dropped when that prefix has no masked token.
struct PackedSample {
  ChatTokens data;                   // exactly sample_len tokens
  std::vector<int64_t> doc_lengths;  // tokens of each conversation in it (padding counts to the last)
  int64_t padding = 0;               // pad tokens at its end
};

class ChatPacker {
 public:
  ChatPacker(int64_t sample_len, int32_t pad_id) : len_(sample_len), pad_(pad_id) {}
  // Returns the samples completed by adding this conversation (0, 1 or 2).
  std::vector<PackedSample> add(ChatTokens c);
  // The last partial sample, padded (none when empty).
  std::vector<PackedSample> flush();
  uint64_t truncated() const { return truncated_; }
  uint64_t dropped() const { return dropped_; }

 private:
  PackedSample finish_current();

  int64_t len_;
  int32_t pad_;
  PackedSample cur_;
  uint64_t truncated_ = 0, dropped_ = 0;
};

struct ChatPrepareOptions {
  std::string tokenizer;
  SpecialIds special;
  std::vector<std::string> inputs;  // .jsonl files or directories of them
  std::string out;
  int64_t seq_len = 2048;           // samples are seq_len + 1 tokens
  double val_fraction = 0.01;
  uint64_t seed = 0;
  int threads = 0;
  bool force = false;
  bool progress = true;
};

struct ChatPrepareStats {
  uint64_t conversations[2] = {0, 0};  // train, val
  uint64_t samples[2] = {0, 0};
  uint64_t tokens = 0;         // of the rendered conversations, before any truncation
  uint64_t masked_tokens = 0;  // trained-on tokens written
  uint64_t pad_tokens = 0;
  uint64_t truncated = 0, dropped = 0, no_assistant = 0;
};

// Writes DIR/train_NNN.h5, DIR/val_NNN.h5 (with loss_mask and sample_len = seq_len + 1)
// and meta.json, atomically.
ChatPrepareStats prepare_chat(const ChatPrepareOptions& opts);

}  // namespace hymba::data
