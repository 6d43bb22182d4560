// MQAR: sample structure, gap distribution, files, and the accuracy function.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/mqar.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::TempDir;

MqarOptions small() {
  MqarOptions o;
  o.vocab = 8192;
  o.seq = 256;
  o.pairs = 16;
  o.seed = 3;
  return o;
}

// Checks every structural property of one sample; returns the query gaps.
std::vector<int64_t> check_sample(const MqarOptions& o, const MqarSample& s) {
  const int64_t L = o.seq + 1, N = o.pairs, half = o.vocab / 2;
  EXPECT_EQ(int64_t(s.tokens.size()), L);
  EXPECT_EQ(int64_t(s.mask.size()), L);
  std::map<int32_t, int32_t> kv;
  std::set<int32_t> values;
  for (int64_t i = 0; i < N; ++i) {
    int32_t k = s.tokens[size_t(2 * i)], v = s.tokens[size_t(2 * i + 1)];
    EXPECT_GE(k, 1);
    EXPECT_LT(k, half);
    EXPECT_GE(v, half);
    EXPECT_LT(v, o.vocab);
    EXPECT_TRUE(kv.emplace(k, v).second) << "duplicate key " << k;
    EXPECT_TRUE(values.insert(v).second) << "duplicate value " << v;
    EXPECT_EQ(s.mask[size_t(2 * i)], 0);
    EXPECT_EQ(s.mask[size_t(2 * i + 1)], 0);
  }
  std::map<int32_t, int> queried;
  std::vector<int64_t> gaps;
  for (int64_t p = 2 * N; p < L; ++p) {
    int32_t tok = s.tokens[size_t(p)];
    if (s.mask[size_t(p)]) {
      // An answer: the value of the key just before it.
      int32_t key = s.tokens[size_t(p - 1)];
      EXPECT_EQ((p - 2 * N) % 2, 1);
      EXPECT_TRUE(kv.count(key)) << "position " << p;
      EXPECT_EQ(tok, kv[key]);
      queried[key]++;
      gaps.push_back((p - 1 - 2 * N) / 2);
    } else if (tok != 0) {
      EXPECT_TRUE(kv.count(tok)) << "non-key, non-filler token " << tok << " at " << p;
      EXPECT_EQ(s.mask[size_t(p + 1)], 1) << "key at " << p << " not followed by its answer";
    }
  }
  EXPECT_EQ(queried.size(), size_t(N));
  for (auto& [k, n] : queried) EXPECT_EQ(n, 1) << "key " << k << " queried " << n << " times";
  return gaps;
}

TEST(Mqar, SamplesHaveTheZoologyStructure) {
  MqarOptions o = small();
  for (uint64_t i = 0; i < 50; ++i) check_sample(o, make_mqar_sample(o, 0, i));
  o.pairs = 64;  // the maximum for seq 256: queries fill every slot
  check_sample(o, make_mqar_sample(o, 1, 0));
}

TEST(Mqar, GapsFollowAPowerLaw) {
  MqarOptions o = small();
  std::vector<int> hist(size_t((o.seq + 1 - 2 * o.pairs) / 2), 0);
  for (uint64_t i = 0; i < 400; ++i)
    for (int64_t g : check_sample(o, make_mqar_sample(o, 0, i))) hist[size_t(g)]++;
  // With a = 0.01, p(g) ~ 1/(g+1): the first slots are far more common than the last.
  int head = hist[0] + hist[1] + hist[2] + hist[3];
  int tail = 0;
  for (size_t g = hist.size() - 4; g < hist.size(); ++g) tail += hist[g];
  EXPECT_GT(head, 8 * tail);
  EXPECT_GT(tail, 0);  // but long gaps occur
}

TEST(Mqar, DeterministicPerSeedSplitAndIndex) {
  MqarOptions o = small();
  EXPECT_EQ(make_mqar_sample(o, 0, 5).tokens, make_mqar_sample(o, 0, 5).tokens);
  EXPECT_NE(make_mqar_sample(o, 0, 5).tokens, make_mqar_sample(o, 0, 6).tokens);
  EXPECT_NE(make_mqar_sample(o, 0, 5).tokens, make_mqar_sample(o, 1, 5).tokens);
  MqarOptions o2 = o;
  o2.seed = 4;
  EXPECT_NE(make_mqar_sample(o, 0, 5).tokens, make_mqar_sample(o2, 0, 5).tokens);
}

