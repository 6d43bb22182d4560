// The fused cross-entropy forward-backward (kernels/softmax_xent.h
// cross_entropy_forward_backward) against the separate forward and backward kernels, which
// test_softmax_xent.cpp checks against the definition: the same loss, count and stats, and
// dlogits equal to cross_entropy_backward's output for an upstream gradient of 1 (and of
// grad_scale when one is given).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "core/rng.h"
#include "kernels/softmax_xent.h"

using namespace hymba;
using namespace hymba::kernels;
using ::testing::HasSubstr;

namespace {

void expect_close(const Tensor& got, const Tensor& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], atol + rtol * std::fabs(w[i])) << what << " at " << i;
}

// Random targets in [0, v), every fourth row (from row 1) set to `ignore`.
Tensor targets_for(int64_t rows, int64_t v, int64_t ignore, Generator& g, DType dt = DType::I64) {
  std::vector<double> u = rand({rows}, DType::F64, &g).to_vector<double>();
  std::vector<int64_t> t;
  for (int64_t i = 0; i < rows; ++i)
    t.push_back(i % 4 == 1 ? ignore : std::min<int64_t>(v - 1, int64_t(u[size_t(i)] * double(v))));
  return from_vector<int64_t>(t, {rows}).to(dt);
}

// The fused op against forward + backward(grad 1) on the same inputs, for every reduction.
void check_against_unfused(const Tensor& logits, const Tensor& targets, int64_t ignore, double tol,
                           const std::string& what) {
  const Shape tshape = targets.shape();
  for (LossReduction red : {LossReduction::None, LossReduction::Sum, LossReduction::Mean}) {
    const std::string w = what + " reduction " + std::to_string(int(red));
    CrossEntropyForward f = cross_entropy_forward(logits, targets, ignore, red);
    CrossEntropyForwardBackward fb = cross_entropy_forward_backward(logits, targets, ignore, red);
    EXPECT_EQ(fb.count, f.count) << w;
    expect_close(fb.loss, f.loss, tol, tol, w + " loss");
    expect_close(fb.stats, f.stats, tol, tol, w + " stats");
    const double scale = red == LossReduction::Mean ? (f.count > 0 ? 1.0 / double(f.count) : 0.0) : 1.0;
    Tensor grad = red == LossReduction::None ? ones(tshape, logits.dtype()) : ones({}, logits.dtype());
    Tensor want = cross_entropy_backward(grad, logits, targets, f.stats, ignore, scale);
    expect_close(fb.dlogits, want, tol, tol * std::max(scale, 1e-300), w + " dlogits");
    // grad_scale: dlogits for that upstream gradient, everything else unchanged.
    CrossEntropyForwardBackward fs = cross_entropy_forward_backward(logits, targets, ignore, red, 0.3);
    expect_close(fs.loss, f.loss, tol, tol, w + " loss with grad_scale");
    Tensor want_s = cross_entropy_backward(grad, logits, targets, f.stats, ignore, 0.3 * scale);
    expect_close(fs.dlogits, want_s, tol, tol * std::max(scale, 1e-300), w + " dlogits with grad_scale");
  }
}

TEST(CrossEntropyFused, MatchesForwardAndBackwardForEveryReductionAndSize) {
  Generator g(21);
  // V = 1 (the only class: loss 0, gradient 0), small odd sizes, and rows longer than one
  // statistics chunk (2048) with a partial last chunk.
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 2e-6;
    for (int64_t v : {int64_t(1), int64_t(7), int64_t(2049), int64_t(5003)}) {
      for (DType tdt : {DType::I64, DType::I32}) {
        const int64_t rows = 13;
        Tensor logits = randn({rows, v}, dt, &g, 0.0, 3.0);
        Tensor targets = targets_for(rows, v, -100, g, tdt);
        check_against_unfused(logits, targets, -100, tol,
                              str(dtype_name(dt), " V ", v, " targets ", dtype_name(tdt)));
      }
    }
  }
}

TEST(CrossEntropyFused, OnlyClassGivesZeroLossAndGradient) {
  Tensor logits = from_vector<double>({3.5, -2.0, 0.0}, {3, 1});
  CrossEntropyForwardBackward fb =
      cross_entropy_forward_backward(logits, zeros({3}, DType::I64), -100, LossReduction::Sum);
  EXPECT_EQ(fb.loss.item(), 0.0);
  EXPECT_EQ(fb.dlogits.to_vector<double>(), std::vector<double>(3, 0.0));
}

