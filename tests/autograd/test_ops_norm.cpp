// Gradients of rms_norm by finite differences (float64): size-1 dims, strided inputs,
// either input alone, and the node's bookkeeping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/ops/norm.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;
using ::testing::HasSubstr;

namespace {
Tensor param(const Shape& s, Generator& g, double lo = -2, double hi = 2) {
  Tensor t = rand(s, DType::F64, &g, lo, hi);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

// gradcheck tolerances: its defaults (atol 1e-6, rtol 1e-4, step 1e-6).
TEST(NormGrad, RMSNormOnShapesWithSizeOneDims) {
  Generator g(1);
  for (Shape s : {Shape{3, 5}, Shape{2, 1, 4}, Shape{1, 1}, Shape{4, 1}, Shape{6}, Shape{2, 3, 7}}) {
    for (double eps : {1e-6, 0.3}) {
      Tensor x = param(s, g), w = param({s.back()}, g, 0.5, 1.5);
      auto r = gradcheck([eps](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], eps); }, {x, w});
      EXPECT_TRUE(r.ok) << shape_str(s) << " eps " << eps << ": " << r.message;
    }
  }
}

TEST(NormGrad, RMSNormNonContiguousInputs) {
  Generator g(2);
  Tensor xb = rand({6, 4}, DType::F64, &g, -2, 2), wb = rand({12}, DType::F64, &g, 0.5, 1.5);
  Tensor x, w;
  {
    NoGradGuard ng;
    x = xb.t();                 // (4, 6), rows strided
    w = wb.slice(0, 0, 12, 2);  // (6), stride 2
  }
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-5); }, {x, w});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(NormGrad, RMSNormEitherInputAlone) {
  Generator g(3);
  Tensor x = param({3, 4}, g), w = rand({4}, DType::F64, &g, 0.5, 1.5);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w});
  EXPECT_TRUE(r.ok) << "x only: " << r.message;
  EXPECT_FALSE(w.grad().defined());
  Tensor x2 = rand({3, 4}, DType::F64, &g, -2, 2), w2 = param({4}, g, 0.5, 1.5);
  r = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x2, w2});
  EXPECT_TRUE(r.ok) << "w only: " << r.message;
}

TEST(NormGrad, RecordsOneNodeAndNothingUnderNoGrad) {
  Generator g(4);
  Tensor x = param({2, 3}, g), w = param({3}, g);
  Tensor y = rms_norm(x, w);
  ASSERT_TRUE(y.requires_grad());
  EXPECT_STREQ(y.grad_fn()->name(), "RMSNormBackward");
  EXPECT_EQ(y.grad_fn()->next_edges.size(), 2u);
  {
    NoGradGuard ng;
    EXPECT_FALSE(rms_norm(x, w).requires_grad());
  }
  // f32 parameters get f32 gradients of the right shapes.
  Tensor xf = randn({5, 8}), wf = ones({8});
  xf.set_requires_grad(true);
  wf.set_requires_grad(true);
  rms_norm(xf, wf).backward(ones({5, 8}));
  EXPECT_EQ(xf.grad().shape(), Shape({5, 8}));
  EXPECT_EQ(wf.grad().shape(), Shape({8}));
  EXPECT_EQ(wf.grad().dtype(), DType::F32);
}

TEST(NormGrad, BadInputsNameTheOp) {
  Tensor x = zeros({2, 3}), w = ones({4});
  try {
    rms_norm(x, w);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("rms_norm"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4]"));
  }
}
