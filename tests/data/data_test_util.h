// Shared helpers for the data tests: temporary directories, a generated corpus, and one small
// tokenizer trained once per test process.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace hymba::data::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const std::string& content);
std::string read_file(const fs::path& p);

// Pseudo-English text (a fixed made-up lexicon, Zipf-like word frequencies) from a seed.
std::string make_text(uint64_t seed, int sentences);

// Path of a BPE tokenizer (vocab 512) trained once on a generated corpus.
const std::string& shared_tokenizer();

// Runs fn and expects a hymba::UserError whose message contains every one of `parts`.
void expect_user_error(const std::function<void()>& fn, const std::vector<std::string>& parts);

// All entries (recursive) under a directory, as relative paths.
std::vector<std::string> list_tree(const fs::path& dir);

}  // namespace hymba::data::testing
