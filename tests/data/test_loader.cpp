// The training and validation loaders: windows, masks, sharding by rank, resume, val walk.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/split_writer.h"
#include "tests/data/data_test_util.h"

namespace hymba::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::TempDir;

// A dataset whose token at stream position i is i (so a window shows where it came from),
// split over shards of uneven size; mask (when on) is 0 where i % 3 == 0.
std::shared_ptr<TokenDataset> positional(const TempDir& t, uint64_t n, bool mask, const std::string& sub = "d",
                                         int64_t sample_len = 0) {
  fs::create_directories(t / sub);
  ShardInfo info;
  info.sample_len = sample_len;
  SplitWriter w(t / sub, "train", 65536, mask, 1500, info);
  for (uint64_t i = 0; i < n;) {
    uint64_t len = sample_len > 0 ? uint64_t(sample_len) : std::min<uint64_t>(n - i, 1 + (i * 7919) % 97);
    std::vector<int32_t> tok;
    std::vector<uint8_t> m;
    for (uint64_t k = 0; k < len; ++k, ++i) {
      tok.push_back(int32_t(i));
      m.push_back(i % 3 != 0);
    }
    w.append(tok, mask ? std::span<const uint8_t>(m) : std::span<const uint8_t>());
    w.end_document();
  }
  w.close();
  DatasetOptions o;
  o.block_tokens = 256;
  o.cache_blocks = 4;
  return TokenDataset::open((t / sub).string(), "train", o);
}

LoaderConfig cfg(LoaderMode mode, int64_t T, int64_t B, int rank = 0, int world = 1, uint64_t seed = 7) {
  LoaderConfig c;
  c.mode = mode;
  c.seq_len = T;
  c.global_batch = B;
  c.rank = rank;
  c.world = world;
  c.seed = seed;
  return c;
}

TEST(Loader, PackedWindowsAreConsecutiveAndWrapAtTheEpoch) {
  TempDir t;
  const uint64_t N = 1000;
  auto ds = positional(t, N, false);
  EXPECT_GT(ds->num_shards(), 0u);
  const int64_t T = 16, B = 4;
  DataLoader l(ds, cfg(LoaderMode::Packed, T, B));
  const uint64_t per_epoch = (N - 1) / T;
  EXPECT_EQ(l.samples_per_epoch(), per_epoch);
  for (uint64_t b = 0; b < 40; ++b) {
    Batch batch = l.next();
    ASSERT_EQ(batch.inputs.size(), size_t(B * T));
    for (int64_t r = 0; r < B; ++r) {
      uint64_t g = b * B + uint64_t(r), start = (g % per_epoch) * T;
      for (int64_t k = 0; k < T; ++k) {
        ASSERT_EQ(batch.inputs[r * T + k], int32_t(start + k)) << "batch " << b << " row " << r;
        ASSERT_EQ(batch.targets[r * T + k], int32_t(start + k + 1));
      }
    }
    EXPECT_EQ(batch.epoch, (b * B) / per_epoch);
  }
}

TEST(Loader, RandomWindowsAreContiguousInRangeAndSeeded) {
  TempDir t;
  const uint64_t N = 4000;
  auto ds = positional(t, N, false);
  const int64_t T = 32, B = 8;
  DataLoader l(ds, cfg(LoaderMode::Random, T, B, 0, 1, 1));
  uint64_t lo = N, hi = 0;
  std::set<int32_t> starts;
  for (int b = 0; b < 50; ++b) {
    Batch batch = l.next();
    for (int64_t r = 0; r < B; ++r) {
      int32_t s = batch.inputs[r * T];
      ASSERT_LE(uint64_t(s) + T, N - 1);
      for (int64_t k = 0; k < T; ++k) {
        ASSERT_EQ(batch.inputs[r * T + k], s + k);
        ASSERT_EQ(batch.targets[r * T + k], s + k + 1);
      }
      lo = std::min<uint64_t>(lo, uint64_t(s));
      hi = std::max<uint64_t>(hi, uint64_t(s));
      starts.insert(s);
    }
  }
  EXPECT_LT(lo, N / 10);  // 400 uniform draws cover the whole range
  EXPECT_GT(hi, N - N / 10 - T);
  EXPECT_GT(starts.size(), 350u);  // almost no repeats among 400 draws from ~4000
  DataLoader other(ds, cfg(LoaderMode::Random, T, B, 0, 1, 2));
  DataLoader same(ds, cfg(LoaderMode::Random, T, B, 0, 1, 1));
  DataLoader first(ds, cfg(LoaderMode::Random, T, B, 0, 1, 1));
  Batch a = first.next();
  EXPECT_EQ(same.next().inputs, a.inputs);
  EXPECT_NE(other.next().inputs, a.inputs);
}

