// Tokenizer training, loading, encode/decode and special ids.
#include <gtest/gtest.h>

#include <sentencepiece_trainer.h>

#include "data/chat.h"
#include "data/tokenizer.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;

using testing::expect_user_error;
using testing::read_file;
using testing::shared_tokenizer;
using testing::TempDir;
using testing::write_file;

TEST(Tokenizer, TrainedModelHasOurLayout) {
  Tokenizer t = Tokenizer::load(shared_tokenizer());
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), 3);
  EXPECT_TRUE(t.byte_fallback());
  EXPECT_TRUE(t.is_control(1));
  EXPECT_TRUE(t.is_control(2));
  // The chat template markers are single pieces.
  EXPECT_GE(t.piece_to_id("<extra_id_0>"), 0);
  EXPECT_GE(t.piece_to_id("<extra_id_1>"), 0);
  EXPECT_EQ(t.encode("<extra_id_1>").size(), 2u);  // dummy-prefix piece + the marker
  EXPECT_EQ(t.piece_to_id("no such piece at all"), -1);
}

TEST(Tokenizer, RoundTripsTextExactlyIncludingUnseenCharacters) {
  Tokenizer t = Tokenizer::load(shared_tokenizer());
  const std::vector<std::string> texts = {
      testing::make_text(999, 20),                      // same distribution as training, unseen text
      "Two  spaces,\ttab and\nnewline.",                // identity normalization keeps all of it
      "caf\xC3\xA9 \xE6\xBC\xA2\xE5\xAD\x97 \xF0\x9F\x99\x82 \\ {}",  // not in training: byte fallback
      "123456 digits",
  };
  for (const auto& s : texts) {
    auto ids = t.encode(s);
    for (int id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, t.vocab_size());
      EXPECT_NE(id, t.unk_id()) << "byte fallback should leave no <unk> in: " << s;
    }
    EXPECT_EQ(t.decode(ids), s);
  }
  // The tokenizer learned the corpus: in-distribution text compresses well below 1 token/byte.
  std::string in_dist = testing::make_text(1000, 50);
  EXPECT_LT(double(t.encode(in_dist).size()) / double(in_dist.size()), 0.45);
  // Digits are split one per piece.
  auto digit_ids = t.encode("98765");
  EXPECT_GE(digit_ids.size(), 5u);
}

TEST(Tokenizer, SpansPointIntoTheInput) {
  Tokenizer t = Tokenizer::load(shared_tokenizer());
  std::string s = "Kalo mine, \xE6\xBC\xA2 end.";
  auto spans = t.encode_spans(s);
  auto ids = t.encode(s);
  ASSERT_EQ(spans.size(), ids.size());
  // Spans run left to right and cover the input without gaps.
  uint32_t prev_begin = 0, prev_end = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(spans[i].id, ids[i]);
    EXPECT_LE(spans[i].begin, spans[i].end);
    EXPECT_GE(spans[i].begin, prev_begin);
    EXPECT_LE(spans[i].begin, prev_end);
    EXPECT_LE(spans[i].end, s.size());
    prev_begin = spans[i].begin;
    prev_end = std::max(prev_end, spans[i].end);
  }
  EXPECT_EQ(spans.front().begin, 0u);
  EXPECT_EQ(spans.back().end, s.size());
}

TEST(Tokenizer, TrainingIsDeterministicAndAtomic) {
  TempDir d;
  std::string corpus;
  for (int i = 0; i < 6; ++i) corpus += testing::make_text(100 + i, 40);
  write_file(d / "c.txt", corpus);
  TokenizerTrainOptions o;
  o.inputs = {(d / "c.txt").string()};
  o.vocab_size = 400;
  o.out_prefix = (d / "a").string();
  auto st = train_tokenizer(o);
  EXPECT_GT(st.sentences, 10u);
  o.out_prefix = (d / "b").string();
  train_tokenizer(o);
  EXPECT_EQ(read_file(d / "a.model"), read_file(d / "b.model"));
  EXPECT_EQ(Tokenizer::load((d / "a.model").string()).fingerprint(),
            Tokenizer::load((d / "b.model").string()).fingerprint());
  EXPECT_TRUE(fs::exists(d / "a.vocab"));
  // Existing outputs are not overwritten without force; no temporary files are left.
  o.out_prefix = (d / "a").string();
  expect_user_error([&] { train_tokenizer(o); }, {"a.model", "already exists", "--force"});
  EXPECT_EQ(testing::list_tree(d.path()), (std::vector<std::string>{"a.model", "a.vocab", "b.model", "b.vocab", "c.txt"}));
}

