#include "data/loader.h"

#include <algorithm>

#include "core/error.h"
#include "data/random.h"

namespace hymba::data {

LoaderMode parse_loader_mode(const std::string& s) {
  if (s == "random") return LoaderMode::Random;
  if (s == "packed") return LoaderMode::Packed;
  HYMBA_USER_ERROR("unknown loader mode '", s, "' (expected random or packed)");
}

const char* to_string(LoaderMode m) { return m == LoaderMode::Random ? "random" : "packed"; }

void to_json(nlohmann::json& j, const LoaderState& s) {
  j = nlohmann::json{{"mode", s.mode},         {"seed", s.seed},          {"seq_len", s.seq_len},
                     {"num_tokens", s.num_tokens}, {"epoch", s.epoch}, {"position", s.position},
                     {"rng_counter", s.rng_counter}};
}

void from_json(const nlohmann::json& j, LoaderState& s) {
  if (!j.is_object()) HYMBA_USER_ERROR("loader state: expected a JSON object, got ", j.type_name());
  auto get = [&](const char* key, auto& out) {
    auto it = j.find(key);
    if (it == j.end()) HYMBA_USER_ERROR("loader state: missing key '", key, "'");
    try {
      it->get_to(out);
    } catch (const nlohmann::json::exception&) {
      HYMBA_USER_ERROR("loader state: key '", key, "' has the wrong type (", it->type_name(), ")");
    }
  };
  get("mode", s.mode);
  get("seed", s.seed);
  get("seq_len", s.seq_len);
  get("num_tokens", s.num_tokens);
  get("epoch", s.epoch);
  get("position", s.position);
  get("rng_counter", s.rng_counter);
}

namespace {

void check_batch_config(int64_t seq_len, int64_t global_batch, int rank, int world) {
  if (seq_len <= 0) HYMBA_USER_ERROR("loader: seq_len must be positive, got ", seq_len);
  if (global_batch <= 0) HYMBA_USER_ERROR("loader: global batch must be positive, got ", global_batch);
  if (world <= 0 || rank < 0 || rank >= world) HYMBA_USER_ERROR("loader: rank ", rank, " outside world of ", world);
  if (global_batch % world != 0)
    HYMBA_USER_ERROR("loader: global batch ", global_batch, " is not divisible by the ", world, " ranks");
}

void check_fixed_len(const TokenDataset& d, int64_t seq_len) {
  if (d.sample_len() > 0 && seq_len + 1 != d.sample_len())
    HYMBA_USER_ERROR(d.description(), ": holds fixed samples of ", d.sample_len(), " tokens (", d.kind(),
                     " data), so seq_len must be ", d.sample_len() - 1, ", not ", seq_len);
}

// Fills one row: inputs = w[0, T), targets = w[1, T] (ignored where the mask is 0 or past
// `avail` tokens of real data).
void fill_row(const int32_t* w, const uint8_t* m, uint64_t avail, int64_t T, int32_t* in, int32_t* tgt) {
  for (int64_t t = 0; t < T; ++t) {
    in[t] = uint64_t(t) < avail ? w[t] : 0;
    tgt[t] = uint64_t(t + 1) < avail && m[t + 1] ? w[t + 1] : kIgnoreIndex;
  }
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<TokenDataset> data, LoaderConfig cfg) : data_(std::move(data)), cfg_(cfg) {
  HYMBA_CHECK(data_ != nullptr, "null dataset");
  check_batch_config(cfg_.seq_len, cfg_.global_batch, cfg_.rank, cfg_.world);
  check_fixed_len(*data_, cfg_.seq_len);
  const uint64_t n = data_->num_tokens();
  if (data_->sample_len() > 0) {
    window_ = stride_ = uint64_t(data_->sample_len());
    per_epoch_ = n / window_;
    if (per_epoch_ == 0) HYMBA_USER_ERROR(data_->description(), ": holds no samples");
  } else {
    window_ = uint64_t(cfg_.seq_len) + 1;
    stride_ = uint64_t(cfg_.seq_len);
    if (n < window_)
      HYMBA_USER_ERROR(data_->description(), ": has ", n, " tokens, fewer than one sample of seq_len + 1 = ", window_);
    per_epoch_ = (n - 1) / stride_;
  }
  tok_buf_.resize(window_);
  mask_buf_.resize(window_);
}

uint64_t DataLoader::sample_start(uint64_t g) const {
  if (cfg_.mode == LoaderMode::Packed) return (g % per_epoch_) * stride_;
  const uint64_t h = hash3(cfg_.seed, kStreamWindow, g);
  if (data_->sample_len() > 0) return bounded(h, per_epoch_) * stride_;
  return bounded(h, data_->num_tokens() - window_ + 1);
}

Batch DataLoader::next() {
  const int64_t lb = local_batch(), T = cfg_.seq_len;
  Batch b;
  b.batch = lb;
  b.seq_len = T;
  b.valid_rows = lb;
  b.epoch = counter_ / per_epoch_;
  b.inputs.resize(size_t(lb * T));
  b.targets.resize(size_t(lb * T));
  const uint64_t first = counter_ + uint64_t(cfg_.rank) * uint64_t(lb);
  for (int64_t i = 0; i < lb; ++i) {
    data_->read(sample_start(first + uint64_t(i)), window_, tok_buf_.data(), mask_buf_.data());
    fill_row(tok_buf_.data(), mask_buf_.data(), window_, T, b.inputs.data() + i * T, b.targets.data() + i * T);
  }
  counter_ += uint64_t(cfg_.global_batch);
  return b;
}

LoaderState DataLoader::state() const {
  LoaderState s;
  s.mode = to_string(cfg_.mode);
  s.seed = cfg_.seed;
  s.seq_len = cfg_.seq_len;
  s.num_tokens = data_->num_tokens();
  s.epoch = counter_ / per_epoch_;
  s.position = counter_ % per_epoch_;
  s.rng_counter = counter_;
  return s;
}

void DataLoader::set_state(const LoaderState& s) {
  const LoaderState mine = state();
  if (s.mode != mine.mode || s.seed != mine.seed || s.seq_len != mine.seq_len || s.num_tokens != mine.num_tokens)
    HYMBA_USER_ERROR("loader state was saved for other data or settings (mode ", s.mode, ", seed ", s.seed,
                     ", seq_len ", s.seq_len, ", ", s.num_tokens, " tokens); this loader has mode ", mine.mode,
                     ", seed ", mine.seed, ", seq_len ", mine.seq_len, ", ", mine.num_tokens, " tokens");
  if (s.position >= per_epoch_ || s.epoch * per_epoch_ + s.position != s.rng_counter)
    HYMBA_USER_ERROR("loader state is inconsistent: epoch ", s.epoch, " position ", s.position, " counter ",
                     s.rng_counter, " with ", per_epoch_, " samples per epoch");
  counter_ = s.rng_counter;
}

ValLoader::ValLoader(std::shared_ptr<TokenDataset> data, int64_t seq_len, int64_t global_batch, int rank, int world)
    : data_(std::move(data)), seq_len_(seq_len), global_batch_(global_batch), rank_(rank), world_(world) {
  HYMBA_CHECK(data_ != nullptr, "null dataset");
  check_batch_config(seq_len, global_batch, rank, world);
  check_fixed_len(*data_, seq_len);
  const uint64_t n = data_->num_tokens();
  if (data_->sample_len() > 0) {
    window_ = stride_ = uint64_t(data_->sample_len());
    samples_ = n / window_;
  } else {
    window_ = uint64_t(seq_len) + 1;
    stride_ = uint64_t(seq_len);
    if (n < 2) HYMBA_USER_ERROR(data_->description(), ": has ", n, " tokens; validation needs at least 2");
    samples_ = (n - 1 + stride_ - 1) / stride_;
  }
  tok_buf_.resize(window_);
  mask_buf_.resize(window_);
}

bool ValLoader::next(Batch& b) {
  if (next_sample_ >= samples_) return false;
  const int64_t lb = global_batch_ / world_, T = seq_len_;
  b.batch = lb;
  b.seq_len = T;
  b.epoch = 0;
  b.valid_rows = 0;
  b.inputs.assign(size_t(lb * T), 0);
  b.targets.assign(size_t(lb * T), kIgnoreIndex);
  const uint64_t first = next_sample_ + uint64_t(rank_) * uint64_t(lb);
  for (int64_t i = 0; i < lb; ++i) {
    const uint64_t s = first + uint64_t(i);
    if (s >= samples_) break;
    const uint64_t start = s * stride_;
    const uint64_t avail = std::min(window_, data_->num_tokens() - start);
    data_->read(start, avail, tok_buf_.data(), mask_buf_.data());
    fill_row(tok_buf_.data(), mask_buf_.data(), avail, T, b.inputs.data() + i * T, b.targets.data() + i * T);
    ++b.valid_rows;
  }
  next_sample_ += uint64_t(global_batch_);
  return true;
}

}  // namespace hymba::data
