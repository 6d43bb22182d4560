// Gradients of the attention op by finite differences (float64).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/attention.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

namespace {

Tensor attn_param(const Shape& s, Generator& g) {
  Tensor t = randn(s, DType::F64, &g);
  t.set_requires_grad(true);
  return t;
}

struct AttnCase {
  int64_t B, Hq, Hkv, T, dk, dv, window, meta;
};

TEST(AttentionGrad, GradcheckSmallShapes) {
  // Size-1 batch/heads/length, GQA and Hq = Hkv, dv != dk, full and windowed with W = 0,
  // meta prefix, and T > one 64-key tile with a window.
  const std::vector<AttnCase> cases = {{1, 1, 1, 1, 2, 3, -1, 0}, {2, 4, 2, 6, 3, 5, -1, 0},
                                       {1, 2, 2, 7, 4, 2, 0, 2},  {3, 2, 1, 9, 2, 4, 3, 1},
                                       {1, 2, 1, 70, 2, 2, 5, 3}};
  Generator g(21);
  for (const auto& c : cases) {
    Tensor q = attn_param({c.B, c.Hq, c.T, c.dk}, g), k = attn_param({c.B, c.Hkv, c.T, c.dk}, g),
           v = attn_param({c.B, c.Hkv, c.T, c.dv}, g);
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], c.window, c.meta); },
                       {q, k, v});
    EXPECT_TRUE(r.ok) << "T=" << c.T << " W=" << c.window << " M=" << c.meta << ": " << r.message;
  }
}

TEST(AttentionGrad, NonContiguousInputsAndCustomScale) {
  Generator g(22);
  Tensor qb = randn({2, 5, 4, 3}, DType::F64, &g), kb = randn({2, 3, 5, 6}, DType::F64, &g);
  Tensor q, k;
  {
    NoGradGuard ng;
    q = qb.permute({0, 2, 1, 3});  // (2, 4, 5, 3) transposed view
    k = kb.narrow(3, 1, 3).narrow(1, 0, 2);  // (2, 2, 5, 3) sliced view
  }
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  Tensor v = attn_param({2, 2, 5, 4}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 1, 1, 0.3); },
                     {q, k, v});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(AttentionGrad, OnlySomeInputsRequireGrad) {
  Generator g(23);
  Tensor q = randn({1, 2, 6, 3}, DType::F64, &g), k = attn_param({1, 1, 6, 3}, g), v = randn({1, 1, 6, 2}, DType::F64, &g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], 2, 0); }, {q, k, v});
  EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace
