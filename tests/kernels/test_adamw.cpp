// AdamW and sum-of-squares kernels against plain float64 definitions, several steps in a row
// (so that bias correction and the moment recurrences are exercised), on contiguous and
// strided tensors, plus determinism across thread counts and bad inputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/adamw.h"
#include "tests/test_util.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

struct RefState {
  std::vector<double> p, m, v;
};

// torch.optim.AdamW, written out for one tensor and one step (1-based `step`).
void ref_adamw(RefState& s, const std::vector<double>& g, double lr, double b1, double b2, double eps, double wd,
               int64_t step) {
  for (size_t i = 0; i < s.p.size(); ++i) {
    s.p[i] = s.p[i] - lr * wd * s.p[i];
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    double mhat = s.m[i] / (1 - std::pow(b1, double(step)));
    double vhat = s.v[i] / (1 - std::pow(b2, double(step)));
    s.p[i] = s.p[i] - lr * mhat / (std::sqrt(vhat) + eps);
  }
}

using testutil::error_of;
using testutil::expect_close;

}  // namespace

TEST(AdamWKernel, SeveralStepsMatchDefinition) {
  Generator gen(11);
  // f64 agrees to rounding; f32 computes in f32 (as on the GPU), so 5 steps of O(lr) updates
  // carry ~1e-6 relative error in the moments and ~1e-7 absolute in the params.
  for (DType dt : {DType::F64, DType::F32}) {
    const double rtol = dt == DType::F64 ? 1e-12 : 2e-5, atol = dt == DType::F64 ? 1e-14 : 1e-6;
    for (double wd : {0.0, 0.1}) {
      for (Shape shape : {Shape{7, 5}, Shape{1}, Shape{3, 1, 4}, Shape{40000}}) {
        Tensor p = randn(shape, dt, &gen), m = zeros(shape, dt), v = zeros(shape, dt);
        RefState ref{p.to_vector<double>(), m.to_vector<double>(), v.to_vector<double>()};
        const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8;
        for (int64_t step = 1; step <= 5; ++step) {
          Tensor g = randn(shape, dt, &gen, 0.0, 0.5);
          kernels::adamw_step(p, g, m, v, lr, b1, b2, eps, wd, step);
          ref_adamw(ref, g.to_vector<double>(), lr, b1, b2, eps, wd, step);
        }
        std::string what = str(dtype_name(dt), " wd=", wd, " ", shape_str(shape));
        expect_close(p.to_vector<double>(), ref.p, rtol, atol, what + " param");
        expect_close(m.to_vector<double>(), ref.m, rtol, atol, what + " exp_avg");
        expect_close(v.to_vector<double>(), ref.v, rtol, atol, what + " exp_avg_sq");
      }
    }
  }
}

TEST(AdamWKernel, FirstStepIsSignTimesLr) {
  // With bias correction, step 1 moves every coordinate by lr * g/|g| (up to eps): a closed
  // form that does not reuse the reference above.
  Tensor p = from_vector<double>({1.0, -2.0, 0.5, 3.0}, {4});
  Tensor g = from_vector<double>({0.3, -7.0, 1e-3, -0.25}, {4});
  Tensor m = zeros({4}, DType::F64), v = zeros({4}, DType::F64);
  const double lr = 0.01;
  kernels::adamw_step(p, g, m, v, lr, 0.9, 0.999, 0.0, 0.0, 1);
  std::vector<double> expect{1.0 - lr, -2.0 + lr, 0.5 - lr, 3.0 + lr};
  expect_close(p.to_vector<double>(), expect, 1e-14, 1e-15, "first step");
}

