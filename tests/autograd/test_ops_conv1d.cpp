// Gradients of the causal depthwise conv1d op by finite differences in float64.
#include <gtest/gtest.h>

#include <string>

#include "autograd/gradcheck.h"
#include "autograd/ops/conv1d.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

TEST(CausalConv1dGrad, AllWidthsBiasAndSilu) {
  Generator g(1);
  const DType f = DType::F64;
  for (int64_t W : {2, 3, 4})
    for (bool use_bias : {false, true})
      for (bool silu : {false, true})
        for (int64_t L : {1, 7}) {  // L = 1 < W - 1 reads only padding
          Tensor x = randn({2, 3, L}, f, &g), w = randn({3, W}, f, &g);
          x.set_requires_grad(true);
          w.set_requires_grad(true);
          std::vector<Tensor> in = {x, w};
          if (use_bias) {
            Tensor b = randn({3}, f, &g);
            b.set_requires_grad(true);
            in.push_back(b);
          }
          auto r = gradcheck(
              [&](const std::vector<Tensor>& v) {
                return causal_conv1d(v[0], v[1], use_bias ? v[2] : Tensor(), silu);
              },
              in);
          EXPECT_TRUE(r.ok) << "W" << W << " bias " << use_bias << " silu " << silu << " L" << L << ": "
                            << r.message;
        }
}

TEST(CausalConv1dGrad, NonContiguousInputsAndBatchSizes) {
  Generator g(2);
  const DType f = DType::F64;
  for (int64_t B : {1, 3}) {
    Tensor x = randn({B, 9, 4}, f, &g).permute({0, 2, 1});  // (B, 4, 9)
    Tensor w = randn({4, 4}, f, &g).t();                    // (4, 4) transposed
    Tensor b = randn({8}, f, &g).slice(0, 0, 8, 2);
    ASSERT_FALSE(x.is_contiguous());
    for (const Tensor& t : {x, w, b}) t.set_requires_grad(true);
    auto r = gradcheck([](const std::vector<Tensor>& v) { return causal_conv1d(v[0], v[1], v[2], true); }, {x, w, b});
    EXPECT_TRUE(r.ok) << "B" << B << ": " << r.message;
  }
}

TEST(CausalConv1dGrad, OnlyWeightRequiresGrad) {
  Generator g(3);
  Tensor x = randn({2, 3, 6}, DType::F64, &g), w = randn({3, 3}, DType::F64, &g), b = randn({3}, DType::F64, &g);
  w.set_requires_grad(true);
  auto r = gradcheck([&](const std::vector<Tensor>& v) { return causal_conv1d(x, v[0], b, true); }, {w});
  EXPECT_TRUE(r.ok) << r.message;
}