TEST(Mqar, PrepareWritesLoadableFixedLengthShards) {
  TempDir t;
  MqarOptions o = small();
  o.count = 300;
  o.val_count = 40;
  o.out = (t / "mqar").string();
  auto st = prepare_mqar(o);
  EXPECT_EQ(st.train_samples, 300u);
  EXPECT_EQ(testing::list_tree(t / "mqar"), (std::vector<std::string>{"meta.json", "train_000.h5", "val_000.h5"}));
  auto train = TokenDataset::open(o.out, "train");
  EXPECT_EQ(train->sample_len(), 257);
  EXPECT_EQ(train->num_tokens(), 300u * 257);
  EXPECT_EQ(train->vocab_size(), 8192u);
  EXPECT_TRUE(train->has_mask());
  EXPECT_EQ(train->kind(), "mqar");
  std::vector<int32_t> tok(257);
  std::vector<uint8_t> mask(257);
  train->read(257 * 17, 257, tok.data(), mask.data());
  MqarSample want = make_mqar_sample(o, 0, 17);
  EXPECT_EQ(tok, want.tokens);
  EXPECT_EQ(mask, want.mask);
  // Through the loader: targets are exactly the 16 answers per row.
  DataLoader l(train, LoaderConfig{LoaderMode::Packed, 256, 8, 0, 1, 0});
  Batch b = l.next();
  for (int r = 0; r < 8; ++r) {
    int answers = 0;
    for (int k = 0; k < 256; ++k) answers += b.targets[size_t(r * 256 + k)] != kIgnoreIndex;
    EXPECT_EQ(answers, 16);
  }
  ValLoader v(TokenDataset::open(o.out, "val"), 256, 8);
  EXPECT_EQ(v.num_samples(), 40u);
  o.force = false;
  expect_user_error([&] { prepare_mqar(o); }, {"already exists"});
}

TEST(Mqar, BadOptionsAreUserErrors) {
  MqarOptions o = small();
  o.pairs = 65;
  expect_user_error([&] { check_mqar_options(o); }, {"--seq 256", "too short", "65 pairs"});
  o = small();
  o.vocab = 20;
  expect_user_error([&] { check_mqar_options(o); }, {"--vocab 20", "too small"});
  o = small();
  o.count = 0;
  expect_user_error([&] { check_mqar_options(o); }, {"--count"});
}

TEST(Mqar, AccuracyCountsOnlyAnswerPositions) {
  // Two rows of length 6; answers at (0,1), (0,4), (1,2).
  std::vector<int32_t> targets = {-100, 50, -100, -100, 60, -100,   //
                                  -100, -100, 70, -100, -100, -100};
  std::vector<int32_t> preds = {9, 50, 9, 9, 61, 9,  //
                                9, 9, 70, 9, 9, 9};
  MqarAccuracy a = mqar_accuracy(preds, targets, 6);
  EXPECT_EQ(a.correct, 2u);
  EXPECT_EQ(a.total, 3u);
  EXPECT_EQ(a.sequences, 2u);
  EXPECT_EQ(a.sequences_solved, 1u);
  EXPECT_DOUBLE_EQ(a.accuracy(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(a.sequence_accuracy(), 0.5);
  preds[4] = 60;
  EXPECT_EQ(mqar_accuracy(preds, targets, 6).sequences_solved, 2u);
  // A row without answers (val padding) is not a sequence.
  std::vector<int32_t> pad(6, -100), pp(6, 0);
  EXPECT_EQ(mqar_accuracy(pp, pad, 6).sequences, 0u);
  a += mqar_accuracy(preds, targets, 6);
  EXPECT_EQ(a.total, 6u);
  EXPECT_THROW(mqar_accuracy(preds, targets, 5), hymba::Error);
}

}  // namespace
}  // namespace hymba::data
