// Gradients of the activations and SwiGLU by finite differences (float64), on size-1 dims,
// strided inputs and both sides of the softplus threshold.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/ops/activation.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;
using ::testing::HasSubstr;

namespace {
Tensor param(const Shape& s, Generator& g, double lo = -4, double hi = 4) {
  Tensor t = rand(s, DType::F64, &g, lo, hi);
  t.set_requires_grad(true);
  return t;
}
// A transposed (non-contiguous) leaf of shape s (2-d).
Tensor strided_param(const Shape& s, Generator& g, double lo = -4, double hi = 4) {
  Tensor base = rand({s[1], s[0]}, DType::F64, &g, lo, hi);
  Tensor t;
  {
    NoGradGuard ng;
    t = base.t();
  }
  t.set_requires_grad(true);
  return t;
}
using Fn = std::function<Tensor(const Tensor&)>;
std::vector<std::pair<const char*, Fn>> unary_ops() {
  return {{"silu", [](const Tensor& x) { return silu(x); }},
          {"sigmoid", [](const Tensor& x) { return sigmoid(x); }},
          {"softplus", [](const Tensor& x) { return softplus(x); }}};
}
}  // namespace

// gradcheck tolerances: its defaults (atol 1e-6, rtol 1e-4, step 1e-6).
TEST(ActivationGrad, UnaryOpsOnSizeOneDimsAndStridedInputs) {
  Generator g(1);
  for (auto& [name, f] : unary_ops()) {
    for (Shape s : {Shape{3, 4}, Shape{1, 5, 1}, Shape{1}, Shape{}}) {
      Tensor x = param(s, g);
      auto r = gradcheck([&f](const std::vector<Tensor>& in) { return f(in[0]); }, {x});
      EXPECT_TRUE(r.ok) << name << " " << shape_str(s) << ": " << r.message;
    }
    Tensor xt = strided_param({4, 3}, g);
    auto r = gradcheck([&f](const std::vector<Tensor>& in) { return f(in[0]); }, {xt});
    EXPECT_TRUE(r.ok) << name << " strided: " << r.message;
  }
}

TEST(ActivationGrad, SoftplusOnBothSidesOfTheThreshold) {
  // Away from the kink at 20 (where softplus switches to the identity, a 2e-9 jump): the
  // identity branch and the saturated branch both differentiate correctly.
  Tensor x = from_vector<double>({-30, -19, -1, 0.5, 19, 21, 25, 40}, {8});
  x.set_requires_grad(true);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return softplus(in[0]); }, {x});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(ActivationGrad, SwigluBothInputsEitherAloneAndStrided) {
  Generator g(2);
  for (Shape s : {Shape{3, 4}, Shape{2, 1, 3}, Shape{1}}) {
    Tensor gate = param(s, g), up = param(s, g);
    auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); }, {gate, up});
    EXPECT_TRUE(r.ok) << shape_str(s) << ": " << r.message;
  }
  Tensor gate = strided_param({3, 5}, g), up = strided_param({3, 5}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); }, {gate, up});
  EXPECT_TRUE(r.ok) << "strided: " << r.message;
  Tensor cg = rand({2, 3}, DType::F64, &g, -4, 4), pu = param({2, 3}, g);
  r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); }, {cg, pu});
  EXPECT_TRUE(r.ok) << "up only: " << r.message;
  EXPECT_FALSE(cg.grad().defined());
  Tensor pg = param({2, 3}, g), cu = rand({2, 3}, DType::F64, &g, -4, 4);
  r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); }, {pg, cu});
  EXPECT_TRUE(r.ok) << "gate only: " << r.message;
}

TEST(ActivationGrad, PackedSwiglu) {
  Generator g(3);
  for (Shape s : {Shape{3, 8}, Shape{1, 2}, Shape{2, 1, 6}}) {
    Tensor x = param(s, g);
    auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu_packed(in[0]); }, {x});
    EXPECT_TRUE(r.ok) << shape_str(s) << ": " << r.message;
  }
  Tensor xt = strided_param({5, 4}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu_packed(in[0]); }, {xt});
  EXPECT_TRUE(r.ok) << "strided: " << r.message;
}

TEST(ActivationGrad, SharedInputAccumulatesThroughSeveralOps) {
  Generator g(4);
  Tensor x = param({2, 5}, g);
  // x feeds several nodes; the engine sums their gradients.
  auto r = gradcheck([](const std::vector<Tensor>& in) { return swiglu(silu(in[0]), softplus(in[0])); }, {x});
  EXPECT_TRUE(r.ok) << r.message;
  auto r2 = gradcheck([](const std::vector<Tensor>& in) { return swiglu(silu(in[0]), sigmoid(softplus(in[0]))); },
                      {x});
  EXPECT_TRUE(r2.ok) << r2.message;
}

TEST(ActivationGrad, NodesAndErrors) {
  Generator g(5);
  Tensor x = param({2, 2}, g);
  EXPECT_STREQ(silu(x).grad_fn()->name(), "SiluBackward");
  EXPECT_STREQ(sigmoid(x).grad_fn()->name(), "SigmoidBackward");
  EXPECT_STREQ(softplus(x).grad_fn()->name(), "SoftplusBackward");
  EXPECT_STREQ(swiglu(x, x).grad_fn()->name(), "SwiGLUBackward");
  try {
    swiglu(zeros({2, 3}), zeros({3, 2}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("swiglu"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[3, 2]"));
  }
}
