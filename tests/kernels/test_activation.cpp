// Activation kernels (SiLU, sigmoid, softplus, SwiGLU) against plain float64 definitions,
// including extreme inputs, strided views, multi-threaded sizes and bad inputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <functional>

#include "core/rng.h"
#include "kernels/activation.h"
#include "tests/test_util.h"

using namespace hymba;
using namespace hymba::kernels;
using ::testing::HasSubstr;

namespace {

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu_ref(double x) { return x * sigmoid_ref(x); }
double softplus_ref(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
// Derivatives from the definitions, written independently of the kernels' rearrangements.
double dsigmoid_ref(double x) { return sigmoid_ref(x) * sigmoid_ref(-x); }
double dsilu_ref(double x) { return sigmoid_ref(x) + x * dsigmoid_ref(x); }
double dsoftplus_ref(double x) { return x > 20.0 ? 1.0 : std::exp(x) / (1.0 + std::exp(x)); }

// Tolerances: f64 within 1e-14 relative, f32 within 1e-6 relative (a few ulp), plus an
// absolute floor scaled by `mag` (the size of the terms that cancel in the result) and, for
// f32, the resolution of subnormal intermediates (1.4e-45, times at most |x| ~ 100).
double tol(DType dt, double ref, double mag) {
  return dt == DType::F64 ? 1e-14 * std::fabs(ref) + 1e-15 * mag : 1e-6 * std::fabs(ref) + 2e-7 * mag + 1e-42;
}

// Inputs covering the interesting ranges: random, saturating, around the softplus
// threshold, and exact zeros.
std::vector<double> special_values() {
  return {0.0,   -0.0, 1e-8,  -1e-8, 0.5,   -0.5,   1.0,    -1.0,  -1.2785, 5.0,   -5.0,   15.0, -15.0,
          19.99, 20.0, 20.01, 25.0,  -20.0, -25.0,  30.0,   -30.0, 80.0,    -80.0, 87.5,   -87.5, 88.5,
          -88.5, 100,  -100,  -104,  1e4,   -1e4,   3.4e38, -3.4e38};
}

Tensor make_input(DType dt, Generator& g, int64_t random_count) {
  std::vector<double> v = special_values();
  Tensor r = randn({random_count}, DType::F64, &g, 0.0, 4.0);
  for (double x : r.to_vector<double>()) v.push_back(x);
  return from_vector<double>(v, {int64_t(v.size())}).to(dt);
}

using Unary = std::function<Tensor(const Tensor&)>;
using UnaryGrad = std::function<Tensor(const Tensor&, const Tensor&)>;

struct UnaryCase {
  const char* name;
  Unary fwd;
  UnaryGrad bwd;
  double (*ref)(double);
  double (*dref)(double);
};

std::vector<UnaryCase> unary_cases() {
  return {{"silu", silu_forward, silu_backward, silu_ref, dsilu_ref},
          {"sigmoid", sigmoid_forward, sigmoid_backward, sigmoid_ref, dsigmoid_ref},
          {"softplus", softplus_forward, softplus_backward, softplus_ref, dsoftplus_ref}};
}

}  // namespace

TEST(ActivationKernels, ExpNonposMatchesExpToTwoUlp) {
  // The vectorizable f32 exp used by every kernel here, swept over its whole domain.
  std::vector<float> xs;
  for (int i = 0; i <= 200000; ++i) xs.push_back(float(-87.0 * i / 200000.0));
  for (float x : {1e-30f, -1e-30f, -1e-7f, -0.34657f, -0.34658f, -87.33f, -87.34f}) xs.push_back(x);
  double worst = 0;
  for (float x : xs) {
    double ref = std::exp(double(x));
    worst = std::max(worst, std::fabs(cpu::exp_nonpos(x) - ref) / ref);
  }
  EXPECT_LT(worst, 2.5e-7);  // 2 ulp of float is 2.4e-7 relative
  // Subnormal results underflow gradually: within half a subnormal step plus 2 ulp.
  for (int i = 0; i <= 2000; ++i) {
    float x = float(-87.0 - 17.0 * i / 2000.0);
    double ref = std::exp(double(x));
    ASSERT_NEAR(cpu::exp_nonpos(x), ref, 2.5e-7 * ref + 1.5e-45) << x;
  }
  for (float x : {-104.5f, -1e4f, -FLT_MAX, -INFINITY}) EXPECT_EQ(cpu::exp_nonpos(x), 0.0f) << x;
  EXPECT_EQ(cpu::exp_nonpos(0.0f), 1.0f);
  EXPECT_TRUE(std::isnan(cpu::exp_nonpos(NAN)));
}

TEST(ActivationKernels, UnaryForwardMatchesFloat64Definition) {
  Generator g(1);
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = make_input(dt, g, 2000);
    std::vector<double> xv = x.to_vector<double>();
    for (const auto& c : unary_cases()) {
      Tensor y = c.fwd(x);
      ASSERT_EQ(y.shape(), x.shape());
      ASSERT_EQ(y.dtype(), dt);
      std::vector<double> yv = y.to_vector<double>();
      for (size_t i = 0; i < xv.size(); ++i) {
        double r = c.ref(xv[i]);
        ASSERT_TRUE(std::isfinite(yv[i]) || std::isinf(r)) << c.name << "(" << xv[i] << ") = " << yv[i];
        if (std::isinf(r)) continue;
        ASSERT_NEAR(yv[i], r, tol(dt, r, 0.0))
            << c.name << "(" << xv[i] << ") " << dtype_name(dt);
      }
    }
  }
}

