// HDF5 shard writing and reading, the multi-shard dataset, and bad-file errors.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <numeric>

#include "data/dataset.h"
#include "data/random.h"
#include "data/shard_reader.h"
#include "data/shard_writer.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;

using testing::expect_user_error;
using testing::TempDir;

struct Written {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  std::vector<uint64_t> offsets{0};
};

// Writes `docs` random documents (lengths 1..max_len) with ids in [0, vocab).
Written write_shard(const std::string& path, uint64_t vocab, bool with_mask, int docs, uint64_t seed,
                    int max_len = 300, ShardInfo info = {}) {
  Written w;
  ShardWriter sw(path, vocab, with_mask);
  SplitMix rng(seed);
  for (int d = 0; d < docs; ++d) {
    int n = 1 + int(rng.below(uint64_t(max_len)));
    std::vector<int32_t> t(static_cast<size_t>(n));
    std::vector<uint8_t> m;
    for (auto& x : t) x = int32_t(rng.below(vocab));
    if (with_mask)
      for (int i = 0; i < n; ++i) m.push_back(uint8_t(rng.below(2)));
    // Append in two pieces to exercise documents built from several appends.
    size_t half = size_t(n) / 2;
    sw.append(std::span(t).first(half), with_mask ? std::span<const uint8_t>(m).first(half) : std::span<const uint8_t>());
    sw.append(std::span(t).subspan(half), with_mask ? std::span<const uint8_t>(m).subspan(half) : std::span<const uint8_t>());
    sw.end_document();
    w.tokens.insert(w.tokens.end(), t.begin(), t.end());
    w.mask.insert(w.mask.end(), m.begin(), m.end());
    w.offsets.push_back(w.tokens.size());
  }
  sw.end_document();  // no empty document is recorded
  info.split = "train";
  sw.close(info);
  return w;
}

std::string dataset_type(const std::string& path, const char* name) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  hid_t t = H5Dget_type(d);
  std::string out = (H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "i") + std::to_string(8 * H5Tget_size(t));
  H5Tclose(t);
  H5Dclose(d);
  H5Fclose(f);
  return out;
}

TEST(Shards, RoundTripUint16WithMaskAndAttributes) {
  TempDir t;
  const std::string p = (t / "s.h5").string();
  ShardInfo info;
  info.kind = "chat";
  info.tokenizer = "/some/tok.model";
  info.tokenizer_name = "tok.model";
  info.tokenizer_fingerprint = 0xDEADBEEFCAFEull;
  info.eos_id = 2;
  info.source = "a.txt\nb.txt";
  info.settings = "{\"x\":1}";
  Written w = write_shard(p, 4096, true, 37, 1, 300, info);
  EXPECT_EQ(dataset_type(p, "tokens"), "u16");
  EXPECT_EQ(dataset_type(p, "doc_offsets"), "u64");
  EXPECT_EQ(dataset_type(p, "loss_mask"), "u8");

  ShardReader r(p);
  EXPECT_EQ(r.num_tokens(), w.tokens.size());
  EXPECT_EQ(r.num_docs(), 37u);
  EXPECT_EQ(r.vocab_size(), 4096u);
  EXPECT_TRUE(r.has_mask());
  EXPECT_EQ(r.token_bytes(), 2);
  EXPECT_EQ(r.kind(), "chat");
  EXPECT_EQ(r.attr_string("tokenizer"), "/some/tok.model");
  EXPECT_EQ(r.attr_string("source"), "a.txt\nb.txt");
  EXPECT_EQ(r.attr_string("split"), "train");
  EXPECT_EQ(r.attr_int("eos_id"), 2);
  EXPECT_EQ(uint64_t(*r.attr_int("tokenizer_fingerprint")), 0xDEADBEEFCAFEull);
  EXPECT_EQ(r.attr_int("num_docs"), 37);
  EXPECT_FALSE(r.attr_string("no_such_attr").has_value());

  std::vector<int32_t> all(w.tokens.size());
  r.read_tokens(0, all.size(), all.data());
  EXPECT_EQ(all, w.tokens);
  std::vector<uint8_t> mask(w.mask.size());
  r.read_mask(0, mask.size(), mask.data());
  EXPECT_EQ(mask, w.mask);
  EXPECT_EQ(r.read_doc_offsets(0, 38), w.offsets);
  // A hyperslab in the middle.
  std::vector<int32_t> part(100);
  r.read_tokens(1234, 100, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), w.tokens.begin() + 1234));
  EXPECT_EQ(r.read_doc_offsets(10, 3), std::vector<uint64_t>(w.offsets.begin() + 10, w.offsets.begin() + 13));
}

TEST(Shards, LargeVocabularyUsesUint32) {
  TempDir t;
  const std::string p = (t / "big.h5").string();
  Written w = write_shard(p, 100000, false, 20, 2);
  EXPECT_EQ(dataset_type(p, "tokens"), "u32");
  ShardReader r(p);
  EXPECT_EQ(r.token_bytes(), 4);
  EXPECT_FALSE(r.has_mask());
  std::vector<int32_t> all(r.num_tokens());
  r.read_tokens(0, all.size(), all.data());
  EXPECT_EQ(all, w.tokens);
  EXPECT_GT(*std::max_element(all.begin(), all.end()), 65535);  // ids that need 32 bits survived
  // The uint16 boundary: 65536 ids still fit.
  write_shard((t / "edge.h5").string(), 65536, false, 2, 3);
  EXPECT_EQ(dataset_type((t / "edge.h5").string(), "tokens"), "u16");
}

TEST(Shards, ByteIdenticalForIdenticalInput) {
  TempDir t;
  write_shard((t / "a.h5").string(), 1000, true, 50, 9);
  write_shard((t / "b.h5").string(), 1000, true, 50, 9);
  EXPECT_EQ(testing::read_file(t / "a.h5"), testing::read_file(t / "b.h5"));
}

TEST(Shards, UnclosedWriterLeavesNoFile) {
  TempDir t;
  {
    ShardWriter w((t / "x.h5").string(), 100, false);
    std::vector<int32_t> v = {1, 2, 3};
    w.append(v);
    EXPECT_TRUE(fs::exists(t / "x.h5"));
  }
  EXPECT_FALSE(fs::exists(t / "x.h5"));
}

// Writes an HDF5 file by hand, to make broken shards.
void write_raw(const std::string& path, bool tokens, bool offsets, int64_t vocab, std::vector<uint64_t> off = {0, 3},
               bool with_vocab = true) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  auto put = [&](const char* name, hid_t type, const void* data, hsize_t n) {
    hid_t s = H5Screate_simple(1, &n, nullptr);
    hid_t d = H5Dcreate2(f, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(s);
  };
  uint16_t toks[3] = {1, 2, 3};
  if (tokens) put("tokens", H5T_NATIVE_UINT16, toks, 3);
  if (offsets) put("doc_offsets", H5T_NATIVE_UINT64, off.data(), off.size());
  if (with_vocab) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "vocab_size", H5T_NATIVE_INT64, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &vocab);
    H5Aclose(a);
    H5Sclose(s);
  }
  H5Fclose(f);
}

