#include "data/dataset.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>

#include "core/error.h"

namespace fs = std::filesystem;

namespace hymba::data {

std::vector<std::string> TokenDataset::shard_paths(const std::string& dir, const std::string& split) {
  std::vector<std::pair<uint64_t, std::string>> found;
  std::error_code ec;
  const std::regex pattern(split + "_([0-9]+)\\.h5");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (std::regex_match(name, m, pattern)) found.emplace_back(std::stoull(m[1].str()), e.path().string());
  }
  if (ec) HYMBA_USER_ERROR(dir, ": cannot list directory (", ec.message(), ")");
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::shared_ptr<TokenDataset> TokenDataset::open(const std::string& path, const std::string& split,
                                                 const DatasetOptions& opts) {
  auto ds = std::shared_ptr<TokenDataset>(new TokenDataset());
  ds->opts_ = opts;
  HYMBA_CHECK(opts.block_tokens > 0 && opts.cache_blocks > 0, "empty cache configuration");
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    files = shard_paths(path, split);
    if (files.empty()) HYMBA_USER_ERROR(path, ": no ", split, "_*.h5 shards (is this a directory made by hymba prepare?)");
    ds->where_ = path + " (" + split + ")";
  } else if (fs::exists(path, ec)) {
    files = {path};
    ds->where_ = path;
  } else {
    HYMBA_USER_ERROR(path, ": no such file or directory");
  }
  for (const auto& f : files) {
    auto r = std::make_unique<ShardReader>(f);
    if (opts.expected_vocab && r->vocab_size() != *opts.expected_vocab)
      HYMBA_USER_ERROR(f, ": vocab_size attribute is ", r->vocab_size(), " but the tokenizer has ",
                       *opts.expected_vocab, " tokens (prepared with a different tokenizer?)");
    if (ds->shards_.empty()) {
      ds->vocab_ = r->vocab_size();
      ds->sample_len_ = r->sample_len();
      ds->has_mask_ = r->has_mask();
      ds->kind_ = r->kind();
    } else {
      const ShardReader& a = *ds->shards_.front();
      if (r->vocab_size() != a.vocab_size() || r->sample_len() != a.sample_len() || r->has_mask() != a.has_mask())
        HYMBA_USER_ERROR(f, ": differs from ", a.path(), " (vocab_size ", r->vocab_size(), " vs ", a.vocab_size(),
                         ", sample_len ", r->sample_len(), " vs ", a.sample_len(), ", loss_mask ",
                         r->has_mask() ? "present" : "absent", " vs ", a.has_mask() ? "present" : "absent", ")");
    }
    ds->starts_.push_back(ds->total_);
    ds->total_ += r->num_tokens();
    ds->docs_ += r->num_docs();
    ds->shards_.push_back(std::move(r));
  }
  ds->starts_.push_back(ds->total_);
  return ds;
}

const TokenDataset::Block& TokenDataset::block(size_t shard, uint64_t index) {
  const uint64_t key = (uint64_t(shard) << 40) | index;
  if (auto it = cache_.find(key); it != cache_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second;
  }
  ++misses_;
  if (cache_.size() >= opts_.cache_blocks) {
    cache_.erase(lru_.back());
    lru_.pop_back();
  }
  const ShardReader& r = *shards_[shard];
  const uint64_t start = index * opts_.block_tokens;
  const uint64_t count = std::min(opts_.block_tokens, r.num_tokens() - start);
  Block b;
  b.tokens.resize(count);
  r.read_tokens(start, count, b.tokens.data());
  for (uint64_t i = 0; i < count; ++i)
    if (b.tokens[i] < 0 || uint64_t(b.tokens[i]) >= vocab_)
      HYMBA_USER_ERROR(r.path(), ": token ", start + i, " has id ", b.tokens[i], ", outside the vocabulary of ",
                       vocab_, " (corrupt file?)");
  if (has_mask_) {
    b.mask.resize(count);
    r.read_mask(start, count, b.mask.data());
  }
  lru_.push_front(key);
  b.lru = lru_.begin();
  return cache_.emplace(key, std::move(b)).first->second;
}

void TokenDataset::read(uint64_t start, uint64_t count, int32_t* tokens, uint8_t* mask) {
  HYMBA_CHECK(start + count <= total_ && start + count >= start, "read of [", start, ", ", start + count,
              ") outside the dataset of ", total_, " tokens");
  uint64_t pos = start, done = 0;
  while (done < count) {
    // The shard holding `pos`: the last shard whose start is <= pos and which is not empty.
    size_t s = size_t(std::upper_bound(starts_.begin(), starts_.end() - 1, pos) - starts_.begin()) - 1;
    while (starts_[s + 1] <= pos) ++s;
    const uint64_t local = pos - starts_[s];
    const uint64_t bi = local / opts_.block_tokens, off = local % opts_.block_tokens;
    const Block& b = block(s, bi);
    const uint64_t n = std::min<uint64_t>(count - done, b.tokens.size() - off);
    std::memcpy(tokens + done, b.tokens.data() + off, n * sizeof(int32_t));
    if (mask) {
      if (has_mask_) std::memcpy(mask + done, b.mask.data() + off, n);
      else std::memset(mask + done, 1, n);
    }
    done += n;
    pos += n;
  }
}

}  // namespace hymba::data