TEST(Loader, MaskedTargetsAreIgnored) {
  TempDir t;
  auto ds = positional(t, 3000, true);
  for (LoaderMode mode : {LoaderMode::Packed, LoaderMode::Random}) {
    DataLoader l(ds, cfg(mode, 10, 4));
    for (int b = 0; b < 10; ++b) {
      Batch batch = l.next();
      for (size_t i = 0; i < batch.targets.size(); ++i) {
        int32_t next_pos = batch.inputs[i] + 1;  // the target token's stream position
        if (next_pos % 3 == 0) ASSERT_EQ(batch.targets[i], kIgnoreIndex);
        else ASSERT_EQ(batch.targets[i], next_pos);
      }
    }
  }
}

// Rows of global batch b as seen by concatenating the ranks' local batches.
std::vector<std::vector<int32_t>> global_batches(const std::shared_ptr<TokenDataset>& ds, LoaderMode mode, int world,
                                                 int n, bool targets = false) {
  std::vector<DataLoader> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(ds, cfg(mode, 12, 8, r, world));
  std::vector<std::vector<int32_t>> out;
  for (int b = 0; b < n; ++b) {
    std::vector<int32_t> all;
    for (auto& l : ranks) {
      Batch x = l.next();
      EXPECT_EQ(x.batch, 8 / world);
      auto& v = targets ? x.targets : x.inputs;
      all.insert(all.end(), v.begin(), v.end());
    }
    out.push_back(all);
  }
  return out;
}

TEST(Loader, GlobalBatchesAreTheSameForAnyWorldSize) {
  TempDir t;
  auto ds = positional(t, 2000, true);
  for (LoaderMode mode : {LoaderMode::Packed, LoaderMode::Random}) {
    auto w1 = global_batches(ds, mode, 1, 30);  // packed: 30 * 8 samples > one epoch of 166
    EXPECT_EQ(w1, global_batches(ds, mode, 2, 30)) << to_string(mode);
    EXPECT_EQ(w1, global_batches(ds, mode, 4, 30)) << to_string(mode);
    EXPECT_EQ(global_batches(ds, mode, 1, 30, true), global_batches(ds, mode, 4, 30, true)) << to_string(mode);
    // And the ranks do not all see the same rows.
    DataLoader r0(ds, cfg(mode, 12, 8, 0, 2)), r1(ds, cfg(mode, 12, 8, 1, 2));
    EXPECT_NE(r0.next().inputs, r1.next().inputs);
  }
  expect_user_error([&] { DataLoader bad(ds, cfg(LoaderMode::Packed, 12, 6, 0, 4)); }, {"not divisible"});
}

TEST(Loader, ResumeFromJsonGivesExactlyTheFollowingBatches) {
  TempDir t;
  auto ds = positional(t, 2500, true);
  for (LoaderMode mode : {LoaderMode::Packed, LoaderMode::Random}) {
    DataLoader a(ds, cfg(mode, 12, 8));
    for (int i = 0; i < 37; ++i) a.next();  // past the first epoch in packed mode
    std::string saved = nlohmann::json(a.state()).dump();
    LoaderState s = nlohmann::json::parse(saved).get<LoaderState>();
    EXPECT_EQ(s, a.state());
    EXPECT_EQ(s.rng_counter, 37u * 8);
    EXPECT_EQ(s.epoch * a.samples_per_epoch() + s.position, s.rng_counter);
    DataLoader b(ds, cfg(mode, 12, 8));
    b.set_state(s);
    // Resuming on two ranks gives the same rows, split.
    DataLoader c0(ds, cfg(mode, 12, 8, 0, 2)), c1(ds, cfg(mode, 12, 8, 1, 2));
    c0.set_state(s);
    c1.set_state(s);
    for (int i = 0; i < 10; ++i) {
      Batch x = a.next(), y = b.next();
      ASSERT_EQ(x.inputs, y.inputs) << to_string(mode) << " batch " << i;
      ASSERT_EQ(x.targets, y.targets);
      ASSERT_EQ(x.epoch, y.epoch);
      std::vector<int32_t> split = c0.next().inputs, second = c1.next().inputs;
      split.insert(split.end(), second.begin(), second.end());
      ASSERT_EQ(split, x.inputs);
    }
    // A fresh loader does not match (the check above is not vacuous).
    DataLoader fresh(ds, cfg(mode, 12, 8));
    EXPECT_NE(fresh.next().inputs, b.next().inputs);
  }
}

