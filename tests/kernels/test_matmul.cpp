// matmul against a plain float64 triple loop, over awkward sizes, broadcast batches and
// every operand layout BLAS can take directly (transposed, sliced) or cannot (copied).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/strided.h"
#include "kernels/matmul.h"
#include "tests/test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

// op(a) @ op(b) with numpy batch broadcasting, in double, straight from the definition.
Tensor ref_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Tensor A = ta ? a.transpose(-2, -1) : a, B = tb ? b.transpose(-2, -1) : b;
  const int64_t M = A.size(-2), K = A.size(-1), N = B.size(-1);
  Shape ab(A.shape().begin(), A.shape().end() - 2), bb(B.shape().begin(), B.shape().end() - 2);
  Shape batch = broadcast_shapes(ab, bb, "ref");
  Shape ashape = batch, bshape = batch;
  ashape.insert(ashape.end(), {M, K});
  bshape.insert(bshape.end(), {K, N});
  auto av = A.expand(ashape).to_vector<double>(), bv = B.expand(bshape).to_vector<double>();
  Shape oshape = batch;
  oshape.insert(oshape.end(), {M, N});
  const int64_t nb = shape_numel(batch);
  std::vector<double> out(size_t(nb * M * N), 0.0);
  for (int64_t t = 0; t < nb; ++t)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += av[size_t((t * M + i) * K + k)] * bv[size_t((t * K + k) * N + j)];
        out[size_t((t * M + i) * N + j)] = s;
      }
  return from_vector(out, oshape, DType::F64);
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double e = std::abs(g[i] - w[i]) / (1 + std::abs(w[i]));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": element " << at << " got " << g[at] << " want " << w[at];
}

// Tolerances: f64 rounding over K <= 64 terms stays near 1e-14; f32 near 1e-6 per term.
double tol_for(DType dt) { return dt == DType::F64 ? 1e-12 : 1e-4; }

struct Sizes {
  Shape a, b;
  bool ta, tb;
};

TEST(MatmulKernel, MatchesLoopsOnAwkwardShapes) {
  const std::vector<Sizes> cases = {
      {{1, 1}, {1, 1}, false, false},        {{7, 13}, {13, 5}, false, false},
      {{13, 7}, {13, 5}, true, false},       {{7, 13}, {5, 13}, false, true},
      {{13, 7}, {5, 13}, true, true},        {{1, 9}, {9, 1}, false, false},
      {{9, 1}, {1, 9}, false, false},        {{64, 33}, {33, 17}, false, false},
      {{3, 7, 13}, {13, 5}, false, false},   {{2, 3, 7, 13}, {5, 13}, false, true},  // shared weight: fold
      {{7, 13}, {4, 13, 5}, false, false},   {{2, 1, 3, 4}, {5, 4, 6}, false, false},  // broadcast batches
      {{2, 1, 4, 3}, {1, 5, 6, 4}, true, true}, {{1, 3, 4}, {2, 4, 2}, false, false},
  };
  for (DType dt : {DType::F64, DType::F32}) {
    for (const Sizes& c : cases) {
      Tensor a = randn(c.a, dt), b = randn(c.b, dt);
      Tensor got = kernels::matmul(a, b, c.ta, c.tb);
      EXPECT_EQ(got.dtype(), dt);
      EXPECT_TRUE(got.is_contiguous());
      expect_close(got, ref_matmul(a, b, c.ta, c.tb), tol_for(dt),
                   shape_str(c.a) + " x " + shape_str(c.b) + (c.ta ? " ta" : "") + (c.tb ? " tb" : ""));
    }
  }
}

// Views: transposed (unit stride on rows), sliced (row stride > cols), batch-permuted,
// expanded batches (stride 0), and layouts with no unit stride at all (copied).
TEST(MatmulKernel, StridedViews) {
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor big = randn({20, 30}, dt);
    Tensor bat = randn({4, 9, 11}, dt);
    struct V {
      Tensor a, b;
      const char* what;
    };
    std::vector<V> vs = {
        {big.narrow(0, 2, 7).narrow(1, 3, 13), big.narrow(1, 0, 5).narrow(0, 4, 13), "sliced"},
        {big.narrow(1, 1, 7).t(), big.narrow(0, 0, 20).narrow(1, 10, 6), "transposed view"},
        {big.slice(0, 0, 20, 2).slice(1, 0, 30, 3), randn({10, 4}, dt), "no unit stride"},
        {bat.transpose(1, 2), bat.narrow(2, 0, 3), "batched transposed"},
        {bat.permute({1, 0, 2}).narrow(0, 0, 3), randn({3, 11, 2}, dt), "batch dim not outermost"},
        {randn({1, 5, 9}, dt).expand({4, 5, 9}), bat, "expanded batch"},
        {bat, randn({11, 1}, dt).expand({11, 6}), "expanded columns"},
        {bat.narrow(1, 0, 1), randn({4, 11, 3}, dt), "one row"},
    };
    for (const V& v : vs) {
      expect_close(kernels::matmul(v.a, v.b), ref_matmul(v.a, v.b, false, false), tol_for(dt), v.what);
      Tensor at = v.a.transpose(-2, -1), bt = v.b.transpose(-2, -1);
      expect_close(kernels::matmul(at, bt, true, true), ref_matmul(v.a, v.b, false, false), tol_for(dt),
                   std::string(v.what) + " as ^T^T");
    }
  }
}

