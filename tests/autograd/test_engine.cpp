// The backward engine: graph traversal, accumulation, grad mode, leaf hooks, freed graphs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/ops/elementwise.h"
#include "core/rng.h"
#include "tests/test_util.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

Tensor leaf(std::vector<double> v) {
  Tensor t = from_vector<double>(v, {int64_t(v.size())});
  t.set_requires_grad(true);
  return t;
}

using testutil::error_of;

}  // namespace

TEST(Engine, ChainRuleThroughASharedSubgraph) {
  // z = (x*y) * (x*y + x): x*y is used twice, x three times.
  Tensor x = leaf({1.5, -2.0}), y = leaf({0.5, 3.0});
  Tensor xy = x * y;
  Tensor z = xy * (xy + x);
  z.backward(ones({2}, DType::F64));
  std::vector<double> gx = x.grad().to_vector<double>(), gy = y.grad().to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    double xv = x.to_vector<double>()[i], yv = y.to_vector<double>()[i];
    // z = x^2 y^2 + x^2 y
    EXPECT_NEAR(gx[i], 2 * xv * yv * yv + 2 * xv * yv, 1e-12);
    EXPECT_NEAR(gy[i], 2 * xv * xv * yv + xv * xv, 1e-12);
  }
}

TEST(Engine, GradientsAccumulateOverTwoBackwards) {
  Tensor x = leaf({1, 2, 3});
  (x * 3.0).backward(ones({3}, DType::F64));
  (x * x).backward(ones({3}, DType::F64));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3 + 2, 3 + 4, 3 + 6}));
}

TEST(Engine, ScalarRootNeedsNoGradientButOthersDo) {
  Tensor x = leaf({2});
  Tensor y = x * x;
  y.backward();
  EXPECT_EQ(x.grad().item(), 4.0);
  Tensor v = leaf({1, 2}) * 2.0;
  EXPECT_THAT(error_of([&] { v.backward(); }), HasSubstr("gradient is required for non-scalar root"));
  EXPECT_THAT(error_of([&] { v.backward(ones({3}, DType::F64)); }), HasSubstr("does not match root"));
}

TEST(Engine, NoGradGuardRecordsNothing) {
  Tensor x = leaf({1, 2});
  Tensor y;
  {
    NoGradGuard ng;
    y = x * x;
    EXPECT_FALSE(GradMode::is_enabled());
  }
  EXPECT_TRUE(GradMode::is_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THAT(error_of([&] { y.backward(ones({2}, DType::F64)); }), HasSubstr("does not require grad"));
  // Inputs that do not require grad get no gradient and record no node.
  Tensor c = from_vector<double>({1, 2}, {2});
  EXPECT_FALSE((c * c).requires_grad());
  Tensor z = x * c;
  z.backward(ones({2}, DType::F64));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Engine, LeafHookRunsOncePerBackwardWithTheFinalGradient) {
  Tensor x = leaf({1, 1});
  Tensor w = leaf({2, 2});
  int calls_x = 0, calls_w = 0;
  std::vector<double> seen;
  x.register_grad_hook([&](const Tensor& t) {
    calls_x++;
    seen = t.grad().to_vector<double>();
  });
  w.register_grad_hook([&](const Tensor&) { calls_w++; });
  // x reaches the output along three paths; the hook must see the sum of all three.
  Tensor a = x * 2.0, b = x * w, c = x + x;
  Tensor out = a + b + c;
  out.backward(ones({2}, DType::F64));
  EXPECT_EQ(calls_x, 1);
  EXPECT_EQ(calls_w, 1);
  EXPECT_EQ(seen, (std::vector<double>{2 + 2 + 2, 2 + 2 + 2}));
  (x * 1.0).backward(ones({2}, DType::F64));
  EXPECT_EQ(calls_x, 2);
  EXPECT_EQ(calls_w, 1);  // not in the second graph
  EXPECT_EQ(seen, (std::vector<double>{7, 7}));
  Tensor nl = x * 2.0;
  EXPECT_THAT(error_of([&] { nl.register_grad_hook([](const Tensor&) {}); }), HasSubstr("only leaves"));
}

TEST(Engine, HooksFireNewestLayerFirst) {
  // Two "layers": the leaf used last in forward gets its gradient first - the order data
  // parallelism relies on to start reducing early.
  Tensor w1 = leaf({1}), w2 = leaf({1});
  std::vector<int> order;
  w1.register_grad_hook([&](const Tensor&) { order.push_back(1); });
  w2.register_grad_hook([&](const Tensor&) { order.push_back(2); });
  Tensor x = from_vector<double>({3}, {1});
  Tensor h = x * w1;
  Tensor y = (h * h) * w2;
  y.backward();
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

TEST(Engine, SavedTensorsAreFreedAfterBackwardUnlessRetained) {
  Tensor a = leaf({1, 2, 3}), b = leaf({4, 5, 6});
  Tensor c = a * b;  // saves a and b
  EXPECT_EQ(a.storage().use_count(), 2);
  c.backward(ones({3}, DType::F64), /*retain_graph=*/true);
  EXPECT_EQ(a.storage().use_count(), 2);
  c.backward(ones({3}, DType::F64));
  EXPECT_EQ(a.storage().use_count(), 1);
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{8, 10, 12}));
  EXPECT_THAT(error_of([&] { c.backward(ones({3}, DType::F64)); }), HasSubstr("retain_graph"));
}

TEST(Engine, MultipleRootsAndBroadcastGradients) {
  Tensor x = leaf({1, 2, 3});
  Tensor bias = from_vector<double>({0.5}, {1});
  bias.set_requires_grad(true);
  Tensor y1 = x + bias;  // bias broadcast over 3 elements
  Tensor y2 = x * 2.0;
  autograd::backward({y1, y2}, {ones({3}, DType::F64), ones({3}, DType::F64)});
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 3, 3}));
  EXPECT_EQ(bias.grad().to_vector<double>(), (std::vector<double>{3}));
}

TEST(Gradcheck, CatchesAWrongGradient) {
  // A node whose backward is deliberately off by 1%: gradcheck must flag it.
  struct BadScale final : autograd::Node {
    const char* name() const override { return "BadScale"; }
    autograd::tensor_list apply(autograd::tensor_list&& g) override {
      return {kernels_scale(g[0], 2.02)};
    }
    static Tensor kernels_scale(const Tensor& t, double s) {
      NoGradGuard ng;
      return mul(t, s);
    }
  };
  auto f = [](const std::vector<Tensor>& in) {
    Tensor out;
    {
      NoGradGuard ng;
      out = mul(in[0], 2.0);
    }
    auto node = std::make_shared<BadScale>();
    autograd::set_history(node, {in[0]}, {out});
    return out;
  };
  Tensor x = randn({4}, DType::F64);
  x.set_requires_grad(true);
  auto r = autograd::gradcheck(f, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("analytic"));
  auto good = autograd::gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], 2.0); }, {x});
  EXPECT_TRUE(good.ok) << good.message;
}
