#include "tests/data/data_test_util.h"

#include <stdlib.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/random.h"
#include "data/tokenizer.h"

namespace hymba::data::testing {

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "hymba_data_test_XXXXXX").string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_file(const fs::path& p, const std::string& content) {
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << content;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string make_text(uint64_t seed, int sentences) {
  static const std::vector<std::string> lexicon = [] {
    const char* syl[] = {"ka", "lo", "mi", "ne", "ru", "ta", "shi", "ven", "dor", "el",
                         "an", "is", "ot", "ur", "bel", "gra", "tho", "qui", "zen", "pa"};
    std::vector<std::string> words;
    SplitMix rng(12345);
    while (words.size() < 300) {
      int n = 1 + int(rng.below(3));
      std::string w;
      for (int i = 0; i < n; ++i) w += syl[rng.below(20)];
      words.push_back(w);
    }
    return words;
  }();
  SplitMix rng(mix64(seed) ^ 0xABCDEFull);
  std::string out;
  for (int s = 0; s < sentences; ++s) {
    int n = 4 + int(rng.below(10));
    for (int i = 0; i < n; ++i) {
      // Zipf-like: small indices much more likely.
      double u = rng.uniform();
      size_t idx = size_t(double(lexicon.size()) * u * u * u);
      std::string w = lexicon[idx];
      if (i == 0) w[0] = char(w[0] - 'a' + 'A');
      out += w;
      if (i + 1 < n) out += rng.below(12) == 0 ? ", " : " ";
    }
    out += rng.below(6) == 0 ? "?" : ".";
    out += rng.below(5) == 0 ? "\n" : " ";
  }
  out += "\n";
  return out;
}

const std::string& shared_tokenizer() {
  static TempDir dir;
  static const std::string path = [] {
    std::string corpus;
    for (int d = 0; d < 40; ++d) corpus += make_text(uint64_t(d), 60) + "\n";
    write_file(dir / "corpus.txt", corpus);
    TokenizerTrainOptions o;
    o.inputs = {(dir / "corpus.txt").string()};
    o.vocab_size = 512;
    o.out_prefix = (dir / "tok").string();
    train_tokenizer(o);
    return (dir / "tok.model").string();
  }();
  return path;
}

void expect_user_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const hymba::UserError& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected hymba::UserError, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected hymba::UserError, nothing was thrown";
}

std::vector<std::string> list_tree(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hymba::data::testing
