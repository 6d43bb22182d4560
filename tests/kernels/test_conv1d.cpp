// Causal depthwise conv1d kernels against plain float64 loops of the definition
// y[b,c,t] = act(bias[c] + sum_k w[c,k] x[b,c,t-(W-1)+k]) with zero left padding.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/conv1d.h"
#include "tests/test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

struct Ref {
  std::vector<double> y, dx, dw, db;
};

double sigmoid_ref(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Forward and (given dy) backward of the definition, one output element at a time.
Ref reference(const Tensor& xt, const Tensor& wt, const Tensor& bt, bool silu, const std::vector<double>* dy) {
  const int64_t B = xt.size(0), C = xt.size(1), L = xt.size(2), W = wt.size(1);
  auto x = xt.to_vector<double>(), w = wt.to_vector<double>();
  std::vector<double> bias = bt.defined() ? bt.to_vector<double>() : std::vector<double>();
  Ref r;
  r.y.assign(x.size(), 0);
  if (dy) {
    r.dx.assign(x.size(), 0);
    r.dw.assign(w.size(), 0);
    r.db.assign(size_t(C), 0);
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = (b * C + c) * L;
        double s = bias.empty() ? 0.0 : bias[size_t(c)];
        for (int64_t k = 0; k < W; ++k) {
          const int64_t src = t - (W - 1) + k;
          if (src >= 0) s += w[size_t(c * W + k)] * x[size_t(row + src)];
        }
        const double sg = sigmoid_ref(s);
        r.y[size_t(row + t)] = silu ? s * sg : s;
        if (!dy) continue;
        const double ds = (*dy)[size_t(row + t)] * (silu ? sg * (1 + s * (1 - sg)) : 1.0);
        r.db[size_t(c)] += ds;
        for (int64_t k = 0; k < W; ++k) {
          const int64_t src = t - (W - 1) + k;
          if (src < 0) continue;
          r.dx[size_t(row + src)] += ds * w[size_t(c * W + k)];
          r.dw[size_t(c * W + k)] += ds * x[size_t(row + src)];
        }
      }
  return r;
}

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_LE(std::abs(a[i] - b[i]), tol * (1 + scale)) << what << " element " << i << ": " << a[i] << " vs " << b[i];
}

struct Case {
  int64_t B, C, L, W;
  bool bias, silu;
};

std::string name(const Case& c) {
  return hymba::str("B", c.B, " C", c.C, " L", c.L, " W", c.W, c.bias ? " bias" : "", c.silu ? " silu" : "");
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  for (int64_t W : {2, 3, 4})
    for (bool bias : {false, true})
      for (bool silu : {false, true}) {
        cs.push_back({2, 3, 17, W, bias, silu});
        cs.push_back({1, 2, 1, W, bias, silu});  // L < W - 1: only padding taps
        cs.push_back({3, 1, W, W, bias, silu});
      }
  return cs;
}

TEST(CausalConv1dKernel, ForwardAndBackwardMatchFloat64Definition) {
  Generator g(3);
  for (DType dt : {DType::F64, DType::F32}) {
    // f32: a handful of products per element; 1e-5 of the scale.
    const double tol = dt == DType::F64 ? 1e-13 : 1e-5;
    for (const Case& c : cases()) {
      Tensor x = randn({c.B, c.C, c.L}, dt, &g), w = randn({c.C, c.W}, dt, &g);
      Tensor b = c.bias ? randn({c.C}, dt, &g) : Tensor();
      Tensor dy = randn({c.B, c.C, c.L}, dt, &g);
      const auto dyv = dy.to_vector<double>();
      Ref r = reference(x, w, b, c.silu, &dyv);
      const std::string what = hymba::str(name(c), " ", dtype_name(dt));
      expect_close(kernels::causal_conv1d_forward(x, w, b, c.silu).to_vector<double>(), r.y, tol, what + " y");
      auto [dx, dw, db] = kernels::causal_conv1d_backward(dy, x, w, b, c.silu);
      expect_close(dx.to_vector<double>(), r.dx, tol, what + " dx");
      expect_close(dw.to_vector<double>(), r.dw, tol, what + " dw");
      ASSERT_EQ(db.defined(), c.bias) << what;
      if (c.bias) expect_close(db.to_vector<double>(), r.db, tol, what + " db");
      auto [dx2, dw2, db2] = kernels::causal_conv1d_backward(dy, x, w, b, c.silu, /*need_dx=*/false);
      EXPECT_FALSE(dx2.defined()) << what;
    }
  }
}

TEST(CausalConv1dKernel, BackwardAtLargerSizesInF32) {
  Generator g(4);
  Tensor x = randn({3, 37, 301}), w = randn({37, 4}, DType::F32, &g, 0, 0.3), b = randn({37});
  Tensor dy = randn({3, 37, 301});
  const auto dyv = dy.to_vector<double>();
  Ref r = reference(x, w, b, true, &dyv);
  auto [dx, dw, db] = kernels::causal_conv1d_backward(dy, x, w, b, true);
  // dw and db sum 903 terms per channel (accumulated in double across rows).
  expect_close(dx.to_vector<double>(), r.dx, 1e-5, "dx");
  expect_close(dw.to_vector<double>(), r.dw, 1e-5, "dw");
  expect_close(db.to_vector<double>(), r.db, 1e-5, "db");
}