TEST(ActivationKernels, SoftplusThresholdIsExactlyTwenty) {
  Tensor x = from_vector<double>({20.0, std::nextafter(20.0, 30.0), 1000.0}, {3});
  std::vector<double> y = softplus_forward(x).to_vector<double>();
  EXPECT_DOUBLE_EQ(y[0], std::log1p(std::exp(20.0)));  // 20 itself is not above the threshold
  EXPECT_EQ(y[1], std::nextafter(20.0, 30.0));       // identity above it
  EXPECT_EQ(y[2], 1000.0);
  std::vector<double> d = softplus_backward(ones({3}, DType::F64), x).to_vector<double>();
  EXPECT_NEAR(d[0], sigmoid_ref(20.0), 1e-15);
  EXPECT_EQ(d[1], 1.0);
}

TEST(ActivationKernels, UnaryBackwardMatchesFloat64Derivative) {
  Generator g(2);
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = make_input(dt, g, 2000);
    // Keep x where the derivative is finite in double: |x| up to 1e4 (3.4e38 overflows
    // x * sigmoid' in the reference, not in the kernel).
    std::vector<double> xv = x.to_vector<double>();
    for (double& v : xv) v = std::max(-1e4, std::min(1e4, v));
    x = from_vector<double>(xv, x.shape()).to(dt);
    xv = x.to_vector<double>();
    Tensor dy = randn(x.shape(), DType::F64, &g).to(dt);
    std::vector<double> dyv = dy.to_vector<double>();
    for (const auto& c : unary_cases()) {
      std::vector<double> dx = c.bwd(dy, x).to_vector<double>();
      for (size_t i = 0; i < xv.size(); ++i) {
        double r = dyv[i] * c.dref(xv[i]);
        // Only silu' cancels (near its root x = -1.28): allow for that term's size.
        double mag = c.dref == dsilu_ref ? std::fabs(dyv[i]) * std::fabs(xv[i]) * dsigmoid_ref(xv[i]) : 0.0;
        ASSERT_NEAR(dx[i], r, tol(dt, r, mag))
            << c.name << "'(" << xv[i] << ") " << dtype_name(dt);
      }
    }
  }
}

TEST(ActivationKernels, StridedAndLargeInputsMatchContiguous) {
  Generator g(3);
  for (DType dt : {DType::F32, DType::F64}) {
    // Large enough to split across threads; transposed and sliced views take the strided path.
    Tensor base = randn({200, 180}, dt, &g, 0.0, 3.0);
    Tensor views[] = {base.t(), base.slice(1, 0, 180, 3), base.slice(0, 1, 199, 2).t()};
    for (const Tensor& v : views) {
      Tensor vc = v.contiguous();
      Tensor dy = randn(v.shape(), dt, &g);
      for (const auto& c : unary_cases()) {
        EXPECT_EQ(c.fwd(v).to_vector<double>(), c.fwd(vc).to_vector<double>()) << c.name;
        EXPECT_EQ(c.bwd(dy.t().contiguous().t(), v).to_vector<double>(), c.bwd(dy, vc).to_vector<double>()) << c.name;
      }
      Tensor u = randn(v.shape(), dt, &g);
      EXPECT_EQ(swiglu_forward(v, u).to_vector<double>(), swiglu_forward(vc, u).to_vector<double>());
      auto [g1, u1] = swiglu_backward(dy, v, u);
      auto [g2, u2] = swiglu_backward(dy, vc, u);
      EXPECT_EQ(g1.to_vector<double>(), g2.to_vector<double>());
      EXPECT_EQ(u1.to_vector<double>(), u2.to_vector<double>());
    }
  }
}

