// RMSNorm kernels against plain float64 definitions: forward, the backward as an explicit
// Jacobian-vector product, determinism of dw across thread counts, and bad inputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/norm.h"
#include "tests/test_util.h"

using namespace hymba;
using namespace hymba::kernels;
using ::testing::HasSubstr;

namespace {

struct Ref {
  std::vector<double> y, rstd, dx, dw;
};

// Straight from the definition: y_j = x_j * r * w_j with r = (mean(x^2) + eps)^-1/2, and
// dx_k = sum_j dy_j * dy_j/dx_k with dy_j/dx_k = w_j * (r [j == k] - x_j x_k r^3 / D).
Ref reference(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& dy, int64_t d,
              double eps, bool with_dx = true) {
  int64_t rows = int64_t(x.size()) / d;
  Ref r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dw.assign(size_t(d), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const double* xr = &x[size_t(i * d)];
    const double* g = &dy[size_t(i * d)];
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
    double rs = 1.0 / std::sqrt(ss / double(d) + eps);
    r.rstd.push_back(rs);
    for (int64_t j = 0; j < d; ++j) r.y[size_t(i * d + j)] = xr[j] * rs * w[size_t(j)];
    for (int64_t k = 0; k < d && with_dx; ++k) {
      double acc = 0;
      for (int64_t j = 0; j < d; ++j) {
        double jac = w[size_t(j)] * ((j == k ? rs : 0.0) - xr[j] * xr[k] * rs * rs * rs / double(d));
        acc += g[j] * jac;
      }
      r.dx[size_t(i * d + k)] = acc;
    }
    for (int64_t j = 0; j < d; ++j) r.dw[size_t(j)] += g[j] * xr[j] * rs;
  }
  return r;
}

using testutil::error_of;
using testutil::expect_close;

}  // namespace

TEST(NormKernels, ForwardAndBackwardMatchDefinition) {
  Generator g(1);
  for (DType dt : {DType::F64, DType::F32}) {
    // f64 to 1e-12; f32 to 2e-6 relative with an absolute floor for the sums that cancel
    // in dx (terms are O(1) here).
    const double rtol = dt == DType::F64 ? 1e-12 : 2e-6, atol = dt == DType::F64 ? 1e-12 : 2e-6;
    for (Shape s : {Shape{4, 7}, Shape{2, 3, 16}, Shape{1, 1}, Shape{5, 1}, Shape{9}, Shape{3, 1, 64}}) {
      for (double eps : {1e-6, 0.1}) {
        int64_t d = s.back();
        Tensor x = randn(s, dt, &g), w = rand({d}, dt, &g, 0.5, 1.5), dy = randn(s, dt, &g);
        Ref r = reference(x.to_vector<double>(), w.to_vector<double>(), dy.to_vector<double>(), d, eps);
        auto [y, rstd] = rms_norm_forward(x, w, eps);
        Shape rs(s.begin(), s.end() - 1);
        ASSERT_EQ(y.shape(), s);
        ASSERT_EQ(rstd.shape(), rs);
        ASSERT_EQ(rstd.dtype(), dt);
        std::string what = shape_str(s) + " " + dtype_name(dt);
        expect_close(y.to_vector<double>(), r.y, rtol, atol, "y " + what);
        expect_close(rstd.to_vector<double>(), r.rstd, rtol, 0, "rstd " + what);
        auto [dx, dw] = rms_norm_backward(dy, x, w, rstd);
        expect_close(dx.to_vector<double>(), r.dx, rtol, atol, "dx " + what);
        expect_close(dw.to_vector<double>(), r.dw, rtol, atol, "dw " + what);
        // Either gradient alone gives the same numbers.
        auto [dx_only, none_w] = rms_norm_backward(dy, x, w, rstd, true, false);
        auto [none_x, dw_only] = rms_norm_backward(dy, x, w, rstd, false, true);
        EXPECT_FALSE(none_w.defined());
        EXPECT_FALSE(none_x.defined());
        EXPECT_EQ(dx_only.to_vector<double>(), dx.to_vector<double>());
        EXPECT_EQ(dw_only.to_vector<double>(), dw.to_vector<double>());
      }
    }
  }
}

TEST(NormKernels, StatisticsStayAccurateForLargeAndTinyRows) {
  // f32 rows of 1e4-scale values (squares near 1e8) and 1e-20-scale values (squares below
  // f32's normal range): the mean of squares is accumulated in double, so rstd keeps f32
  // precision where a float accumulation would lose it or underflow.
  for (double scale : {1e4, 1e-20}) {
    Generator g(2);
    Tensor x64 = randn({3, 4096}, DType::F64, &g, 0.0, scale);
    Tensor x = x64.to(DType::F32);
    Tensor w = ones({4096});
    auto [y, rstd] = rms_norm_forward(x, w, 0.0);
    Ref r = reference(x.to_vector<double>(), w.to_vector<double>(), x.to_vector<double>(), 4096, 0.0, false);
    expect_close(rstd.to_vector<double>(), r.rstd, 1e-6, 0, "rstd at scale " + std::to_string(scale));
    expect_close(y.to_vector<double>(), r.y, 1e-6, 1e-6, "y at scale " + std::to_string(scale));
  }
}

