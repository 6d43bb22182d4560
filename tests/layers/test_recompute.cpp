// Activation recomputation in the Model (Model::set_recompute, autograd/checkpoint.h): the
// loss and every parameter gradient are bitwise equal to a run without it, for every tiny
// architecture (hybrid with KV sharing and meta tokens, Llama, Mamba, Samba); the units
// keep a KV-sharing group together; and peak CPU memory drops where activations dominate.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "autograd/ops.h"
#include "core/allocator.h"
#include "core/rng.h"
#include "layers/model.h"

using namespace hymba;

namespace {

ModelConfig tiny(const std::string& name) {
  return load_model_config(std::string(HYMBA_SOURCE_DIR) + "/configs/tiny/" + name + ".yaml");
}

Tensor random_ids(int64_t B, int64_t L, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  Tensor u = rand({B, L}, {}, &g, 0.0, double(vocab) - 1e-3);
  std::vector<float> f = u.to_vector<float>();
  std::vector<int64_t> ids(f.begin(), f.end());
  return from_vector<int64_t>(ids, {B, L});
}

// Loss and gradients of one forward + backward.
std::pair<float, NamedTensors> loss_and_grads(const ModelConfig& cfg, bool recompute, const Tensor& ids) {
  Model m(cfg, 3);
  m.set_recompute(recompute);
  Tensor l = m.loss(ids);
  l.backward();
  NamedTensors grads;
  for (auto& [name, p] : m.named_parameters()) grads.emplace_back(name, p.grad());
  return {float(l.item()), grads};
}

class RecomputeEqual : public ::testing::TestWithParam<const char*> {};

TEST_P(RecomputeEqual, LossAndEveryGradientBitwise) {
  ModelConfig cfg = tiny(GetParam());
  // 80 tokens: past the hybrid's 64-token window, so sliding-window masks and meta keys
  // outside the window are exercised.
  Tensor ids = random_ids(2, 80, cfg.vocab_size, 11);
  auto [l0, g0] = loss_and_grads(cfg, false, ids);
  auto [l1, g1] = loss_and_grads(cfg, true, ids);
  EXPECT_EQ(l0, l1);
  ASSERT_EQ(g0.size(), g1.size());
  for (size_t i = 0; i < g0.size(); ++i) {
    ASSERT_EQ(g0[i].first, g1[i].first);
    ASSERT_TRUE(g0[i].second.defined() && g1[i].second.defined()) << g0[i].first;
    std::vector<float> a = g0[i].second.to_vector<float>(), b = g1[i].second.to_vector<float>();
    ASSERT_EQ(a.size(), b.size());
    size_t diff = 0;
    for (size_t k = 0; k < a.size(); ++k) diff += a[k] != b[k];
    EXPECT_EQ(diff, 0u) << g0[i].first << ": " << diff << " of " << a.size() << " elements differ";
  }
}

INSTANTIATE_TEST_SUITE_P(TinyConfigs, RecomputeEqual, ::testing::Values("hymba", "llama", "mamba", "samba"));

TEST(Recompute, UnitsKeepAKVSharingGroupTogether) {
  using Units = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(Model(tiny("hymba")).recompute_units(), (Units{{0, 0}, {1, 2}, {3, 3}, {4, 4}, {5, 5}}));
  EXPECT_EQ(Model(tiny("llama")).recompute_units().size(), 9u);
  // A group whose consumer is not adjacent takes the layers between; overlapping groups merge.
  std::string base = R"(
vocab_size: 64
hidden_size: 16
num_layers: 7
block: attention
num_heads: 2
num_kv_heads: 1
mlp: {intermediate_size: 32}
)";
  ModelConfig a = parse_model_config_string(base + "kv_reuse_groups: [[1, 3]]\n");
  EXPECT_EQ(Model(a).recompute_units(), (Units{{0, 0}, {1, 3}, {4, 4}, {5, 5}, {6, 6}}));
  ModelConfig b = parse_model_config_string(base + "kv_reuse_groups: [[1, 3], [2, 4], [5, 6]]\n");
  EXPECT_EQ(Model(b).recompute_units(), (Units{{0, 0}, {1, 4}, {5, 6}}));
  // And the gradients of such a model still match.
  Tensor ids = random_ids(1, 12, 64, 2);
  auto [l0, g0] = loss_and_grads(b, false, ids);
  auto [l1, g1] = loss_and_grads(b, true, ids);
  EXPECT_EQ(l0, l1);
  for (size_t i = 0; i < g0.size(); ++i) {
    std::vector<float> x = g0[i].second.to_vector<float>(), y = g1[i].second.to_vector<float>();
    EXPECT_EQ(x, y) << g0[i].first;
  }
}

TEST(Recompute, LowersPeakMemoryWhereActivationsDominate) {
  // Tiny Hymba at B = 2, L = 512: activations (tens of MB) outweigh the 18 MB of
  // parameters. Peak allocated bytes over forward + backward, measured after the model is
  // built.
  ModelConfig cfg = tiny("hymba");
  Tensor ids = random_ids(2, 512, cfg.vocab_size, 5);
  Allocator* alloc = get_allocator(Device::cpu());
  size_t peak[2];
  for (int r = 0; r < 2; ++r) {
    Model m(cfg, 3);
    m.set_recompute(r == 1);
    const size_t base = alloc->stats().allocated;
    alloc->reset_peak();
    m.loss(ids).backward();
    peak[r] = alloc->stats().peak_allocated - base;
  }
  std::printf("[recompute] tiny hymba B=2 L=512: peak above the model %.1f MB without, %.1f MB with recompute\n",
              double(peak[0]) / 1e6, double(peak[1]) / 1e6);
  EXPECT_LT(double(peak[1]), 0.7 * double(peak[0]));
}

TEST(Recompute, NoEffectWithoutGradMode) {
  ModelConfig cfg = tiny("hymba");
  Tensor ids = random_ids(1, 20, cfg.vocab_size, 7);
  Model m(cfg, 3);
  Tensor a, b;
  {
    NoGradGuard ng;
    a = m.forward(ids);
    m.set_recompute(true);
    b = m.forward(ids);
  }
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_FALSE(b.requires_grad());
}

}  // namespace