TEST(Loader, StateFromOtherDataOrSettingsIsRejected) {
  TempDir t;
  auto ds = positional(t, 2000, false);
  auto ds2 = positional(t, 2100, false, "other");
  DataLoader a(ds, cfg(LoaderMode::Packed, 12, 8));
  a.next();
  LoaderState s = a.state();
  DataLoader other_len(ds, cfg(LoaderMode::Packed, 16, 8));
  expect_user_error([&] { other_len.set_state(s); }, {"other data or settings", "seq_len 12"});
  DataLoader other_mode(ds, cfg(LoaderMode::Random, 12, 8));
  expect_user_error([&] { other_mode.set_state(s); }, {"mode packed"});
  DataLoader other_data(ds2, cfg(LoaderMode::Packed, 12, 8));
  expect_user_error([&] { other_data.set_state(s); }, {"2000 tokens"});
  s.position += 1;
  DataLoader same(ds, cfg(LoaderMode::Packed, 12, 8));
  expect_user_error([&] { same.set_state(s); }, {"inconsistent"});
  expect_user_error([&] { nlohmann::json::parse("{\"mode\": \"packed\"}").get<LoaderState>(); }, {"missing key 'seed'"});
}

TEST(Loader, ValWalkCoversEveryTokenOnceOnAnyWorldSize) {
  TempDir t;
  const uint64_t N = 1237;
  auto ds = positional(t, N, false);
  for (int world : {1, 2, 3}) {
    const int64_t T = 10, B = 6;
    std::vector<ValLoader> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(ds, T, B, r, world);
    EXPECT_EQ(ranks[0].num_samples(), (N - 1 + T - 1) / T);
    std::map<int32_t, int> seen;
    uint64_t batches = 0, valid = 0;
    Batch b;
    for (;;) {
      bool more = false;
      for (auto& l : ranks) {
        if (!l.next(b)) continue;
        more = true;
        valid += uint64_t(b.valid_rows);
        for (size_t i = 0; i < b.targets.size(); ++i)
          if (b.targets[i] != kIgnoreIndex) {
            ASSERT_EQ(b.targets[i], b.inputs[i] + 1);
            seen[b.targets[i]]++;
          }
      }
      if (!more) break;
      ++batches;
    }
    EXPECT_EQ(batches, ranks[0].num_batches());
    EXPECT_EQ(valid, ranks[0].num_samples());
    ASSERT_EQ(seen.size(), N - 1) << "world " << world;
    EXPECT_EQ(seen.begin()->first, 1);
    EXPECT_EQ(seen.rbegin()->first, int32_t(N - 1));
    for (auto& [tok, n] : seen) ASSERT_EQ(n, 1) << "token " << tok;
    // reset() walks again from the start.
    ranks[0].reset();
    ASSERT_TRUE(ranks[0].next(b));
    EXPECT_EQ(b.inputs[0], 0);
  }
}

TEST(Loader, FixedLengthSamplesAreNeverCut) {
  TempDir t;
  auto ds = positional(t, 9 * 50, true, "fixed", 9);
  EXPECT_EQ(ds->sample_len(), 9);
  expect_user_error([&] { DataLoader l(ds, cfg(LoaderMode::Packed, 16, 4)); }, {"fixed samples of 9", "seq_len must be 8"});
  expect_user_error([&] { ValLoader v(ds, 4, 4); }, {"seq_len must be 8"});
  DataLoader packed(ds, cfg(LoaderMode::Packed, 8, 4));
  EXPECT_EQ(packed.samples_per_epoch(), 50u);
  DataLoader rnd(ds, cfg(LoaderMode::Random, 8, 4));
  for (int b = 0; b < 30; ++b) {
    Batch p = packed.next(), r = rnd.next();
    for (int row = 0; row < 4; ++row) {
      EXPECT_EQ(p.inputs[size_t(row * 8)], int32_t(((b * 4 + row) % 50) * 9));
      EXPECT_EQ(r.inputs[size_t(row * 8)] % 9, 0) << "random sample not aligned";
    }
  }
  ValLoader v(ds, 8, 4);
  EXPECT_EQ(v.num_samples(), 50u);
}

TEST(Loader, TooSmallDataIsAUserError) {
  TempDir t;
  auto ds = positional(t, 20, false);
  expect_user_error([&] { DataLoader l(ds, cfg(LoaderMode::Random, 32, 2)); }, {"20 tokens", "seq_len + 1 = 33"});
  expect_user_error([&] { DataLoader l(ds, cfg(LoaderMode::Random, 0, 2)); }, {"seq_len must be positive"});
}

}  // namespace
}  // namespace hymba::data