TEST(Shards, BadFilesAreUserErrors) {
  TempDir t;
  expect_user_error([&] { ShardReader r((t / "none.h5").string()); }, {"none.h5", "no such file"});
  testing::write_file(t / "text.h5", "not hdf5 at all");
  expect_user_error([&] { ShardReader r((t / "text.h5").string()); }, {"text.h5", "not an HDF5 file"});
  write_raw((t / "notok.h5").string(), false, true, 10);
  expect_user_error([&] { ShardReader r((t / "notok.h5").string()); }, {"notok.h5", "missing dataset 'tokens'"});
  write_raw((t / "nooff.h5").string(), true, false, 10);
  expect_user_error([&] { ShardReader r((t / "nooff.h5").string()); }, {"nooff.h5", "missing dataset 'doc_offsets'"});
  write_raw((t / "badoff.h5").string(), true, true, 10, {0, 2});
  expect_user_error([&] { ShardReader r((t / "badoff.h5").string()); }, {"badoff.h5", "doc_offsets", "truncated"});
  write_raw((t / "novocab.h5").string(), true, true, 10, {0, 3}, false);
  expect_user_error([&] { ShardReader r((t / "novocab.h5").string()); }, {"novocab.h5", "vocab_size"});
  write_raw((t / "ok.h5").string(), true, true, 10);
  ShardReader ok((t / "ok.h5").string());  // the hand-made minimal file is valid
  EXPECT_EQ(ok.num_tokens(), 3u);
  // Token ids beyond vocab_size are caught when read through a dataset.
  write_raw((t / "range.h5").string(), true, true, 3);
  auto ds = TokenDataset::open((t / "range.h5").string(), "train");
  std::vector<int32_t> buf(3);
  expect_user_error([&] { ds->read(0, 3, buf.data()); }, {"range.h5", "id 3", "outside the vocabulary"});
}

TEST(Dataset, ConcatenatesShardsInNumericOrderAndReadsAcrossBoundaries) {
  TempDir t;
  std::vector<int32_t> all;
  std::vector<uint8_t> all_mask;
  // Unpadded names: numeric order (0, 2, 10) differs from name order (0, 10, 2).
  for (int i : {0, 2, 10}) {
    std::string name = "train_" + std::to_string(i) + ".h5";
    Written w = write_shard((t / name).string(), 500, true, 5 + i, uint64_t(i));
    all.insert(all.end(), w.tokens.begin(), w.tokens.end());
    all_mask.insert(all_mask.end(), w.mask.begin(), w.mask.end());
  }
  write_shard((t / "val_000.h5").string(), 500, true, 3, 77);
  DatasetOptions o;
  o.block_tokens = 97;  // small blocks: reads cross block and shard boundaries
  o.cache_blocks = 3;
  auto ds = TokenDataset::open(t.path().string(), "train", o);
  EXPECT_EQ(ds->num_shards(), 3u);
  EXPECT_EQ(ds->num_tokens(), all.size());
  EXPECT_TRUE(ds->has_mask());
  SplitMix rng(5);
  for (int k = 0; k < 200; ++k) {
    uint64_t start = rng.below(all.size()), n = 1 + rng.below(std::min<uint64_t>(600, all.size() - start));
    std::vector<int32_t> got(n);
    std::vector<uint8_t> m(n);
    ds->read(start, n, got.data(), m.data());
    ASSERT_TRUE(std::equal(got.begin(), got.end(), all.begin() + int64_t(start))) << start << " " << n;
    ASSERT_TRUE(std::equal(m.begin(), m.end(), all_mask.begin() + int64_t(start)));
  }
  // The cache bounds memory: 3 blocks, so random reads miss often but sequential re-reads hit.
  uint64_t before = ds->cache_misses();
  std::vector<int32_t> one(10);
  ds->read(0, 10, one.data());
  ds->read(0, 10, one.data());
  EXPECT_LE(ds->cache_misses() - before, 1u);
}

TEST(Dataset, ErrorsNameTheProblem) {
  TempDir t;
  write_shard((t / "train_000.h5").string(), 500, false, 3, 1);
  expect_user_error([&] { TokenDataset::open(t.path().string(), "val"); }, {"no val_*.h5 shards"});
  expect_user_error([&] { TokenDataset::open((t / "nothing").string(), "train"); }, {"nothing", "no such file"});
  DatasetOptions o;
  o.expected_vocab = 32000;
  expect_user_error([&] { TokenDataset::open(t.path().string(), "train", o); },
                    {"train_000.h5", "vocab_size attribute is 500", "tokenizer has 32000"});
  write_shard((t / "train_001.h5").string(), 600, false, 3, 2);
  expect_user_error([&] { TokenDataset::open(t.path().string(), "train"); }, {"train_001.h5", "differs", "vocab_size 600"});
}

}  // namespace
}  // namespace hymba::data