TEST(Tokenizer, TrainingErrorsAreUserErrors) {
  TempDir d;
  write_file(d / "c.txt", testing::make_text(1, 30));
  write_file(d / "bad.txt", "good line\nbad \xFE line\n");
  TokenizerTrainOptions o;
  o.inputs = {(d / "c.txt").string()};
  o.out_prefix = (d / "t").string();
  o.vocab_size = 100;
  expect_user_error([&] { train_tokenizer(o); }, {"--vocab 100", "too small"});
  o.vocab_size = 400;
  o.inputs = {(d / "bad.txt").string()};
  expect_user_error([&] { train_tokenizer(o); }, {"bad.txt", "invalid UTF-8", "line 2", "byte offset 14"});
  o.inputs = {(d / "missing.txt").string()};
  expect_user_error([&] { train_tokenizer(o); }, {"missing.txt", "no such file"});
  o.inputs = {(d / "c.txt").string()};
  o.model_type = "wordpiece";
  expect_user_error([&] { train_tokenizer(o); }, {"wordpiece"});
  EXPECT_FALSE(fs::exists(d / "t.model"));
  EXPECT_EQ(testing::list_tree(d.path()), (std::vector<std::string>{"bad.txt", "c.txt"}));
}

TEST(Tokenizer, LoadErrorsAndOverrides) {
  TempDir d;
  expect_user_error([&] { Tokenizer::load((d / "none.model").string()); }, {"none.model", "not found"});
  write_file(d / "junk.model", "this is not a protobuf");
  expect_user_error([&] { Tokenizer::load((d / "junk.model").string()); }, {"junk.model", "not a valid sentencepiece"});
  expect_user_error([&] { Tokenizer::load(d.path().string()); }, {"is a directory"});
  Tokenizer t = Tokenizer::load(shared_tokenizer(), SpecialIds{std::nullopt, 7, -1});
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 7);
  EXPECT_EQ(t.pad_id(), -1);
  expect_user_error([&] { Tokenizer::load(shared_tokenizer(), SpecialIds{std::nullopt, 512, std::nullopt}); },
                    {"--eos-id 512", "outside the vocabulary"});
}

// A model with the Llama-2 tokenizer's layout (unk 0, bos 1, eos 2, no pad; byte fallback,
// identity normalization, split digits), trained by sentencepiece directly, as Meta's was.
TEST(Tokenizer, LoadsLlamaStyleModelsWithoutPad) {
  TempDir d;
  std::string corpus;
  for (int i = 0; i < 6; ++i) corpus += testing::make_text(200 + i, 40);
  write_file(d / "c.txt", corpus);
  auto status = sentencepiece::SentencePieceTrainer::Train(
      {{"input", (d / "c.txt").string()}, {"model_prefix", (d / "llama").string()}, {"model_type", "bpe"},
       {"vocab_size", "400"}, {"byte_fallback", "true"}, {"normalization_rule_name", "identity"},
       {"remove_extra_whitespaces", "false"}, {"split_digits", "true"}, {"unk_id", "0"}, {"bos_id", "1"},
       {"eos_id", "2"}, {"pad_id", "-1"}, {"minloglevel", "2"}});
  ASSERT_TRUE(status.ok()) << status.ToString();
  Tokenizer t = Tokenizer::load((d / "llama.model").string());
  EXPECT_EQ(t.vocab_size(), 400);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), -1);
  EXPECT_TRUE(t.byte_fallback());
  EXPECT_EQ(t.piece_to_id("<extra_id_1>"), -1);  // the chat markers are plain text here
  const std::string s = "Mi ka\nlo 42 \xE2\x82\xAC";
  EXPECT_EQ(t.decode(t.encode(s)), s);
  // Chat rendering works on such a model: the markers are spelled out in pieces.
  Conversation c = {{"user", "Ka lo?"}, {"assistant", "Ne."}};
  ChatTokens ct = render_conversation(t, c);
  EXPECT_EQ(ct.tokens.back(), 2);
  std::vector<int32_t> answer;
  for (size_t i = 0; i < ct.tokens.size(); ++i)
    if (ct.mask[i] && ct.tokens[i] != 2) answer.push_back(ct.tokens[i]);
  EXPECT_EQ(t.decode(answer), "Ne.");
}

}  // namespace
}  // namespace hymba::data
