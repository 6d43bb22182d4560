// Gradients of the elementwise ops by finite differences (float64).
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/elementwise.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

namespace {
Tensor param(const Shape& s, Generator& g, double lo = -2, double hi = 2) {
  Tensor t = rand(s, DType::F64, &g, lo, hi);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(ElementwiseGrad, BinaryOpsWithBroadcastingAndSizeOneDims) {
  Generator g(10);
  std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}}, {{3, 1, 4}, {5, 1}}, {{1}, {2, 3}}, {{4}, {}}};
  for (auto& [sa, sb] : shapes) {
    Tensor a = param(sa, g), b = param(sb, g, 0.5, 2.0);
    for (int op = 0; op < 4; ++op) {
      auto r = gradcheck(
          [op](const std::vector<Tensor>& in) {
            switch (op) {
              case 0: return in[0] + in[1];
              case 1: return in[0] - in[1];
              case 2: return in[0] * in[1];
              default: return in[0] / in[1];
            }
          },
          {a, b});
      EXPECT_TRUE(r.ok) << "op " << op << " " << shape_str(sa) << " " << shape_str(sb) << ": " << r.message;
    }
  }
}

TEST(ElementwiseGrad, NonContiguousInputs) {
  Generator g(11);
  Tensor base = rand({4, 3}, DType::F64, &g, 0.5, 2.0);
  Tensor t;
  {
    NoGradGuard ng;
    t = base.t();  // (3, 4) transposed view
  }
  t.set_requires_grad(true);
  Tensor b = param({3, 4}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return log(in[0]) * in[1] + sqrt(in[0]); }, {t, b});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(ElementwiseGrad, UnaryAndScalarOps) {
  Generator g(12);
  Tensor x = param({2, 5}, g, 0.3, 2.5);
  std::vector<std::function<Tensor(const Tensor&)>> fs = {
      [](const Tensor& v) { return neg(v); },        [](const Tensor& v) { return exp(v); },
      [](const Tensor& v) { return log(v); },        [](const Tensor& v) { return sqrt(v); },
      [](const Tensor& v) { return rsqrt(v); },      [](const Tensor& v) { return abs(v - 1.0); },
      [](const Tensor& v) { return pow(v, 3.0); },   [](const Tensor& v) { return pow(v, 2.0); },
      [](const Tensor& v) { return pow(v, -0.5); },  [](const Tensor& v) { return 3.0 / v; },
      [](const Tensor& v) { return 1.0 - v * 4.0; }, [](const Tensor& v) { return (v + 2.0) / 5.0; },
  };
  for (size_t i = 0; i < fs.size(); ++i) {
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return fs[i](in[0]); }, {x});
    EXPECT_TRUE(r.ok) << "function " << i << ": " << r.message;
  }
}