TEST(ActivationKernels, SwigluForwardAndBackwardMatchDefinition) {
  Generator g(4);
  for (DType dt : {DType::F64, DType::F32}) {
    for (Shape s : {Shape{7}, Shape{3, 1, 5}, Shape{1, 1}, Shape{64, 130}}) {
      Tensor gate = randn(s, dt, &g, 0.0, 4.0), up = randn(s, dt, &g), dy = randn(s, dt, &g);
      std::vector<double> gv = gate.to_vector<double>(), uv = up.to_vector<double>(), dv = dy.to_vector<double>();
      std::vector<double> y = swiglu_forward(gate, up).to_vector<double>();
      auto [dg, du] = swiglu_backward(dy, gate, up);
      std::vector<double> dgv = dg.to_vector<double>(), duv = du.to_vector<double>();
      for (size_t i = 0; i < gv.size(); ++i) {
        double ry = silu_ref(gv[i]) * uv[i];
        ASSERT_NEAR(y[i], ry, tol(dt, ry, 0.0)) << i;
        double rdg = dv[i] * uv[i] * dsilu_ref(gv[i]), rdu = dv[i] * silu_ref(gv[i]);
        ASSERT_NEAR(dgv[i], rdg, tol(dt, rdg, std::fabs(dv[i] * uv[i] * gv[i]) * dsigmoid_ref(gv[i]))) << i;
        ASSERT_NEAR(duv[i], rdu, tol(dt, rdu, 0.0)) << i;
      }
    }
  }
}

TEST(ActivationKernels, PackedSwigluEqualsSplitSwiglu) {
  Generator g(5);
  for (DType dt : {DType::F64, DType::F32}) {
    for (Shape s : {Shape{2, 3, 10}, Shape{1, 2}, Shape{20, 2048}}) {
      Tensor x = randn(s, dt, &g, 0.0, 3.0);
      int64_t h = s.back() / 2;
      Tensor gate = x.narrow(-1, 0, h), up = x.narrow(-1, h, h);
      Tensor y = swiglu_packed_forward(x);
      Shape ys = s;
      ys.back() = h;
      ASSERT_EQ(y.shape(), ys);
      EXPECT_EQ(y.to_vector<double>(), swiglu_forward(gate, up).to_vector<double>());
      Tensor dy = randn(ys, dt, &g);
      Tensor dx = swiglu_packed_backward(dy, x);
      ASSERT_EQ(dx.shape(), s);
      auto [dg, du] = swiglu_backward(dy, gate, up);
      EXPECT_EQ(dx.narrow(-1, 0, h).to_vector<double>(), dg.to_vector<double>());
      EXPECT_EQ(dx.narrow(-1, h, h).to_vector<double>(), du.to_vector<double>());
      // A non-contiguous packed input gives the same numbers.
      Tensor xt = x.transpose(0, 1).contiguous().transpose(0, 1);
      EXPECT_EQ(swiglu_packed_forward(xt).to_vector<double>(), y.to_vector<double>());
    }
  }
}

TEST(ActivationKernels, EmptyTensors) {
  Tensor x = zeros({0, 5});
  EXPECT_EQ(silu_forward(x).shape(), Shape({0, 5}));
  EXPECT_EQ(std::get<0>(swiglu_backward(x, x, x)).shape(), Shape({0, 5}));
  EXPECT_EQ(swiglu_packed_forward(zeros({3, 0})).shape(), Shape({3, 0}));
}

namespace {
using testutil::error_of;
}  // namespace

TEST(ActivationKernels, BadInputsNameTheOpAndShapes) {
  Tensor a = zeros({2, 3}), b = zeros({3, 2});
  std::string m = error_of([&] { swiglu_forward(a, b); });
  EXPECT_THAT(m, HasSubstr("swiglu"));
  EXPECT_THAT(m, HasSubstr("[2, 3]"));
  EXPECT_THAT(m, HasSubstr("[3, 2]"));
  m = error_of([&] { swiglu_forward(a, zeros({2, 3}, DType::F64)); });
  EXPECT_THAT(m, HasSubstr("swiglu"));
  EXPECT_THAT(m, HasSubstr("f32"));
  EXPECT_THAT(m, HasSubstr("f64"));
  m = error_of([&] { silu_backward(zeros({2, 4}), a); });
  EXPECT_THAT(m, HasSubstr("silu_backward"));
  EXPECT_THAT(m, HasSubstr("[2, 4]"));
  EXPECT_THAT(m, HasSubstr("[2, 3]"));
  m = error_of([&] { sigmoid_forward(zeros({2}, DType::I32)); });
  EXPECT_THAT(m, HasSubstr("sigmoid"));
  EXPECT_THAT(m, HasSubstr("i32"));
  m = error_of([&] { swiglu_packed_forward(zeros({4, 5})); });
  EXPECT_THAT(m, HasSubstr("swiglu_packed"));
  EXPECT_THAT(m, HasSubstr("[4, 5]"));
  m = error_of([&] { swiglu_packed_backward(zeros({4, 3}), zeros({4, 4})); });
  EXPECT_THAT(m, HasSubstr("swiglu_packed_backward"));
  EXPECT_THAT(m, HasSubstr("[4, 3]"));
  EXPECT_THAT(m, HasSubstr("[4, 2]"));
}
