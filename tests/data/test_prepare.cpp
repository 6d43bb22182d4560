// `prepare` for text: determinism, document split, shards, contents and bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/prepare.h"
#include "data/random.h"
#include "data/shard_reader.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::list_tree;
using testing::read_file;
using testing::shared_tokenizer;
using testing::TempDir;
using testing::write_file;

// A corpus: 30 text files in nested directories and a JSONL file of 20 records.
// Returns the documents in the order prepare must see them.
std::vector<std::string> make_corpus(const fs::path& root) {
  std::vector<std::pair<std::string, std::string>> files;  // (relative path, doc)
  for (int i = 0; i < 30; ++i) {
    std::string text = testing::make_text(uint64_t(i), 5 + i % 7);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    char name[64];
    std::snprintf(name, sizeof name, "%s/doc%02d.txt", i % 3 == 0 ? "a" : "b/c", i);
    write_file(root / "corpus" / name, text + "\n\n");
    files.emplace_back(name, text);
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> docs;
  for (auto& f : files) docs.push_back(f.second);
  std::string jsonl;
  for (int i = 0; i < 20; ++i) {
    std::string text = testing::make_text(uint64_t(100 + i), 3);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    jsonl += nlohmann::json{{"text", text}, {"n", i}}.dump() + "\n";
    docs.push_back(text);
  }
  write_file(root / "extra.jsonl", jsonl);
  return docs;
}

PrepareOptions base_options(const fs::path& root, const std::string& out) {
  PrepareOptions o;
  o.tokenizer = shared_tokenizer();
  o.inputs = {(root / "corpus").string(), (root / "extra.jsonl").string()};
  o.out = (root / out).string();
  o.val_fraction = 0.2;
  o.seed = 42;
  o.progress = false;
  return o;
}

// Documents of a split, as token vectors, in order.
std::vector<std::vector<int32_t>> read_docs(const std::string& dir, const std::string& split) {
  std::vector<std::vector<int32_t>> docs;
  for (const auto& p : TokenDataset::shard_paths(dir, split)) {
    ShardReader r(p);
    auto off = r.read_doc_offsets(0, r.num_docs() + 1);
    for (size_t d = 0; d + 1 < off.size(); ++d) {
      std::vector<int32_t> t(off[d + 1] - off[d]);
      r.read_tokens(off[d], t.size(), t.data());
      docs.push_back(std::move(t));
    }
  }
  return docs;
}

TEST(Prepare, DocumentsAreTokenizedWithEosAndSplitBySeededHash) {
  TempDir t;
  auto docs = make_corpus(t.path());
  auto st = prepare_text(base_options(t.path(), "out"));
  Tokenizer tok = Tokenizer::load(shared_tokenizer());
  std::vector<std::vector<int32_t>> want_train, want_val;
  for (size_t i = 0; i < docs.size(); ++i) {
    auto ids = tok.encode(docs[i]);
    ids.push_back(tok.eos_id());
    (is_val_document(42, i, 0.2) ? want_val : want_train).push_back(ids);
  }
  ASSERT_FALSE(want_val.empty());
  ASSERT_FALSE(want_train.empty());
  const std::string out = (t / "out").string();
  EXPECT_EQ(read_docs(out, "train"), want_train);
  EXPECT_EQ(read_docs(out, "val"), want_val);
  EXPECT_EQ(st.train.docs, want_train.size());
  EXPECT_EQ(st.val.docs, want_val.size());
  EXPECT_EQ(st.files, 31u);
  EXPECT_EQ(list_tree(t / "out"), (std::vector<std::string>{"meta.json", "train_000.h5", "val_000.h5"}));
  auto meta = nlohmann::json::parse(read_file(t / "out/meta.json"));
  EXPECT_EQ(meta["train"]["docs"], want_train.size());
  EXPECT_EQ(meta["vocab_size"], 512);
  ShardReader r((t / "out/train_000.h5").string());
  EXPECT_EQ(r.vocab_size(), 512u);
  EXPECT_EQ(r.attr_string("tokenizer"), shared_tokenizer());
  EXPECT_EQ(uint64_t(*r.attr_int("tokenizer_fingerprint")), tok.fingerprint());
  EXPECT_EQ(r.attr_string("split"), "train");
  EXPECT_EQ(r.attr_int("eos_id"), 2);
  // A different seed moves documents between the splits.
  auto o = base_options(t.path(), "out2");
  o.seed = 43;
  prepare_text(o);
  EXPECT_NE(read_docs((t / "out2").string(), "val"), want_val);
}

TEST(Prepare, OutputDoesNotDependOnThreadsOrBatchSize) {
  TempDir t;
  make_corpus(t.path());
  auto a = base_options(t.path(), "a");
  a.threads = 1;
  a.chunk_bytes = 300;  // documents span several chunks
  a.shard_tokens = 1024;
  a.batch_bytes = size_t(1) << 20;
  auto b = a;
  b.out = (t / "b").string();
  b.threads = 4;
  b.batch_bytes = 500;  // many small batches
  prepare_text(a);
  prepare_text(b);
  auto files = list_tree(t / "a");
  EXPECT_GT(files.size(), 4u) << "expected several shards";
  EXPECT_EQ(files, list_tree(t / "b"));
  for (const auto& f : files) EXPECT_EQ(read_file(t / "a" / f), read_file(t / "b" / f)) << f;
}

TEST(Prepare, ShardsRotateAtDocumentEndsAndKeepEveryDocumentWhole) {
  TempDir t;
  auto docs = make_corpus(t.path());
  auto o = base_options(t.path(), "out");
  o.val_fraction = 0;
  o.shard_tokens = 1024;
  o.add_bos = true;
  auto st = prepare_text(o);
  auto shards = TokenDataset::shard_paths((t / "out").string(), "train");
  ASSERT_GT(shards.size(), 2u);
  EXPECT_EQ(st.train.shards.size(), shards.size());
  for (size_t i = 0; i + 1 < shards.size(); ++i) EXPECT_GE(ShardReader(shards[i]).num_tokens(), 1024u) << shards[i];
  Tokenizer tok = Tokenizer::load(shared_tokenizer());
  auto got = read_docs((t / "out").string(), "train");
  ASSERT_EQ(got.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    std::vector<int32_t> want = {tok.bos_id()};
    tok.encode_append(docs[i], want);
    want.push_back(tok.eos_id());
    EXPECT_EQ(got[i], want) << "document " << i;
  }
  EXPECT_FALSE(fs::exists(t / "out/val_000.h5"));  // no empty val shard
}

TEST(Prepare, LongDocumentsStayOneDocument) {
  TempDir t;
  std::string big;
  for (int i = 0; i < 20; ++i) big += testing::make_text(uint64_t(i), 20);
  write_file(t / "big.txt", big);
  PrepareOptions o;
  o.tokenizer = shared_tokenizer();
  o.inputs = {(t / "big.txt").string()};
  o.out = (t / "out").string();
  o.val_fraction = 0;
  o.chunk_bytes = 1000;
  o.progress = false;
  auto st = prepare_text(o);
  EXPECT_EQ(st.train.docs, 1u);
  auto docs = read_docs(o.out, "train");
  ASSERT_EQ(docs.size(), 1u);
  Tokenizer tok = Tokenizer::load(shared_tokenizer());
  EXPECT_EQ(docs[0].back(), tok.eos_id());
  EXPECT_EQ(std::count(docs[0].begin(), docs[0].end(), tok.eos_id()), 1);
  docs[0].pop_back();
  // Chunks are tokenized apart, so tokens may differ from whole-text encoding at chunk
  // seams, but the text is preserved exactly.
  std::string trimmed = big;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) trimmed.pop_back();
  // Each chunk's encoding starts with a dummy-prefix space, so compare words.
  auto words = [](const std::string& s) {
    std::vector<std::string> w;
    std::string cur;
    for (char c : s) {
      if (c == ' ' || c == '\n') {
        if (!cur.empty()) w.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) w.push_back(cur);
    return w;
  };
  EXPECT_EQ(words(tok.decode(docs[0])), words(trimmed));
}

TEST(Prepare, BadInputFailsCleanlyAndLeavesNothing) {
  TempDir t;
  make_corpus(t.path());
  auto o = base_options(t.path(), "out");
  // Invalid UTF-8 in the middle of the corpus: named with line and offset.
  write_file(t / "corpus/b/c/doc04.txt", "fine\nalso fine\nbad \xC3\x28 byte\n");
  expect_user_error([&] { prepare_text(o); }, {"doc04.txt", "invalid UTF-8", "line 3", "byte offset 19"});
  EXPECT_FALSE(fs::exists(t / "out"));
  for (const auto& e : fs::directory_iterator(t.path()))
    EXPECT_EQ(e.path().filename().string().find("out"), std::string::npos) << "left behind: " << e.path();
  write_file(t / "corpus/b/c/doc04.txt", "fixed\n");

  write_file(t / "extra.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\",}\n");
  expect_user_error([&] { prepare_text(o); }, {"extra.jsonl:2", "invalid JSON"});
  EXPECT_FALSE(fs::exists(t / "out"));
  write_file(t / "extra.jsonl", "{\"text\": \"a\"}\n");

  auto missing = o;
  missing.inputs.push_back((t / "nope.txt").string());
  expect_user_error([&] { prepare_text(missing); }, {"nope.txt", "no such file"});
  auto badtok = o;
  badtok.tokenizer = (t / "none.model").string();
  expect_user_error([&] { prepare_text(badtok); }, {"none.model", "not found"});
  auto badfrac = o;
  badfrac.val_fraction = 1.0;
  expect_user_error([&] { prepare_text(badfrac); }, {"--val-fraction"});
  EXPECT_FALSE(fs::exists(t / "out"));

  // An existing output is kept unless forced; forcing replaces it whole.
  prepare_text(o);
  write_file(t / "out/stale.txt", "x");
  expect_user_error([&] { prepare_text(o); }, {"out", "already exists", "--force"});
  EXPECT_TRUE(fs::exists(t / "out/stale.txt"));
  o.force = true;
  prepare_text(o);
  EXPECT_FALSE(fs::exists(t / "out/stale.txt"));
  EXPECT_TRUE(fs::exists(t / "out/train_000.h5"));
  // Empty inputs.
  fs::create_directories(t / "blank");
  write_file(t / "blank/x.txt", "  \n\n");
  auto blank = o;
  blank.inputs = {(t / "blank").string()};
  blank.out = (t / "out3").string();
  expect_user_error([&] { prepare_text(blank); }, {"no text"});
  EXPECT_FALSE(fs::exists(t / "out3"));
}

}  // namespace
}  // namespace hymba::data