TEST(CausalConv1dKernel, NonContiguousInputs) {
  Generator g(5);
  Tensor x = randn({2, 9, 4}, DType::F64, &g).permute({0, 2, 1});  // (2, 4, 9) view
  Tensor w = randn({3, 4}, DType::F64, &g).t();                      // (4, 3) view
  Tensor b = randn({8}, DType::F64, &g).slice(0, 0, 8, 2);           // strided (4)
  ASSERT_FALSE(x.is_contiguous());
  Ref r = reference(x, w, b, true, nullptr);
  expect_close(kernels::causal_conv1d_forward(x, w, b, true).to_vector<double>(), r.y, 1e-13, "y");
}

TEST(CausalConv1dKernel, BackwardIsIdenticalForAnyThreadCount) {
  Tensor x = randn({4, 70, 500}), w = randn({70, 4}), b = randn({70}), dy = randn({4, 70, 500});
  const int saved = num_threads();
  std::vector<std::vector<float>> res[2];
  for (int k = 0; k < 2; ++k) {
    set_num_threads(k + 1);
    auto [dx, dw, db] = kernels::causal_conv1d_backward(dy, x, w, b, true);
    for (const Tensor& t : {kernels::causal_conv1d_forward(x, w, b, true), dx, dw, db})
      res[k].push_back(t.to_vector<float>());
  }
  set_num_threads(saved);
  for (size_t i = 0; i < res[0].size(); ++i) EXPECT_TRUE(res[0][i] == res[1][i]) << "output " << i;
}

TEST(CausalConv1dKernel, StepKernelReproducesTheFullConvolution) {
  Generator g(6);
  for (DType dt : {DType::F64, DType::F32})
    for (int64_t W : {2, 3, 4})
      for (bool silu : {false, true}) {
        const int64_t B = 2, C = 5, L = 11;
        Tensor x = randn({B, C, L}, dt, &g), w = randn({C, W}, dt, &g), b = randn({C}, dt, &g);
        Tensor y = kernels::causal_conv1d_forward(x, w, b, silu);
        Tensor state = zeros({B, C, W - 1}, dt);
        std::vector<double> got(size_t(B * C * L));
        for (int64_t t = 0; t < L; ++t) {
          auto o = kernels::causal_conv1d_step(state, x.select(2, t), w, b, silu).to_vector<double>();
          for (int64_t i = 0; i < B * C; ++i) got[size_t(i * L + t)] = o[size_t(i)];
        }
        const std::string what = std::string(dtype_name(dt)) + " W" + std::to_string(W);
        expect_close(got, y.to_vector<double>(), dt == DType::F64 ? 1e-14 : 1e-6, what + " y");
        // The state ends holding the last W-1 inputs, oldest first.
        expect_close(state.to_vector<double>(), x.narrow(2, L - (W - 1), W - 1).to_vector<double>(), 0,
                     what + " state");
      }
}

using testutil::error_of;

TEST(CausalConv1dKernel, BadInputsNameTheOpAndShapes) {
  Tensor x = randn({2, 3, 8}), w = randn({3, 4}), b = randn({3});
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_forward(x, randn({3, 5}), b, true); }),
              HasSubstr("causal_conv1d: width W must be 2, 3 or 4, got weight [3, 5] (x [2, 3, 8])"));
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_forward(x, randn({4, 4}), b, true); }),
              HasSubstr("causal_conv1d: weight has shape [4, 4], expected (C, W) with C = 3 (x [2, 3, 8])"));
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_forward(x, w, randn({2}), true); }),
              HasSubstr("causal_conv1d: bias has shape [2], expected [3] (x [2, 3, 8])"));
  {
    std::string m = error_of([&] { kernels::causal_conv1d_forward(x, w.to(DType::F64), b, true); });
    EXPECT_THAT(m, HasSubstr("causal_conv1d: dtype mismatch"));
    EXPECT_THAT(m, HasSubstr("f32[2, 3, 8]"));
    EXPECT_THAT(m, HasSubstr("f64[3, 4]"));
  }
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_forward(randn({3, 8}), w, b, true); }),
              HasSubstr("causal_conv1d: x must be (B, C, L), got f32[3, 8]"));
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_backward(randn({2, 3, 7}), x, w, b, true); }),
              HasSubstr("causal_conv1d_backward: gradient [2, 3, 7] does not match x [2, 3, 8]"));
  EXPECT_THAT(error_of([&] { kernels::causal_conv1d_step(zeros({2, 3, 2}), randn({2, 3}), w, b, true); }),
              HasSubstr("causal_conv1d_step: conv_state has shape [2, 3, 2], expected [2, 3, 3]"));
}

}  // namespace
}  // namespace hymba
