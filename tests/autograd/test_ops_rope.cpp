// Gradient of RoPE by finite differences (float64).
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/rope.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

namespace {

TEST(RopeGrad, GradcheckWithOffsetsAndViews) {
  Generator g(31);
  for (int64_t offset : {0, 5, 3000}) {
    Tensor x = randn({2, 3, 4, 6}, DType::F64, &g);
    x.set_requires_grad(true);
    auto r = gradcheck([offset](const std::vector<Tensor>& in) { return rope(in[0], 74535.0, offset); }, {x});
    EXPECT_TRUE(r.ok) << "offset " << offset << ": " << r.message;
  }
  Tensor base = randn({1, 5, 2, 4}, DType::F64, &g), x;
  {
    NoGradGuard ng;
    x = base.permute({0, 2, 1, 3});  // (1, 2, 5, 4) view
  }
  x.set_requires_grad(true);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return rope(in[0], 100.0, 1); }, {x});
  EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace
