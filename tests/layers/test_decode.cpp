// Incremental decoding (Model::prefill + Model::decode_step) against one full forward over
// the same tokens, for the four stack kinds of the study. Tolerances: 1e-10 in float64 (the
// two paths differ only in summation order), 1e-4 in float32. Parameters are randomized to
// O(1) so that a wrong cache (a missing key, a stale conv input, a wrong RoPE position) moves
// the logits far beyond the tolerance.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "layers/inference_cache.h"
#include "layers/model.h"
#include "tests/tiny_models.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

using Vec = std::vector<double>;

Vec vals(const Tensor& t) { return t.detach().to(DType::F64).contiguous().to_vector<double>(); }

double max_diff(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// Tiny Hymba (tests/tiny_models.h): the ring of its window layers wraps over 2 meta + 13 tokens.
const std::string kHymbaYaml = tiny_models::hymba3(13);
const char* kHymba = kHymbaYaml.c_str();
const char* kLlama = R"(
vocab_size: 13
hidden_size: 8
num_layers: 2
block: attention
num_heads: 4
num_kv_heads: 2
head_dim: 2
mlp: {intermediate_size: 6}
)";
const char* kMamba = R"(
vocab_size: 13
hidden_size: 8
num_layers: 2
block: ssm
ssm: {d_state: 3, d_conv: 3, expand: 2, dt_rank: 2}
mlp: none
)";
// Samba-style: Mamba + MLP and sliding-window attention + MLP, alternating; meta tokens too.
const char* kSamba = R"(
vocab_size: 13
hidden_size: 8
num_layers: 4
block: ssm
num_heads: 2
num_kv_heads: 1
head_dim: 4
ssm: {d_state: 3, d_conv: 4, expand: 2, dt_rank: 2}
mlp: {intermediate_size: 6}
num_meta_tokens: 3
sliding_window: 2
layers:
  - {index: odd, block: attention}
)";

void randomize(Module& m, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  for (auto& [name, p] : m.named_parameters()) {
    const bool is_norm = name.find("layernorm") != std::string::npos;
    Tensor r = rand(p.shape(), DType::F64, &g, is_norm ? 0.5 : -0.5, is_norm ? 1.5 : 0.5);
    if (name.find("A_log") != std::string::npos) r = rand(p.shape(), DType::F64, &g, -1.0, 1.0);
    p.detach().copy_(r);
  }
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  Vec r = rand({n}, DType::F64, &g, 0.0, double(vocab)).to_vector<double>();
  std::vector<int64_t> ids;
  for (double v : r) ids.push_back(std::min<int64_t>(vocab - 1, int64_t(v)));
  return ids;
}

// Row b, position t of logits (B, L, V) as a vector.
Vec at(const Tensor& logits, int64_t b, int64_t t) { return vals(logits.select(0, b).select(0, t)); }

struct Case {
  const char* name;
  const char* yaml;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class DecodeMatchesForward : public ::testing::TestWithParam<std::tuple<Case, DType>> {};

TEST_P(DecodeMatchesForward, EveryStep) {
  const auto [c, dtype] = GetParam();
  Model m(parse_model_config_string(c.yaml), 3);
  randomize(m, 17);
  m.to(dtype);
  const double tol = dtype == DType::F64 ? 1e-10 : 1e-4;
  const int64_t B = 2, L = 13, P = 6, V = m.config().vocab_size;
  Tensor ids = from_vector<int64_t>(random_ids(B * L, V, 5), {B, L});
  Tensor full;
  {
    NoGradGuard ng;
    full = m.forward(ids);
  }
  InferenceCache cache;
  Tensor logits = m.prefill(ids.narrow(1, 0, P), cache);
  ASSERT_EQ(logits.shape(), Shape({B, V}));
  for (int64_t b = 0; b < B; ++b)
    EXPECT_LE(max_diff(vals(logits.select(0, b)), at(full, b, P - 1)), tol) << c.name << " prefill row " << b;
  for (int64_t t = P; t < L; ++t) {
    logits = m.decode_step(ids.select(1, t).contiguous(), cache);
    for (int64_t b = 0; b < B; ++b)
      EXPECT_LE(max_diff(vals(logits.select(0, b)), at(full, b, t)), tol) << c.name << " step " << t << " row " << b;
  }
  EXPECT_EQ(cache.pos, std::vector<int64_t>(size_t(B), m.config().num_meta_tokens + L));
}

INSTANTIATE_TEST_SUITE_P(Stacks, DecodeMatchesForward,
                         ::testing::Combine(::testing::Values(Case{"hymba", kHymba}, Case{"llama", kLlama},
                                                              Case{"mamba", kMamba}, Case{"samba", kSamba}),
                                            ::testing::Values(DType::F64, DType::F32)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) == DType::F64 ? "_f64" : "_f32");
                         });

