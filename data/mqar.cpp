#include "data/mqar.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/loader.h"
#include "data/random.h"
#include "data/split_writer.h"
#include "data/staged_dir.h"

namespace hymba::data {

void check_mqar_options(const MqarOptions& o) {
  if (o.pairs < 1) HYMBA_USER_ERROR("mqar: --pairs must be at least 1, got ", o.pairs);
  if (o.vocab < 4 || o.vocab > (int64_t(1) << 31))
    HYMBA_USER_ERROR("mqar: --vocab must be in [4, 2^31], got ", o.vocab);
  // Keys come from [1, vocab/2) and values from [vocab/2, vocab), without replacement.
  if (o.vocab / 2 - 1 < o.pairs || o.vocab - o.vocab / 2 < o.pairs)
    HYMBA_USER_ERROR("mqar: --vocab ", o.vocab, " is too small for ", o.pairs, " distinct keys and values (need at least ",
                     2 * o.pairs + 2, ")");
  // The pairs take 2N tokens, then N query slots of 2 tokens each must fit.
  if (o.seq + 1 < 4 * o.pairs)
    HYMBA_USER_ERROR("mqar: --seq ", o.seq, " is too short for ", o.pairs, " pairs (needs seq + 1 >= 4 * pairs = ",
                     4 * o.pairs, ")");
  if (o.count == 0) HYMBA_USER_ERROR("mqar: --count must be positive");
  if (!(o.power_a > 0 && o.power_a <= 1)) HYMBA_USER_ERROR("mqar: --power-a must be in (0, 1], got ", o.power_a);
}

namespace {

// k distinct values from [lo, hi): partial Fisher-Yates over a virtual array, O(k) memory.
std::vector<int32_t> distinct(SplitMix& rng, int64_t lo, int64_t hi, int64_t k) {
  std::vector<int32_t> out;
  std::vector<std::pair<int64_t, int64_t>> swapped;  // sparse record of the permuted prefix
  auto at = [&](int64_t i) {
    for (auto it = swapped.rbegin(); it != swapped.rend(); ++it)
      if (it->first == i) return it->second;
    return i;
  };
  const int64_t n = hi - lo;
  for (int64_t i = 0; i < k; ++i) {
    int64_t j = i + int64_t(rng.below(uint64_t(n - i)));
    int64_t vi = at(i), vj = at(j);
    swapped.emplace_back(j, vi);
    swapped.emplace_back(i, vj);
    out.push_back(int32_t(lo + vj));
  }
  return out;
}

}  // namespace

MqarSample make_mqar_sample(const MqarOptions& o, int split, uint64_t index) {
  SplitMix rng(hash3(o.seed, kStreamMqar + uint64_t(split), index));
  const int64_t L = o.seq + 1, N = o.pairs, half = o.vocab / 2;
  MqarSample s;
  s.tokens.assign(size_t(L), 0);
  s.mask.assign(size_t(L), 0);
  auto keys = distinct(rng, 1, half, N);
  auto values = distinct(rng, half, o.vocab, N);
  for (int64_t i = 0; i < N; ++i) {
    s.tokens[size_t(2 * i)] = keys[size_t(i)];
    s.tokens[size_t(2 * i + 1)] = values[size_t(i)];
  }
  // Gaps: N distinct slots, weighted sampling without replacement (draw, remove, repeat).
  const int64_t space = (L - 2 * N) / 2;
  std::vector<double> w(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g) w[size_t(g)] = std::pow(double(g + 1), o.power_a - 1.0);
  for (int64_t i = 0; i < N; ++i) {
    double total = 0;  // summed afresh each draw: no drift from repeated subtraction
    for (double x : w) total += x;
    double u = rng.uniform() * total, acc = 0;
    int64_t pick = -1, last_free = -1;
    for (int64_t g = 0; g < space; ++g) {
      if (w[size_t(g)] == 0) continue;
      last_free = g;
      acc += w[size_t(g)];
      if (u < acc) {
        pick = g;
        break;
      }
    }
    if (pick < 0) pick = last_free;  // rounding at the top end
    w[size_t(pick)] = 0;
    const int64_t q = 2 * N + 2 * pick;
    s.tokens[size_t(q)] = keys[size_t(i)];
    s.tokens[size_t(q + 1)] = values[size_t(i)];
    s.mask[size_t(q + 1)] = 1;
  }
  return s;
}

MqarStats prepare_mqar(const MqarOptions& o) {
  check_mqar_options(o);
  nlohmann::json settings = {{"vocab", o.vocab}, {"seq", o.seq},     {"pairs", o.pairs},
                             {"count", o.count}, {"val_count", o.val_count}, {"seed", o.seed},
                             {"power_a", o.power_a}, {"filler", 0}};
  ShardInfo info;
  info.kind = "mqar";
  info.sample_len = o.seq + 1;
  info.source = "synthetic: mqar";
  info.settings = settings.dump();
  StagedDir out(o.out, o.force);
  MqarStats st;
  for (int split = 0; split < 2; ++split) {
    const uint64_t n = split == 0 ? o.count : o.val_count;
    if (n == 0) continue;
    // One shard per split: even 10^6 samples of 257 tokens are only 0.5 GB as uint16.
    SplitWriter w(out.path(), split == 0 ? "train" : "val", uint64_t(o.vocab), true, ~uint64_t(0), info);
    for (uint64_t i = 0; i < n; ++i) {
      MqarSample s = make_mqar_sample(o, split, i);
      w.append(s.tokens, s.mask);
      w.end_document();
    }
    for (auto& p : w.close()) st.shards.push_back((out.final_path() / std::filesystem::path(p).filename()).string());
    (split == 0 ? st.train_samples : st.val_samples) = n;
  }
  std::ofstream meta(out.path() / "meta.json");
  meta << nlohmann::json{{"format", "hymba-tokens"}, {"kind", "mqar"}, {"vocab_size", o.vocab},
                         {"sample_len", o.seq + 1}, {"settings", settings},
                         {"train", {{"samples", st.train_samples}}}, {"val", {{"samples", st.val_samples}}}}
              .dump(2)
       << "\n";
  if (!meta) HYMBA_USER_ERROR((out.path() / "meta.json").string(), ": cannot write");
  meta.close();
  out.commit();
  return st;
}

MqarAccuracy& MqarAccuracy::operator+=(const MqarAccuracy& o) {
  correct += o.correct;
  total += o.total;
  sequences_solved += o.sequences_solved;
  sequences += o.sequences;
  return *this;
}

MqarAccuracy mqar_accuracy(std::span<const int32_t> predictions, std::span<const int32_t> targets, int64_t seq_len) {
  HYMBA_CHECK(predictions.size() == targets.size(), "mqar_accuracy: ", predictions.size(), " predictions for ",
              targets.size(), " targets");
  HYMBA_CHECK(seq_len > 0 && targets.size() % size_t(seq_len) == 0, "mqar_accuracy: ", targets.size(),
              " targets are not rows of ", seq_len);
  MqarAccuracy a;
  for (size_t row = 0; row < targets.size() / size_t(seq_len); ++row) {
    uint64_t right = 0, answers = 0;
    for (int64_t t = 0; t < seq_len; ++t) {
      size_t i = row * size_t(seq_len) + size_t(t);
      if (targets[i] == kIgnoreIndex) continue;
      ++answers;
      right += predictions[i] == targets[i];
    }
    if (answers == 0) continue;  // a padding row of the val loader
    a.correct += right;
    a.total += answers;
    a.sequences += 1;
    a.sequences_solved += right == answers;
  }
  return a;
}

}  // namespace hymba::data
