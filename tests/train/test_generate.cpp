// Generation: the sampler against plainly computed distributions, and generate() against a
// greedy loop over full forwards. Tolerances: boundaries of the sampled distributions are
// probed 1e-9 inside; empirical frequencies over 40000 draws within 0.01 (about 4 sigma).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "layers/model.h"
#include "train/generate.h"
#include "tests/tiny_models.h"

using namespace hymba;
using namespace hymba::train;
using ::testing::HasSubstr;

namespace {

std::vector<double> log_of(const std::vector<double>& p) {
  std::vector<double> l;
  for (double v : p) l.push_back(std::log(v) + 3.0);  // an offset the softmax must ignore
  return l;
}

SamplingOptions opts(double temperature, int64_t top_k = 0, double top_p = 1.0) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  return o;
}

// Checks that u walks through `expected` (token, probability) in order: u just below each
// cumulative boundary picks that token, just above picks the next.
void expect_boundaries(const std::vector<double>& logits, const SamplingOptions& o,
                       const std::vector<std::pair<int64_t, double>>& expected) {
  double cum = 0;
  for (const auto& [tok, p] : expected) {
    EXPECT_EQ(sample_token(logits, o, cum + 1e-9), tok) << "just above " << cum;
    cum += p;
    EXPECT_EQ(sample_token(logits, o, std::min(cum - 1e-9, 1.0 - 1e-12)), tok) << "just below " << cum;
  }
  EXPECT_NEAR(cum, 1.0, 1e-12);
}

TEST(Sampling, GreedyIsArgmaxLowestIdOnTies) {
  EXPECT_EQ(sample_token({0.1, 2.0, -1.0, 2.0}, opts(0.0), 0.99), 1);
  EXPECT_EQ(sample_token({-3.0, -2.0, -5.0}, opts(-1.0), 0.5), 1);
  EXPECT_EQ(sample_token({0.1, 2.0, -1.0, 3.0}, opts(1.0, /*top_k=*/1), 0.99), 3);
}

TEST(Sampling, TemperatureTopKTopPBoundaries) {
  // Probabilities given out of order, so the sort is exercised: sorted 0.5 (id 2), 0.3 (id 0),
  // 0.15 (id 3), 0.05 (id 1).
  const std::vector<double> l = log_of({0.3, 0.05, 0.5, 0.15});
  expect_boundaries(l, opts(1.0), {{2, 0.5}, {0, 0.3}, {3, 0.15}, {1, 0.05}});
  expect_boundaries(l, opts(1.0, 2), {{2, 0.5 / 0.8}, {0, 0.3 / 0.8}});
  // top_p 0.7: 0.5 < 0.7 <= 0.8, so ids 2 and 0 are kept.
  expect_boundaries(l, opts(1.0, 0, 0.7), {{2, 0.5 / 0.8}, {0, 0.3 / 0.8}});
  // top_p exactly reached by the first token alone.
  expect_boundaries(l, opts(1.0, 0, 0.5), {{2, 1.0}});
  // top_k 3 then top_p 0.9 of the renormalized three (0.5, 0.3, 0.15) / 0.95: 0.526, 0.842, 1.
  expect_boundaries(l, opts(1.0, 3, 0.9), {{2, 0.5 / 0.95}, {0, 0.3 / 0.95}, {3, 0.15 / 0.95}});
  // Temperature 2: p^(1/2), renormalized.
  const double s = std::sqrt(0.3) + std::sqrt(0.05) + std::sqrt(0.5) + std::sqrt(0.15);
  expect_boundaries(l, opts(2.0),
                    {{2, std::sqrt(0.5) / s}, {0, std::sqrt(0.3) / s}, {3, std::sqrt(0.15) / s}, {1, std::sqrt(0.05) / s}});
}

TEST(Sampling, EmpiricalFrequencies) {
  const std::vector<double> p = {0.1, 0.4, 0.2, 0.3};
  const std::vector<double> l = log_of(p);
  Generator g(3);
  const int n = 40000;
  std::vector<double> u = rand({n}, DType::F64, &g).to_vector<double>();
  std::vector<double> count(4, 0);
  for (double x : u) count[size_t(sample_token(l, opts(1.0), x))] += 1;
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(count[i] / n, p[i], 0.01) << "token " << i;
}