TEST(MatmulKernel, OutAccumulatesWithAlphaBeta) {
  Tensor a = randn({2, 6, 4}, DType::F64), b = randn({4, 5}, DType::F64);
  Tensor c0 = randn({2, 6, 5}, DType::F64);
  Tensor c = c0.clone();
  kernels::matmul_out(c, a, b, false, false, 0.5, 2.0);
  auto cv = c.to_vector<double>(), c0v = c0.to_vector<double>(), pv = ref_matmul(a, b, false, false).to_vector<double>();
  for (size_t i = 0; i < cv.size(); ++i) EXPECT_NEAR(cv[i], 0.5 * pv[i] + 2.0 * c0v[i], 1e-12);

  // beta = 0 must not read the old contents: NaN stays out.
  Tensor nan = full({2, 6, 5}, NAN, DType::F64);
  kernels::matmul_out(nan, a, b);
  expect_close(nan, ref_matmul(a, b, false, false), 1e-12, "beta 0 over NaN");
}

TEST(MatmulKernel, OutIntoNonContiguousOutputs) {
  Tensor a = randn({6, 4}, DType::F64), b = randn({4, 5}, DType::F64);
  Tensor want = ref_matmul(a, b, false, false);
  // Column-major output (a transposed buffer): BLAS computes C^T = B^T A^T.
  Tensor buf = zeros({5, 6}, DType::F64);
  kernels::matmul_out(buf.t(), a, b);
  expect_close(buf.t(), want, 1e-12, "column-major output");
  // No unit stride: goes through a temporary, and beta still reads the old values.
  Tensor buf2 = ones({12, 10}, DType::F64);
  Tensor view = buf2.slice(0, 0, 12, 2).slice(1, 0, 10, 2);
  kernels::matmul_out(view, a, b, false, false, 1.0, 1.0);
  auto got = view.to_vector<double>(), w = want.to_vector<double>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], w[i] + 1.0, 1e-12);
  // Elements outside the view are untouched.
  EXPECT_EQ(buf2.select(0, 1).to_vector<double>(), std::vector<double>(10, 1.0));
}

TEST(MatmulKernel, EmptyDims) {
  Tensor a = randn({3, 0}, DType::F32), b = randn({0, 4}, DType::F32);
  Tensor c = kernels::matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{3, 4}));
  EXPECT_EQ(c.to_vector<double>(), std::vector<double>(12, 0.0));
  EXPECT_EQ(kernels::matmul(randn({0, 3}, DType::F32), randn({3, 4}, DType::F32)).shape(), (Shape{0, 4}));
  EXPECT_EQ(kernels::matmul(randn({0, 2, 3}, DType::F32), randn({3, 4}, DType::F32)).shape(), (Shape{0, 2, 4}));
}

TEST(MatmulKernel, LargeEnoughForThreads) {
  Tensor a = randn({130, 257}, DType::F32), b = randn({257, 65}, DType::F32);
  expect_close(kernels::matmul(a, b), ref_matmul(a, b, false, false), 1e-4, "130x257x65");
}

using testutil::error_of;

TEST(MatmulKernel, BadInputsNameOpAndShapes) {
  Tensor a = randn({2, 3}), b = randn({4, 5});
  std::string m = error_of([&] { kernels::matmul(a, b); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("[2, 3]"));
  EXPECT_THAT(m, HasSubstr("[4, 5]"));
  m = error_of([&] { kernels::matmul(randn({2, 3, 4}), randn({3, 4, 5})); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("[2, 3, 4]"));
  EXPECT_THAT(m, HasSubstr("[3, 4, 5]"));
  m = error_of([&] { kernels::matmul(randn({2, 3}), randn({3, 4}, DType::F64)); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("f32[2, 3]"));
  EXPECT_THAT(m, HasSubstr("f64[3, 4]"));
  m = error_of([&] { kernels::matmul(randn({3}), randn({3, 4})); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("[3]"));
  m = error_of([&] { kernels::matmul(zeros({2, 2}, DType::I32), zeros({2, 2}, DType::I32)); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("i32"));
  m = error_of([&] { kernels::matmul_out(zeros({2, 5}), randn({2, 3}), randn({3, 4})); });
  EXPECT_THAT(m, HasSubstr("matmul"));
  EXPECT_THAT(m, HasSubstr("[2, 5]"));
  EXPECT_THAT(m, HasSubstr("[2, 4]"));
}

}  // namespace
}  // namespace hymba
