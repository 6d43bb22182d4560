// Fixtures shared by the training tests: one tiny hybrid model, a per-test temp dir and a
// learnable token stream.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/shard_writer.h"

namespace hymba::train::testing {

// A 2-layer hybrid model small enough for a training step in milliseconds. Indented by two
// spaces so it can follow "model:" inside a recipe; as a document of its own it parses the same.
inline constexpr const char* kTinyModelYaml = R"(
  vocab_size: 64
  hidden_size: 16
  num_layers: 2
  block: hybrid
  num_heads: 2
  num_kv_heads: 1
  head_dim: 8
  v_head_dim: 16
  ssm: {d_state: 4, d_conv: 4, expand: 2, dt_rank: 2}
  mlp: {intermediate_size: 32}
  num_meta_tokens: 2
  sliding_window: 4
  full_attention_layers: [0]
)";

// A fresh directory named after the running test, removed on destruction.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// A learnable stream in dir/<split>_000.h5: `docs` documents that walk the permutation
// t -> (5 t + 3) mod 63 + 1 from a start drawn from `seed`, each ended by EOS 0. A bigram model
// predicts it perfectly, so the loss of anything that learns falls from ln 64 ~ 4.16 towards 0.
inline void write_split(const std::filesystem::path& dir, const std::string& split, int docs, uint64_t seed) {
  data::ShardWriter w((dir / (split + "_000.h5")).string(), 64, false);
  uint64_t s = seed;
  for (int d = 0; d < docs; ++d) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    int32_t t = int32_t((s >> 33) % 63) + 1;
    std::vector<int32_t> doc;
    for (int i = 0; i < 40; ++i) {
      doc.push_back(t);
      t = (5 * t + 3) % 63 + 1;
    }
    doc.push_back(0);
    w.add_document(doc);
  }
  data::ShardInfo info;
  info.split = split;
  w.close(info);
}

}  // namespace hymba::train::testing
