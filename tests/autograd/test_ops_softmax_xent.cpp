// Gradients of softmax, log_softmax and cross_entropy by finite differences (float64): every
// dim, size-1 dims, strided logits, ignore_index, every reduction, the all-ignored case.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/softmax_xent.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;
using ::testing::HasSubstr;

namespace {
Tensor param(const Shape& s, Generator& g, double lo = -3, double hi = 3) {
  Tensor t = rand(s, DType::F64, &g, lo, hi);
  t.set_requires_grad(true);
  return t;
}
Tensor strided_param(const Shape& s, Generator& g) {
  Tensor base = rand({s[1], s[0]}, DType::F64, &g, -3, 3);
  Tensor t;
  {
    NoGradGuard ng;
    t = base.t();
  }
  t.set_requires_grad(true);
  return t;
}
}  // namespace

// gradcheck tolerances: its defaults (atol 1e-6, rtol 1e-4, step 1e-6).
TEST(SoftmaxGrad, EveryDimWithSizeOneDims) {
  Generator g(1);
  for (Shape s : {Shape{2, 3, 4}, Shape{1, 4, 1}, Shape{5}, Shape{}}) {
    int64_t nd = std::max<int64_t>(int64_t(s.size()), 1);
    for (int64_t dim = -nd; dim < nd; ++dim) {
      Tensor x = param(s, g);
      auto r = gradcheck([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {x});
      EXPECT_TRUE(r.ok) << "softmax " << shape_str(s) << " dim " << dim << ": " << r.message;
      r = gradcheck([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {x});
      EXPECT_TRUE(r.ok) << "log_softmax " << shape_str(s) << " dim " << dim << ": " << r.message;
    }
  }
}

TEST(SoftmaxGrad, StridedInput) {
  Generator g(2);
  Tensor x = strided_param({4, 5}, g);
  for (int64_t dim : {0, 1}) {
    auto r = gradcheck([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {x});
    EXPECT_TRUE(r.ok) << "softmax dim " << dim << ": " << r.message;
    r = gradcheck([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {x});
    EXPECT_TRUE(r.ok) << "log_softmax dim " << dim << ": " << r.message;
  }
}

TEST(CrossEntropyGrad, EveryReductionWithIgnoredRows) {
  Generator g(3);
  Tensor logits = param({6, 5}, g);
  Tensor targets = from_vector<int64_t>({0, -100, 4, 2, -100, 1}, {6});
  for (LossReduction red : {LossReduction::Mean, LossReduction::Sum, LossReduction::None}) {
    auto r = gradcheck(
        [red](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], -100, red); }, {logits, targets});
    EXPECT_TRUE(r.ok) << "reduction " << int(red) << ": " << r.message;
  }
  // i32 targets and a different ignore_index.
  Tensor t32 = from_vector<int32_t>({3, 3, 0, 2, 1, 3}, {6});
  auto r = gradcheck([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], 3); }, {logits, t32});
  EXPECT_TRUE(r.ok) << "ignore_index 3: " << r.message;
}

TEST(CrossEntropyGrad, LeadingDimsSizeOneDimsAndStridedLogits) {
  Generator g(4);
  Tensor l3 = param({2, 1, 4}, g);
  Tensor t3 = from_vector<int64_t>({3, 0}, {2, 1});
  auto r = gradcheck([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); }, {l3, t3});
  EXPECT_TRUE(r.ok) << "3-d: " << r.message;
  Tensor l1 = param({1, 1}, g);  // one row, one class: loss 0, gradient 0
  Tensor t1 = from_vector<int64_t>({0}, {1});
  r = gradcheck([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); }, {l1, t1});
  EXPECT_TRUE(r.ok) << "1x1: " << r.message;
  Tensor ls = strided_param({5, 3}, g);  // (5, 3), class dim strided
  Tensor ts = from_vector<int64_t>({2, 0, -100, 1, 1}, {5});
  r = gradcheck([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], -100, LossReduction::None); },
                {ls, ts});
  EXPECT_TRUE(r.ok) << "strided: " << r.message;
}

TEST(CrossEntropyGrad, AllIgnoredIsZeroWithZeroGradient) {
  Tensor logits = randn({3, 4}, DType::F64);
  logits.set_requires_grad(true);
  Tensor targets = full({3}, -100, DType::I64);
  Tensor loss = cross_entropy(logits, targets);
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  EXPECT_EQ(logits.grad().to_vector<double>(), std::vector<double>(12, 0.0));
}

TEST(CrossEntropyGrad, AgreesWithLogSoftmaxAndHugeLogitsStayFinite) {
  Generator g(5);
  Tensor logits = param({4, 7}, g);
  std::vector<int64_t> tv = {6, 0, 3, 3};
  Tensor targets = from_vector<int64_t>(tv, {4});
  std::vector<double> lsm = log_softmax(logits).to_vector<double>();
  double ref = 0;
  for (int i = 0; i < 4; ++i) ref -= lsm[size_t(i * 7 + tv[size_t(i)])] / 4;
  EXPECT_NEAR(cross_entropy(logits, targets).item(), ref, 1e-14);
  // Logits of magnitude 1e4: the loss and its gradient are finite and the gradient rows
  // sum to 0.
  Tensor big;
  {
    NoGradGuard ng;
    big = randn({4, 7}, DType::F64, &g, 0.0, 1e4);
  }
  big.set_requires_grad(true);
  Tensor loss = cross_entropy(big, targets);
  EXPECT_TRUE(std::isfinite(loss.item()));
  loss.backward();
  std::vector<double> d = big.grad().to_vector<double>();
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int j = 0; j < 7; ++j) {
      EXPECT_TRUE(std::isfinite(d[size_t(i * 7 + j)]));
      s += d[size_t(i * 7 + j)];
    }
    EXPECT_NEAR(s, 0.0, 1e-15);
  }
}

TEST(CrossEntropyGrad, NodesAndErrors) {
  Generator g(6);
  Tensor logits = param({2, 3}, g);
  Tensor targets = from_vector<int64_t>({0, 2}, {2});
  Tensor loss = cross_entropy(logits, targets);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_STREQ(loss.grad_fn()->name(), "CrossEntropyBackward");
  EXPECT_EQ(loss.grad_fn()->next_edges.size(), 1u);
  EXPECT_STREQ(softmax(logits).grad_fn()->name(), "SoftmaxBackward");
  EXPECT_STREQ(log_softmax(logits).grad_fn()->name(), "LogSoftmaxBackward");
  try {
    cross_entropy(logits, from_vector<int64_t>({0, 3}, {2}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cross_entropy"));
    EXPECT_THAT(e.what(), HasSubstr("target 3"));
    EXPECT_THAT(e.what(), HasSubstr("3 classes"));
  }
}

// cross_entropy's backward uses the dlogits its forward wrote (the fused kernel): the gradient
// must equal the separate backward kernel's for the same upstream gradient, whether that is
// exactly 1 (returned as is), another scalar (loss * 0.25), or one value per row (None).
TEST(CrossEntropyGrad, FusedGradientEqualsSeparateBackwardKernel) {
  Generator g(7);
  Tensor targets = from_vector<int64_t>({4, -100, 0, 2, 9, -100, 1}, {7});
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-14 : 1e-7;
    for (LossReduction red : {LossReduction::Mean, LossReduction::Sum, LossReduction::None}) {
      for (double upstream : {1.0, 0.25}) {
        const std::string what = str(dtype_name(dt), " reduction ", int(red), " upstream ", upstream);
        Tensor logits;
        {
          NoGradGuard ng;
          logits = randn({7, 10}, dt, &g, 0.0, 2.0);
        }
        logits.set_requires_grad(true);
        Tensor loss = cross_entropy(logits, targets, -100, red);
        // None: a different gradient per row (and the upstream factor).
        Tensor row_grad = red == LossReduction::None ? rand({7}, dt, &g, 0.5, 2.0) * upstream
                                                     : full({}, upstream, dt);
        if (red == LossReduction::None)
          loss.backward(row_grad);
        else
          (loss * upstream).backward();
        kernels::CrossEntropyForward f;
        {
          NoGradGuard ng;
          f = kernels::cross_entropy_forward(logits.detach(), targets, -100, red);
        }
        const double scale = red == LossReduction::Mean ? 1.0 / double(f.count) : 1.0;
        std::vector<double> want =
            kernels::cross_entropy_backward(row_grad.detach(), logits.detach(), targets, f.stats, -100, scale)
                .to_vector<double>();
        std::vector<double> got = logits.grad().to_vector<double>();
        ASSERT_EQ(got.size(), want.size()) << what;
        for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << what << " at " << i;
      }
    }
  }
}

// The saved dlogits are handed out as the gradient when the upstream gradient is 1: a second
// backward through a retained graph must see them unchanged, and a freed graph must fail.
TEST(CrossEntropyGrad, RetainedGraphGivesTheSameGradientTwice) {
  Generator g(8);
  Tensor logits = param({3, 5}, g);
  Tensor targets = from_vector<int64_t>({1, 4, 0}, {3});
  Tensor loss = cross_entropy(logits, targets);
  loss.backward(Tensor(), /*retain_graph=*/true);
  std::vector<double> first = logits.grad().to_vector<double>();
  loss.backward();
  std::vector<double> second = logits.grad().to_vector<double>();
  ASSERT_EQ(second.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_NEAR(second[i], 2 * first[i], 1e-15) << i;
  EXPECT_THROW(loss.backward(), Error);
  // Without requires-grad no node is recorded.
  Tensor plain = randn({3, 5}, DType::F64);
  EXPECT_EQ(cross_entropy(plain, targets).grad_fn(), nullptr);
}

// None with a single row (0-dim targets): the gradient of a 0-dim loss takes the scalar path.
TEST(CrossEntropyGrad, NoneReductionOfOneRow) {
  Generator g(9);
  Tensor logits = param({6}, g);
  Tensor target = from_vector<int64_t>({2}, {});
  auto r = gradcheck(
      [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], -100, LossReduction::None); },
      {logits, target});
  EXPECT_TRUE(r.ok) << r.message;
}

