// Fixtures shared by the training tests: one tiny hybrid model and a per-test temp dir.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

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

}  // namespace hymba::train::testing