TEST(NormKernels, NonContiguousInputsMatchContiguous) {
  Generator g(3);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor base = randn({24, 10}, dt, &g);
    Tensor x = base.t();  // (10, 24), last dim strided
    Tensor wbase = randn({48}, dt, &g);
    Tensor w = wbase.slice(0, 0, 48, 2);  // stride 2
    Tensor dy = randn({24, 10}, dt, &g).t();
    auto [y1, r1] = rms_norm_forward(x, w, 1e-6);
    auto [y2, r2] = rms_norm_forward(x.contiguous(), w.contiguous(), 1e-6);
    EXPECT_EQ(y1.to_vector<double>(), y2.to_vector<double>());
    auto [dx1, dw1] = rms_norm_backward(dy, x, w, r1);
    auto [dx2, dw2] = rms_norm_backward(dy.contiguous(), x.contiguous(), w.contiguous(), r2);
    EXPECT_EQ(dx1.to_vector<double>(), dx2.to_vector<double>());
    EXPECT_EQ(dw1.to_vector<double>(), dw2.to_vector<double>());
  }
}

TEST(NormKernels, WeightGradientIsIdenticalForAnyThreadCount) {
  Generator g(4);
  Tensor x = randn({777, 96}), w = randn({96}), dy = randn({777, 96});
  int saved = num_threads();
  std::vector<std::vector<float>> dws, dxs;
  for (int nt : {1, 2, 3, 7}) {
    set_num_threads(nt);
    auto [y, rstd] = rms_norm_forward(x, w, 1e-6);
    auto [dx, dw] = rms_norm_backward(dy, x, w, rstd);
    dws.push_back(dw.to_vector<float>());
    dxs.push_back(dx.to_vector<float>());
  }
  set_num_threads(saved);
  for (size_t i = 1; i < dws.size(); ++i) {
    EXPECT_EQ(dws[i], dws[0]) << "thread count #" << i;
    EXPECT_EQ(dxs[i], dxs[0]) << "thread count #" << i;
  }
  // And it is the right sum (f32 result of a double accumulation).
  Ref r = reference(x.to_vector<double>(), w.to_vector<double>(), dy.to_vector<double>(), 96, 1e-6);
  std::vector<double> dw0(dws[0].begin(), dws[0].end());
  expect_close(dw0, r.dw, 2e-6, 1e-5, "dw");
}

TEST(NormKernels, EmptyRows) {
  Tensor x = zeros({0, 8}), w = ones({8});
  auto [y, rstd] = rms_norm_forward(x, w, 1e-6);
  EXPECT_EQ(y.shape(), Shape({0, 8}));
  EXPECT_EQ(rstd.shape(), Shape({0}));
  auto [dx, dw] = rms_norm_backward(x, x, w, rstd);
  EXPECT_EQ(dx.shape(), Shape({0, 8}));
  EXPECT_EQ(dw.to_vector<float>(), std::vector<float>(8, 0.0f));
}

TEST(NormKernels, BadInputsNameTheOpAndShapes) {
  std::string m = error_of([] { rms_norm_forward(zeros({4, 8}), ones({7}), 1e-6); });
  EXPECT_THAT(m, HasSubstr("rms_norm"));
  EXPECT_THAT(m, HasSubstr("[4, 8]"));
  EXPECT_THAT(m, HasSubstr("[7]"));
  m = error_of([] { rms_norm_forward(zeros({4, 8}), ones({8}, DType::F64), 1e-6); });
  EXPECT_THAT(m, HasSubstr("rms_norm"));
  EXPECT_THAT(m, HasSubstr("f32[4, 8]"));
  EXPECT_THAT(m, HasSubstr("f64[8]"));
  m = error_of([] { rms_norm_forward(zeros({4, 8}, DType::I64), ones({8}, DType::I64), 1e-6); });
  EXPECT_THAT(m, HasSubstr("rms_norm"));
  EXPECT_THAT(m, HasSubstr("i64"));
  m = error_of([] { rms_norm_forward(zeros({}), ones({1}), 1e-6); });
  EXPECT_THAT(m, HasSubstr("rms_norm"));
  m = error_of([] { rms_norm_forward(zeros({2, 8}), ones({8}), -1.0); });
  EXPECT_THAT(m, HasSubstr("eps"));
  Tensor x = zeros({4, 8}), w = ones({8});
  auto [y, rstd] = rms_norm_forward(x, w, 1e-6);
  m = error_of([&] { rms_norm_backward(zeros({4, 9}), x, w, rstd); });
  EXPECT_THAT(m, HasSubstr("rms_norm_backward"));
  EXPECT_THAT(m, HasSubstr("[4, 9]"));
  EXPECT_THAT(m, HasSubstr("[4, 8]"));
  m = error_of([&] { rms_norm_backward(x, x, w, zeros({3})); });
  EXPECT_THAT(m, HasSubstr("rms_norm_backward"));
  EXPECT_THAT(m, HasSubstr("rstd"));
}