TEST(CrossEntropyFused, IgnoredRowsAndAllRowsIgnored) {
  Generator g(22);
  Tensor logits = randn({5, 9}, DType::F64, &g);
  // ignore_index 0 is also a class: rows with target 0 are skipped, others count.
  Tensor t = from_vector<int64_t>({0, 3, 0, 8, 1}, {5});
  CrossEntropyForwardBackward fb = cross_entropy_forward_backward(logits, t, 0, LossReduction::Mean);
  EXPECT_EQ(fb.count, 3);
  std::vector<double> d = fb.dlogits.to_vector<double>();
  for (int64_t r : {0, 2})
    for (int64_t j = 0; j < 9; ++j) EXPECT_EQ(d[size_t(r * 9 + j)], 0.0) << r << " " << j;
  check_against_unfused(logits, t, 0, 1e-12, "ignore_index 0");

  // Every row ignored: Mean over no rows is 0 (count 0), and every gradient is 0.
  Tensor all = full({5}, -100, DType::I64);
  for (LossReduction red : {LossReduction::None, LossReduction::Sum, LossReduction::Mean}) {
    CrossEntropyForwardBackward a = cross_entropy_forward_backward(logits, all, -100, red);
    EXPECT_EQ(a.count, 0);
    for (double l : a.loss.to_vector<double>()) EXPECT_EQ(l, 0.0);
    for (double s : a.stats.to_vector<double>()) EXPECT_EQ(s, 0.0);
    EXPECT_EQ(a.dlogits.to_vector<double>(), std::vector<double>(45, 0.0));
  }
  // No rows at all.
  CrossEntropyForwardBackward e =
      cross_entropy_forward_backward(zeros({0, 6}), zeros({0}, DType::I64), -100, LossReduction::Mean);
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.loss.item(), 0.0);
  EXPECT_EQ(e.dlogits.shape(), Shape({0, 6}));
}

TEST(CrossEntropyFused, LeadingDimsAndStridedLogits) {
  Generator g(23);
  Tensor logits = randn({2, 3, 11}, DType::F64, &g);
  Tensor targets = targets_for(6, 11, -100, g).reshape({2, 3});
  check_against_unfused(logits, targets, -100, 1e-12, "3-d logits");
  CrossEntropyForwardBackward fb = cross_entropy_forward_backward(logits, targets, -100, LossReduction::None);
  EXPECT_EQ(fb.loss.shape(), Shape({2, 3}));
  EXPECT_EQ(fb.dlogits.shape(), Shape({2, 3, 11}));
  // A transposed (non-contiguous) view gives the same as its contiguous copy.
  Tensor lt = randn({11, 4}, DType::F64, &g).transpose(0, 1);
  Tensor t4 = targets_for(4, 11, -100, g);
  CrossEntropyForwardBackward a = cross_entropy_forward_backward(lt, t4, -100, LossReduction::Sum);
  CrossEntropyForwardBackward b = cross_entropy_forward_backward(lt.contiguous(), t4, -100, LossReduction::Sum);
  EXPECT_EQ(a.loss.item(), b.loss.item());
  EXPECT_EQ(a.dlogits.to_vector<double>(), b.dlogits.to_vector<double>());
}

TEST(CrossEntropyFused, StableForHugeLogitsAndMaskedChunks) {
  Generator g(24);
  // f32 logits of magnitude 1e4: finite, and the same as the two-pass kernels.
  Tensor big = randn({8, 3000}, DType::F32, &g, 0.0, 1e4);
  Tensor tb = targets_for(8, 3000, -100, g);
  CrossEntropyForwardBackward fb = cross_entropy_forward_backward(big, tb, -100, LossReduction::Mean);
  EXPECT_TRUE(std::isfinite(fb.loss.item()));
  check_against_unfused(big, tb, -100, 2e-6, "magnitude 1e4");
  // -inf (masked) classes over a whole statistics chunk and more, before and after the
  // finite ones: they add nothing and get a zero gradient.
  const int64_t v = 6000;
  std::vector<double> x(size_t(2 * v), -std::numeric_limits<double>::infinity());
  for (int64_t j = 2500; j < 2600; ++j) x[size_t(j)] = double(j % 7) - 3.0;
  for (int64_t j = 5990; j < 6000; ++j) x[size_t(v + j)] = double(j % 5);
  Tensor masked = from_vector<double>(x, {2, v});
  Tensor tm = from_vector<int64_t>({2550, 5995}, {2});
  check_against_unfused(masked, tm, -100, 1e-12, "masked chunks");
  std::vector<double> d =
      cross_entropy_forward_backward(masked, tm, -100, LossReduction::Sum).dlogits.to_vector<double>();
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(d[size_t(v + 100)], 0.0);
  EXPECT_TRUE(std::isfinite(cross_entropy_forward_backward(masked, tm).loss.item()));
}

TEST(CrossEntropyFused, BadTargetsNameTheTargetAndRow) {
  Tensor logits = zeros({4, 10}, DType::F32);
  for (int64_t bad : {int64_t(10), int64_t(-1)}) {
    try {
      cross_entropy_forward_backward(logits, from_vector<int64_t>({1, -100, bad, 3}, {4}));
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("cross_entropy_forward_backward"));
      EXPECT_THAT(e.what(), HasSubstr(str("target ", bad, " at row 2")));
      EXPECT_THAT(e.what(), HasSubstr("10 classes"));
    }
  }
  EXPECT_THROW(cross_entropy_forward_backward(logits, zeros({4}, DType::F32)), Error);  // float targets
  EXPECT_THROW(cross_entropy_forward_backward(zeros({4, 10}, DType::I32), zeros({4}, DType::I64)), Error);
}

}  // namespace