TEST(AdamWKernel, ZeroGradientOnlyDecays) {
  Tensor p = from_vector<double>({2.0, -4.0}, {2});
  Tensor g = zeros({2}, DType::F64), m = zeros({2}, DType::F64), v = zeros({2}, DType::F64);
  kernels::adamw_step(p, g, m, v, 0.1, 0.9, 0.95, 1e-8, 0.5, 3);
  // p * (1 - lr * wd) = p * 0.95; m and v stay 0, so the Adam term is exactly 0.
  auto got = p.to_vector<double>();
  EXPECT_DOUBLE_EQ(got[0], 1.9);
  EXPECT_DOUBLE_EQ(got[1], -3.8);
}

TEST(AdamWKernel, StridedOperandsMatchContiguous) {
  Generator gen(12);
  for (DType dt : {DType::F64, DType::F32}) {
    // Transposed param and exp_avg, a sliced grad, a contiguous exp_avg_sq.
    Tensor p_base = randn({6, 5}, dt, &gen);
    Tensor g_base = randn({5, 12}, dt, &gen);
    Tensor m_base = rand({6, 5}, dt, &gen, 0.0, 0.1);
    Tensor v = rand({5, 6}, dt, &gen, 0.0, 0.1);
    Tensor p = p_base.t(), m = m_base.t(), g = g_base.slice(1, 0, 12, 2);
    ASSERT_FALSE(p.is_contiguous());
    ASSERT_FALSE(g.is_contiguous());
    Tensor pc = p.contiguous(), gc = g.contiguous(), mc = m.contiguous(), vc = v.clone();
    kernels::adamw_step(p, g, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1, 4);
    kernels::adamw_step(pc, gc, mc, vc, 1e-2, 0.9, 0.95, 1e-8, 0.1, 4);
    // Same per-element arithmetic in both paths: identical results.
    EXPECT_EQ(p.to_vector<double>(), pc.to_vector<double>()) << dtype_name(dt);
    EXPECT_EQ(m.to_vector<double>(), mc.to_vector<double>()) << dtype_name(dt);
    EXPECT_EQ(v.to_vector<double>(), vc.to_vector<double>()) << dtype_name(dt);
  }
}

TEST(AdamWKernel, BadInputsNameTheOpAndShapes) {
  Tensor p = zeros({3, 4}), g = zeros({3, 4}), m = zeros({3, 4}), v = zeros({3, 4});
  auto msg = error_of([&] { kernels::adamw_step(p, zeros({4, 3}), m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("adamw_step"));
  EXPECT_THAT(msg, HasSubstr("[4, 3]"));
  EXPECT_THAT(msg, HasSubstr("[3, 4]"));
  msg = error_of([&] { kernels::adamw_step(p, g, zeros({3, 4}, DType::F64), v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("adamw_step"));
  EXPECT_THAT(msg, HasSubstr("f64"));
  EXPECT_THAT(msg, HasSubstr("f32"));
  msg = error_of([&] { kernels::adamw_step(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 0); });
  EXPECT_THAT(msg, HasSubstr("step"));
  msg = error_of([&] { kernels::adamw_step(p, g, m, v, 1e-3, 1.0, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("beta1"));
  msg = error_of([&] { kernels::adamw_step(p, g, m, v, -1.0, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("lr"));
  Tensor pi = zeros({3, 4}, DType::I32);
  msg = error_of([&] { kernels::adamw_step(pi, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("i32"));
}

TEST(SumOfSquaresKernel, MatchesDefinitionAndIsThreadCountInvariant) {
  Generator gen(13);
  for (DType dt : {DType::F64, DType::F32}) {
    for (Shape shape : {Shape{0}, Shape{1}, Shape{17, 3}, Shape{70001}}) {
      Tensor x = randn(shape, dt, &gen);
      double ref = 0;
      for (double e : x.to_vector<double>()) ref += e * e;
      const int saved = num_threads();
      set_num_threads(1);
      double one = kernels::sum_of_squares(x);
      set_num_threads(2);
      double two = kernels::sum_of_squares(x);
      set_num_threads(saved);
      // Accumulated in double from exact squares of the stored values: only summation-order
      // rounding separates it from the reference.
      EXPECT_NEAR(one, ref, 1e-12 * std::max(1.0, ref)) << shape_str(shape);
      EXPECT_EQ(one, two) << "thread count changed the sum for " << shape_str(shape);
    }
  }
  // Strided input.
  Tensor base = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_DOUBLE_EQ(kernels::sum_of_squares(base.t().slice(0, 0, 3, 2)), 1 + 16 + 9 + 36.0);  // rows [1, 4], [3, 6]
}

TEST(AdamWKernel, MultiTensorEqualsOneCallPerTensor) {
  Generator gen(14);
  for (DType dt : {DType::F64, DType::F32}) {
    const std::vector<Shape> shapes = {{1}, {3}, {0}, {70001}, {4, 5}};
    std::vector<Tensor> p, g, m, v, p1, m1, v1;
    for (const Shape& s : shapes) {
      p.push_back(randn(s, dt, &gen));
      m.push_back(randn(s, dt, &gen, 0.0, 0.1));
      v.push_back(rand(s, dt, &gen, 0.0, 0.01));
      p1.push_back(p.back().clone());
      m1.push_back(m.back().clone());
      v1.push_back(v.back().clone());
    }
    // One strided parameter: the list form keeps adamw_step's layout rules.
    Tensor pt = randn({5, 4}, dt, &gen).t(), mt = zeros({4, 5}, dt), vt = zeros({4, 5}, dt);
    p.push_back(pt);
    m.push_back(mt);
    v.push_back(vt);
    p1.push_back(pt.contiguous().clone());
    m1.push_back(mt.clone());
    v1.push_back(vt.clone());
    for (int64_t step = 1; step <= 3; ++step) {
      g.clear();
      for (const Tensor& t : p) g.push_back(randn(t.shape(), dt, &gen, 0.0, 0.5));
      kernels::adamw_step_multi(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.1, step);
      for (size_t i = 0; i < p.size(); ++i)
        kernels::adamw_step(p1[i], g[i], m1[i], v1[i], 1e-3, 0.9, 0.999, 1e-8, 0.1, step);
    }
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_EQ(p[i].to_vector<double>(), p1[i].to_vector<double>()) << dtype_name(dt) << " tensor " << i;
      EXPECT_EQ(m[i].to_vector<double>(), m1[i].to_vector<double>()) << dtype_name(dt) << " tensor " << i;
      EXPECT_EQ(v[i].to_vector<double>(), v1[i].to_vector<double>()) << dtype_name(dt) << " tensor " << i;
    }
  }
  // Lists of different lengths, and an element that breaks adamw_step's rules.
  Tensor a = zeros({3}), b = zeros({3});
  auto msg = error_of([&] { kernels::adamw_step_multi({a, b}, {a}, {a, b}, {a, b}, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("adamw_step_multi"));
  EXPECT_THAT(msg, HasSubstr("1 grads"));
  msg = error_of([&] { kernels::adamw_step_multi({a}, {zeros({4})}, {a}, {b}, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1); });
  EXPECT_THAT(msg, HasSubstr("[4]"));
  kernels::adamw_step_multi({}, {}, {}, {}, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1);  // nothing to do
}

TEST(SumOfSquaresKernel, MultiTensorSumsInListOrderSkippingUndefined) {
  Generator gen(15);
  Tensor x = randn({70001}, DType::F32, &gen), y = randn({3, 7}, DType::F64, &gen), z = zeros({0});
  const double want = kernels::sum_of_squares(x) + kernels::sum_of_squares(y) + kernels::sum_of_squares(z);
  EXPECT_EQ(kernels::sum_of_squares_multi({x, Tensor(), y, z}), want);
  EXPECT_EQ(kernels::sum_of_squares_multi({}), 0.0);
  EXPECT_EQ(kernels::sum_of_squares_multi({Tensor()}), 0.0);
  EXPECT_DOUBLE_EQ(kernels::sum_of_squares_multi({from_vector<double>({3, 4}, {2}), from_vector<float>({12}, {1})}),
                   169.0);
}