TEST(Sampling, BadOptionsThrow) {
  auto msg = [](SamplingOptions o) {
    try {
      check_sampling_options(o);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(msg(opts(1.0, -1)), HasSubstr("top_k must be >= 0"));
  EXPECT_THAT(msg(opts(1.0, 0, 0.0)), HasSubstr("top_p must be in (0, 1], got 0"));
  EXPECT_THAT(msg(opts(1.0, 0, 1.5)), HasSubstr("top_p must be in (0, 1], got 1.5"));
  EXPECT_THAT(msg(opts(NAN)), HasSubstr("temperature must be finite"));
  SamplingOptions o;
  o.max_new_tokens = -2;
  EXPECT_THAT(msg(o), HasSubstr("max_new_tokens must be >= 0, got -2"));
}

const std::string kHymba = tiny_models::hymba3(17);

std::unique_ptr<Model> tiny_model() {
  auto m = std::make_unique<Model>(parse_model_config_string(kHymba), 5);
  Generator g(9);
  NoGradGuard ng;
  for (auto& [name, p] : m->named_parameters()) {
    const bool is_norm = name.find("layernorm") != std::string::npos;
    p.detach().copy_(rand(p.shape(), DType::F32, &g, is_norm ? 0.5 : -1.0, is_norm ? 1.5 : 1.0));
  }
  return m;
}

// Greedy continuation computed the slow way: a full forward over the whole sequence per token.
std::vector<int64_t> greedy_by_forward(const Model& m, std::vector<int64_t> seq, int64_t n, int64_t eos) {
  NoGradGuard ng;
  std::vector<int64_t> out;
  const int64_t V = m.config().vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    Tensor logits = m.forward(from_vector<int64_t>(seq, {1, int64_t(seq.size())}));
    std::vector<double> last = logits.select(1, int64_t(seq.size()) - 1).to(DType::F64).contiguous().to_vector<double>();
    int64_t t = 0;
    for (int64_t v = 1; v < V; ++v)
      if (last[size_t(v)] > last[size_t(t)]) t = v;
    if (t == eos) break;
    out.push_back(t);
    seq.push_back(t);
  }
  return out;
}

TEST(Generate, GreedyMatchesFullForwardAndBatchMatchesAlone) {
  auto m = tiny_model();
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 7, 2, 9, 3}, {1, 4}, {1, 11, 6, 8}};
  SamplingOptions o = opts(0.0);
  o.max_new_tokens = 9;
  auto batch = generate(*m, prompts, o);
  ASSERT_EQ(batch.size(), prompts.size());
  for (size_t b = 0; b < prompts.size(); ++b) {
    EXPECT_EQ(batch[b], greedy_by_forward(*m, prompts[b], 9, -1)) << "prompt " << b;
    EXPECT_EQ(generate(*m, {prompts[b]}, o)[0], batch[b]) << "prompt " << b;
  }
}

TEST(Generate, StopsAtEos) {
  auto m = tiny_model();
  const std::vector<int64_t> prompt = {1, 5, 7};
  const std::vector<int64_t> free_run = greedy_by_forward(*m, prompt, 8, -1);
  ASSERT_EQ(free_run.size(), 8u);
  // Make the 4th greedy token the EOS: output stops right before its first occurrence.
  SamplingOptions o = opts(0.0);
  o.max_new_tokens = 8;
  o.eos_id = free_run[3];
  const auto first = std::find(free_run.begin(), free_run.end(), o.eos_id);
  const std::vector<int64_t> expect(free_run.begin(), first);
  // A second prompt that keeps going shows the stopped row does not end the batch early.
  auto out = generate(*m, {prompt, {1, 2, 3, 4, 5}}, o);
  EXPECT_EQ(out[0], expect);
  EXPECT_EQ(out[1], greedy_by_forward(*m, {1, 2, 3, 4, 5}, 8, o.eos_id));
}

TEST(Generate, SeedReproducesAndVaries) {
  auto m = tiny_model();
  SamplingOptions o = opts(1.5, 10, 0.95);
  o.max_new_tokens = 24;
  o.seed = 42;
  const std::vector<std::vector<int64_t>> prompts = {{1, 2}, {1, 3, 4}};
  auto a = generate(*m, prompts, o), b = generate(*m, prompts, o);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[0].size(), 24u);
  o.seed = 43;
  EXPECT_NE(generate(*m, prompts, o), a);
  for (const auto& row : a)
    for (int64_t t : row) EXPECT_TRUE(t >= 0 && t < m->config().vocab_size);
}

TEST(Generate, BadPromptsThrow) {
  auto m = tiny_model();
  SamplingOptions o;
  EXPECT_THROW(generate(*m, {}, o), UserError);
  try {
    generate(*m, {{1, 2}, {}}, o);
    ADD_FAILURE() << "empty prompt accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("prompt 1 is empty"));
  }
  try {
    generate(*m, {{1, 17}}, o);
    ADD_FAILURE() << "out-of-vocabulary id accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("token id 17 outside the vocabulary [0, 17)"));
  }
  o.max_new_tokens = 0;
  EXPECT_EQ(generate(*m, {{1, 2}}, o), std::vector<std::vector<int64_t>>(1));
}

}  // namespace