// A one-token prompt: the SSM conv state is mostly the zero left padding, and (without meta
// tokens) the first decode step attends over a single earlier key.
TEST(Decode, OneTokenPromptMatchesForward) {
  for (const char* yaml : {kHymba, kLlama, kMamba, kSamba}) {
    Model m(parse_model_config_string(yaml), 4);
    randomize(m, 23);
    m.to(DType::F64);
    const int64_t L = 5;
    Tensor ids = from_vector<int64_t>(random_ids(L, m.config().vocab_size, 8), {1, L});
    Tensor full;
    {
      NoGradGuard ng;
      full = m.forward(ids);
    }
    InferenceCache cache;
    Tensor logits = m.prefill(ids.narrow(1, 0, 1), cache);
    EXPECT_LE(max_diff(vals(logits.select(0, 0)), at(full, 0, 0)), 1e-10);
    for (int64_t t = 1; t < L; ++t) {
      logits = m.decode_step(ids.select(1, t).contiguous(), cache);
      EXPECT_LE(max_diff(vals(logits.select(0, 0)), at(full, 0, t)), 1e-10) << "step " << t;
    }
  }
}

// Left padding: rows of lengths 7, 3 and 5 in one (3, 7) batch whose pads are arbitrary
// token ids, decoded 6 more steps with different tokens per row. Each row must give the
// logits of that row decoded alone (its own positions, no pad keys, unpolluted SSM state).
TEST(Decode, LeftPaddedBatchMatchesRowsAlone) {
  for (const char* yaml : {kHymba, kSamba, kLlama, kMamba}) {
    Model m(parse_model_config_string(yaml), 6);
    randomize(m, 29);
    m.to(DType::F64);
    const int64_t V = m.config().vocab_size, L = 7, steps = 6;
    const std::vector<int64_t> len = {7, 3, 5};
    const int64_t B = int64_t(len.size());
    std::vector<int64_t> flat = random_ids(B * L, V, 31);  // pads keep their random ids
    Tensor ids = from_vector<int64_t>(flat, {B, L});
    Tensor next = from_vector<int64_t>(random_ids(B * steps, V, 37), {steps, B});
    InferenceCache cache;
    std::vector<Tensor> batch_logits = {m.prefill(ids, cache, len)};
    for (int64_t s = 0; s < steps; ++s) batch_logits.push_back(m.decode_step(next.select(0, s).contiguous(), cache));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = len[size_t(b)];
      Tensor row = ids.select(0, b).narrow(0, L - n, n).contiguous().reshape({1, n});
      InferenceCache alone;
      std::vector<Tensor> row_logits = {m.prefill(row, alone)};
      for (int64_t s = 0; s < steps; ++s)
        row_logits.push_back(m.decode_step(next.select(0, s).narrow(0, b, 1).contiguous(), alone));
      // ... and the full forward of the row followed by its decoded tokens.
      std::vector<int64_t> seq(flat.begin() + b * L + (L - n), flat.begin() + (b + 1) * L);
      for (int64_t s = 0; s < steps; ++s) seq.push_back(next.select(0, s).to_vector<int64_t>()[size_t(b)]);
      Tensor full;
      {
        NoGradGuard ng;
        full = m.forward(from_vector<int64_t>(seq, {1, int64_t(seq.size())}));
      }
      for (int64_t s = 0; s <= steps; ++s) {
        Vec got = vals(batch_logits[size_t(s)].select(0, b));
        EXPECT_LE(max_diff(got, vals(row_logits[size_t(s)].select(0, 0))), 1e-10) << "row " << b << " step " << s;
        EXPECT_LE(max_diff(got, at(full, 0, n - 1 + s)), 1e-10) << "row " << b << " step " << s;
      }
    }
  }
}

// The cache sizes that make Hymba decode fast: the sliding-window producer keeps M + W + 1
// slots however long the sequence; the full-attention layer holds every position; consumers
// and attention-free layers keep no keys; every hybrid layer keeps (I, d_conv - 1) and (I, N).
TEST(Decode, CacheShapes) {
  Model m(parse_model_config_string(kHymba), 1);
  const ModelConfig& cfg = m.config();
  const int64_t M = cfg.num_meta_tokens, W = 3, L = 9;
  Tensor ids = from_vector<int64_t>(random_ids(2 * L, cfg.vocab_size, 2), {2, L});
  InferenceCache cache;
  m.prefill(ids, cache);
  for (int i = 0; i < 80; ++i) m.decode_step(ids.select(1, i % L).contiguous(), cache);
  const int64_t end = M + L + 80;
  ASSERT_EQ(cache.layers.size(), 3u);
  EXPECT_TRUE(cache.layers[0].has_kv);
  EXPECT_GE(cache.layers[0].k.size(2), end);
  std::vector<int64_t> kp0 = cache.layers[0].k_pos.select(0, 1).narrow(0, 0, end).contiguous().to_vector<int64_t>();
  for (int64_t p = 0; p < end; ++p) EXPECT_EQ(kp0[size_t(p)], p);
  EXPECT_TRUE(cache.layers[1].has_kv);
  EXPECT_EQ(cache.layers[1].k.shape(), Shape({2, cfg.num_kv_heads, M + W + 1, cfg.head_dim}));
  EXPECT_EQ(cache.layers[1].v.shape(), Shape({2, cfg.num_kv_heads, M + W + 1, cfg.v_head_dim}));
  // The meta slots, then the last W + 1 positions in ring order.
  std::vector<int64_t> kp1 = cache.layers[1].k_pos.select(0, 0).contiguous().to_vector<int64_t>();
  for (int64_t p = 0; p < M; ++p) EXPECT_EQ(kp1[size_t(p)], p);
  for (int64_t p = end - (W + 1); p < end; ++p) EXPECT_EQ(kp1[size_t(M + (p - M) % (W + 1))], p);
  EXPECT_FALSE(cache.layers[2].has_kv);  // consumer of layer 1
  for (const LayerCache& c : cache.layers) {
    EXPECT_EQ(c.conv_state.shape(), Shape({2, cfg.ssm_inner(), cfg.ssm.d_conv - 1}));
    EXPECT_EQ(c.ssm_state.shape(), Shape({2, cfg.ssm_inner(), cfg.ssm.d_state}));
  }
  EXPECT_GT(cache.nbytes(), 0u);
}

TEST(Decode, BadInputsThrow) {
  Model m(parse_model_config_string(kHymba), 1);
  Tensor ids = from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  InferenceCache cache;
  try {
    m.decode_step(from_vector<int64_t>({1, 2}, {2}), cache);
    ADD_FAILURE() << "decode_step before prefill did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Model::decode_step"));
  }
  m.prefill(ids, cache);
  try {
    m.decode_step(from_vector<int64_t>({1, 2, 3}, {3}), cache);
    ADD_FAILURE() << "wrong batch did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Model::decode_step"));
    EXPECT_THAT(e.what(), HasSubstr("(2)"));
    EXPECT_THAT(e.what(), HasSubstr("[3]"));
  }
  try {
    m.prefill(ids, cache, {3, 4});
    ADD_FAILURE() << "length > L did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Model::prefill"));
    EXPECT_THAT(e.what(), HasSubstr("outside 1..3"));
  }
  EXPECT_THROW(m.prefill(ids, cache, {3}), Error);
}

}  // namespace
