// Chat/SFT data: template rendering, loss mask, packing and prepare_chat.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/chat.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/shard_reader.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::shared_tokenizer;
using testing::TempDir;
using testing::write_file;

Conversation conv(std::initializer_list<std::pair<const char*, const char*>> msgs) {
  Conversation c;
  for (auto& [r, t] : msgs) c.push_back({r, t});
  return c;
}

TEST(Chat, TemplateTextMatchesTheHymbaFormat) {
  auto c = conv({{"system", " Be brief. "}, {"user", "Hi?"}, {"assistant", "Hello."}, {"user", "More"},
                 {"assistant", "No."}});
  EXPECT_EQ(render_text(c),
            "<extra_id_0>System\nBe brief.\n\n<extra_id_1>User\nHi?\n<extra_id_1>Assistant\nHello."
            "<extra_id_1>User\nMore\n<extra_id_1>Assistant\nNo.");
  EXPECT_EQ(render_text(conv({{"user", "Q"}, {"assistant", "A"}})),
            "<extra_id_0>System\n\n<extra_id_1>User\nQ\n<extra_id_1>Assistant\nA");
}

// Decodes the runs of masked tokens.
std::vector<std::string> masked_runs(const Tokenizer& tok, const ChatTokens& ct) {
  std::vector<std::string> runs;
  std::vector<int32_t> cur;
  for (size_t i = 0; i <= ct.tokens.size(); ++i) {
    if (i < ct.tokens.size() && ct.mask[i]) {
      cur.push_back(ct.tokens[i]);
    } else if (!cur.empty()) {
      bool eos = cur.back() == tok.eos_id();
      if (eos) cur.pop_back();
      runs.push_back(tok.decode(cur) + (eos ? "<EOS>" : ""));
      cur.clear();
    }
  }
  return runs;
}

TEST(Chat, MaskCoversExactlyTheAssistantTokensAndTheirEos) {
  Tokenizer tok = Tokenizer::load(shared_tokenizer());
  auto c = conv({{"system", "Kalo mi."}, {"user", "Ne ru ta shi?"}, {"assistant", "Ven dor el."},
                 {"user", "Gra tho?"}, {"assistant", "Qui zen pa, kalo."}});
  ChatTokens ct = render_conversation(tok, c);
  ASSERT_EQ(ct.tokens.size(), ct.mask.size());
  EXPECT_EQ(masked_runs(tok, ct), (std::vector<std::string>{"Ven dor el.<EOS>", "Qui zen pa, kalo.<EOS>"}));
  // Exactly two EOS tokens, both trained on; the conversation ends with one.
  EXPECT_EQ(std::count(ct.tokens.begin(), ct.tokens.end(), tok.eos_id()), 2);
  EXPECT_EQ(ct.tokens.back(), tok.eos_id());
  // Unmasked tokens decode to the template around the answers.
  std::vector<int32_t> prompt_part;
  for (size_t i = 0; i < ct.tokens.size() && !ct.mask[i]; ++i) prompt_part.push_back(ct.tokens[i]);
  EXPECT_EQ(tok.decode(prompt_part),
            "<extra_id_0>System\nKalo mi.\n\n<extra_id_1>User\nNe ru ta shi?\n<extra_id_1>Assistant\n");
  // The training tokens start with the generation prompt's tokens.
  auto prompt = render_prompt(tok, conv({{"system", "Kalo mi."}, {"user", "Ne ru ta shi?"}}));
  ASSERT_LE(prompt.size(), ct.tokens.size());
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), ct.tokens.begin()));
  EXPECT_EQ(ct.mask[prompt.size()], 1);
}

TEST(Chat, ParseErrorsNameTheRecordAndMessage) {
  auto p = [](const char* s) { return parse_conversation(nlohmann::json::parse(s), "f.jsonl:7"); };
  EXPECT_EQ(p(R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})").size(), 2u);
  expect_user_error([&] { p(R"({"msgs":[]})"); }, {"f.jsonl:7", "no \"messages\""});
  expect_user_error([&] { p(R"({"messages":[]})"); }, {"f.jsonl:7", "empty"});
  expect_user_error([&] { p(R"({"messages":[{"role":"bot","content":"x"}]})"); },
                    {"f.jsonl:7: messages[0]", "unknown role 'bot'"});
  expect_user_error([&] { p(R"({"messages":[{"role":"user","content":"x"},{"role":"system","content":"y"}]})"); },
                    {"messages[1]", "system message may only come first"});
  expect_user_error([&] { p(R"({"messages":[{"role":"user","content":5}]})"); }, {"messages[0]", "\"content\""});
  expect_user_error([&] { p(R"([1])"); }, {"f.jsonl:7", "JSON object"});
}

ChatTokens fake(int n, int masked_from) {
  ChatTokens c;
  for (int i = 0; i < n; ++i) {
    c.tokens.push_back(100 + i);
    c.mask.push_back(i >= masked_from);
  }
  return c;
}

