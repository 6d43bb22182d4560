// Gradients of the meta-token ops by finite differences (float64).
#include <gtest/gtest.h>

#include <array>

#include "autograd/gradcheck.h"
#include "autograd/ops/meta_tokens.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

namespace {

Tensor meta_param(const Shape& s, Generator& g) {
  Tensor t = randn(s, DType::F64, &g);
  t.set_requires_grad(true);
  return t;
}

TEST(MetaTokensGrad, PrependAndDrop) {
  Generator g(41);
  for (auto [B, M, L, H] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {3, 2, 4, 5}, {2, 0, 3, 2}}) {
    Tensor meta = meta_param({M, H}, g), x = meta_param({B, L, H}, g);
    auto r = gradcheck([](const std::vector<Tensor>& in) { return prepend_meta(in[0], in[1]); }, {meta, x});
    EXPECT_TRUE(r.ok) << r.message;
    Tensor y = meta_param({B, M + L, H}, g);
    const int64_t m = M;
    r = gradcheck([m](const std::vector<Tensor>& in) { return drop_meta(in[0], m); }, {y});
    EXPECT_TRUE(r.ok) << r.message;
  }
  // Non-contiguous x.
  Tensor xb = randn({4, 2, 3}, DType::F64, &g), x;
  {
    NoGradGuard ng;
    x = xb.transpose(0, 1);  // (2, 4, 3)
  }
  x.set_requires_grad(true);
  Tensor meta = meta_param({2, 3}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return prepend_meta(in[0], in[1]); }, {meta, x});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(MetaTokensGrad, EmbedWithMetaRepeatedIdsAndPadding) {
  Generator g(42);
  Tensor w = meta_param({5, 3}, g), meta = meta_param({2, 3}, g);
  Tensor ids = from_vector<int64_t>({1, 1, 4, 0, 2, 1}, {2, 3});
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return embed_with_meta(in[0], ids, in[1]); }, {w, meta});
  EXPECT_TRUE(r.ok) << r.message;
  // padding_idx 1: the table row of token 1 gets no gradient although the output uses it.
  // Fresh leaves: gradcheck may leave gradients behind in w and meta.
  w = w.detach().clone().set_requires_grad(true);
  meta = meta.detach().clone().set_requires_grad(true);
  Tensor y = embed_with_meta(w, ids, meta, 1);
  y.backward(ones(y.shape(), DType::F64));
  auto gw = w.grad().to_vector<double>();
  for (int64_t h = 0; h < 3; ++h) {
    EXPECT_EQ(gw[size_t(1 * 3 + h)], 0.0);
    EXPECT_EQ(gw[size_t(4 * 3 + h)], 1.0);
  }
  auto gm = meta.grad().to_vector<double>();
  for (double v : gm) EXPECT_EQ(v, 2.0);  // summed over the batch of 2
}

}  // namespace