// scale multiplies the loss inside the op: value and gradient are scale times the unscaled
// ones for every reduction, also with an upstream gradient other than 1, and gradcheck holds.
TEST(CrossEntropyGrad, ScaleMultipliesLossAndGradient) {
  Generator g(10);
  Tensor targets = from_vector<int64_t>({3, -100, 0, 5, 1}, {5});
  for (LossReduction red : {LossReduction::Mean, LossReduction::Sum, LossReduction::None}) {
    for (double upstream : {1.0, 0.5}) {
      const std::string what = str("reduction ", int(red), " upstream ", upstream);
      const double s = 0.375;
      Tensor a = param({5, 7}, g), b;
      {
        NoGradGuard ng;
        b = a.detach().clone();
      }
      b.set_requires_grad(true);
      Tensor la = cross_entropy(a, targets, -100, red, s), lb = cross_entropy(b, targets, -100, red);
      std::vector<double> va = la.detach().to_vector<double>(), vb = lb.detach().to_vector<double>();
      ASSERT_EQ(va.size(), vb.size()) << what;
      for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], s * vb[i], 1e-14) << what << " loss " << i;
      Tensor grad = full(la.shape(), upstream, DType::F64);
      la.backward(grad);
      lb.backward(grad);
      std::vector<double> ga = a.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
      for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(ga[i], s * gb[i], 1e-15) << what << " grad " << i;
    }
  }
  Tensor logits = param({4, 6}, g);
  Tensor t4 = from_vector<int64_t>({1, 5, -100, 0}, {4});
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t4, -100, LossReduction::Mean, 2.5); },
                     {logits});
  EXPECT_TRUE(r.ok) << r.message;
  Tensor bad = param({2, 3}, g);
  EXPECT_THROW(cross_entropy(bad, from_vector<int64_t>({0, 1}, {2}), -100, LossReduction::Mean, NAN), Error);
}