TEST(Chat, PackerFillsSamplesWithoutSplittingConversations) {
  ChatPacker p(10, 3);
  std::vector<PackedSample> out;
  auto take = [&](std::vector<PackedSample> v) { out.insert(out.end(), v.begin(), v.end()); };
  take(p.add(fake(4, 2)));
  take(p.add(fake(5, 1)));   // 9 tokens: fits
  take(p.add(fake(3, 1)));   // does not fit: first sample padded with 1
  take(p.add(fake(7, 6)));   // 3 + 7 = 10 exactly
  take(p.add(fake(15, 3)));  // too long: cut to 10 (keeps masked tokens)
  take(p.add(fake(12, 11))); // too long and no masked token in the first 10: dropped
  take(p.flush());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].doc_lengths, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(out[0].padding, 1);
  EXPECT_EQ(out[0].data.tokens.back(), 3);
  EXPECT_EQ(out[0].data.mask.back(), 0);
  EXPECT_EQ(out[1].doc_lengths, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(out[1].padding, 0);
  EXPECT_EQ(out[2].doc_lengths, (std::vector<int64_t>{10}));
  for (auto& s : out) {
    EXPECT_EQ(s.data.tokens.size(), 10u);
    EXPECT_EQ(s.data.mask.size(), 10u);
  }
  EXPECT_EQ(p.truncated(), 1u);
  EXPECT_EQ(p.dropped(), 1u);
  EXPECT_TRUE(p.flush().empty());
}

TEST(Chat, PrepareWritesMaskedPackedShards) {
  TempDir t;
  Tokenizer tok = Tokenizer::load(shared_tokenizer());
  std::string jsonl;
  std::vector<Conversation> convs;
  for (int i = 0; i < 60; ++i) {
    std::string q = testing::make_text(uint64_t(i), 1 + i % 3), a = testing::make_text(uint64_t(500 + i), 1 + i % 4);
    Conversation c = {{"user", q}, {"assistant", a}};
    if (i % 5 == 0) c.insert(c.begin(), {"system", "Kalo."});
    nlohmann::json msgs = nlohmann::json::array();
    for (auto& m : c) msgs.push_back({{"role", m.role}, {"content", m.content}});
    jsonl += nlohmann::json{{"messages", msgs}}.dump() + "\n";
    convs.push_back(c);
  }
  jsonl += R"({"messages":[{"role":"user","content":"unanswered"}]})" "\n";
  write_file(t / "chat/part1.jsonl", jsonl);
  ChatPrepareOptions o;
  o.tokenizer = shared_tokenizer();
  o.inputs = {(t / "chat").string()};
  o.out = (t / "sft").string();
  o.seq_len = 127;
  o.val_fraction = 0.1;
  o.progress = false;
  auto st = prepare_chat(o);
  EXPECT_EQ(st.conversations[0] + st.conversations[1], 60u);
  EXPECT_EQ(st.no_assistant, 1u);
  EXPECT_GT(st.conversations[1], 0u);
  auto ds = TokenDataset::open(o.out, "train");
  EXPECT_EQ(ds->sample_len(), 128);
  EXPECT_TRUE(ds->has_mask());
  EXPECT_EQ(ds->kind(), "chat");
  EXPECT_EQ(ds->num_tokens(), st.samples[0] * 128);
  // Every conversation (doc) lies inside one sample, and its masked tokens are its answer.
  ShardReader r(ds->shard(0).path());
  auto off = r.read_doc_offsets(0, r.num_docs() + 1);
  EXPECT_EQ(r.num_docs(), st.conversations[0]);
  uint64_t masked = 0;
  for (size_t d = 0; d + 1 < off.size(); ++d) {
    EXPECT_EQ(off[d] / 128, (off[d + 1] - 1) / 128) << "conversation " << d << " crosses a sample boundary";
    std::vector<int32_t> tk(off[d + 1] - off[d]);
    std::vector<uint8_t> mk(tk.size());
    r.read_tokens(off[d], tk.size(), tk.data());
    r.read_mask(off[d], mk.size(), mk.data());
    auto runs = masked_runs(tok, ChatTokens{tk, mk});
    ASSERT_EQ(runs.size(), 1u) << "conversation " << d;
    EXPECT_EQ(runs[0].substr(runs[0].size() - 5), "<EOS>");
    for (auto m : mk) masked += m;
  }
  auto vds = TokenDataset::open(o.out, "val");
  std::vector<int32_t> vt(vds->num_tokens());
  std::vector<uint8_t> vm(vds->num_tokens());
  vds->read(0, vt.size(), vt.data(), vm.data());
  for (auto m : vm) masked += m;
  EXPECT_EQ(masked, st.masked_tokens);
  // The loader trains only on answers.
  DataLoader l(ds, LoaderConfig{LoaderMode::Packed, 127, 2, 0, 1, 0});
  Batch b = l.next();
  int trained = 0;
  for (auto x : b.targets) trained += x != kIgnoreIndex;
  EXPECT_GT(trained, 0);
  EXPECT_LT(trained, 2 * 127);

  // Non-JSONL input and broken records are user errors; nothing is left behind.
  write_file(t / "plain.txt", "hello");
  o.out = (t / "sft2").string();
  o.inputs = {(t / "plain.txt").string()};
  expect_user_error([&] { prepare_chat(o); }, {"plain.txt", "must be JSONL"});
  write_file(t / "bad.jsonl", R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]})" "\n"
                              R"({"messages":[{"role":"robot","content":"a"}]})" "\n");
  o.inputs = {(t / "bad.jsonl").string()};
  expect_user_error([&] { prepare_chat(o); }, {"bad.jsonl:2", "unknown role 'robot'"});
  write_file(t / "syntax.jsonl", "{\"messages\": [}\n");
  o.inputs = {(t / "syntax.jsonl").string()};
  expect_user_error([&] { prepare_chat(o); }, {"syntax.jsonl:1", "invalid JSON"});
  EXPECT_FALSE(fs::exists(t / "sft2"));
}

}  // namespace
}  // namespace hymba::data
