// Reductions against plain float64 loops over the logical (row-major) element order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/reduce.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

// Row-major multi-index of flat index i.
Shape unravel(int64_t i, const Shape& s) {
  Shape idx(s.size());
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
    idx[d] = i % s[d];
    i /= s[d];
  }
  return idx;
}

int64_t ravel(const Shape& idx, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + idx[d];
  return i;
}

// Plain reference: every input element added into the output slot with reduced dims zeroed.
std::vector<double> ref_sum(const Tensor& x, std::vector<int64_t> dims, bool mean, Shape* keep_shape) {
  const Shape& s = x.shape();
  std::vector<bool> red(s.size(), dims.empty());
  for (int64_t d : dims) red[size_t(d < 0 ? d + int64_t(s.size()) : d)] = true;
  Shape ks = s;
  int64_t n = 1;
  for (size_t d = 0; d < s.size(); ++d)
    if (red[d]) {
      n *= s[d];
      ks[d] = 1;
    }
  std::vector<double> v = x.to_vector<double>(), out(size_t(shape_numel(ks)), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    Shape idx = unravel(i, s);
    for (size_t d = 0; d < s.size(); ++d)
      if (red[d]) idx[d] = 0;
    out[size_t(ravel(idx, ks))] += v[size_t(i)];
  }
  if (mean)
    for (double& o : out) o /= double(n);
  *keep_shape = ks;
  return out;
}

// Plain reference max over dim d: first index of the largest value.
void ref_max(const Tensor& x, int64_t d, std::vector<double>* values, std::vector<int64_t>* indices) {
  const Shape& s = x.shape();
  Shape os = s;
  os.erase(os.begin() + d);
  auto xv = x.to_vector<double>();
  values->clear();
  indices->clear();
  for (int64_t o = 0; o < shape_numel(os); ++o) {
    Shape xi = unravel(o, os);
    xi.insert(xi.begin() + d, 0);
    double best = 0;
    int64_t bi = -1;
    for (int64_t k = 0; k < s[size_t(d)]; ++k) {
      xi[size_t(d)] = k;
      double e = xv[size_t(ravel(xi, s))];
      if (bi < 0 || e > best) {
        best = e;
        bi = k;
      }
    }
    values->push_back(best);
    indices->push_back(bi);
  }
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
}

struct Case {
  Shape shape;
  std::vector<int64_t> dims;
};

// Shapes with size-1 dims, reductions over inner, outer, middle and several dims.
const std::vector<Case> kCases = {
    {{5}, {0}},          {{3, 4}, {0}},       {{3, 4}, {1}},          {{3, 4}, {}},
    {{1, 7}, {0}},       {{7, 1}, {1}},       {{2, 3, 4}, {1}},       {{2, 3, 4}, {0, 2}},
    {{2, 3, 4}, {-1}},   {{4, 1, 3, 5}, {0, 1}}, {{2, 300, 3}, {1}},  {{600, 3}, {0}},
    {{3, 1000}, {1}},    {{1, 1}, {0, 1}},    {{2, 3, 4, 5}, {1, 3}}, {{37, 530}, {0}},
    {{3000, 40}, {0}},   {{2, 40000}, {}},    {{700, 2, 60}, {0, 1}},  // several fixed chunks per output
};

TEST(ReduceKernel, SumAndMeanMatchLoops) {
  for (DType dt : {DType::F64, DType::F32}) {
    for (const Case& c : kCases) {
      Tensor x = randn(c.shape, dt);
      for (bool keepdim : {false, true}) {
        for (bool mean : {false, true}) {
          Shape ks;
          auto want = ref_sum(x, c.dims, mean, &ks);
          Tensor y = mean ? kernels::mean(x, c.dims, keepdim) : kernels::sum(x, c.dims, keepdim);
          EXPECT_EQ(y.dtype(), dt);
          Shape expect_shape = keepdim ? ks : Shape{};
          if (!keepdim) {
            std::vector<bool> red(c.shape.size(), c.dims.empty());
            for (int64_t d : c.dims) red[size_t(d < 0 ? d + int64_t(c.shape.size()) : d)] = true;
            for (size_t d = 0; d < c.shape.size(); ++d)
              if (!red[d]) expect_shape.push_back(c.shape[d]);
          }
          EXPECT_EQ(y.shape(), expect_shape) << shape_str(c.shape);
          // f32 input, double accumulation: only the final rounding to f32 differs.
          expect_near_all(y.to_vector<double>(), want, dt == DType::F64 ? 1e-12 : 2e-6);
        }
      }
    }
  }
}

TEST(ReduceKernel, NonContiguousInputs) {
  Tensor base = randn({6, 5, 8}, DType::F64);
  std::vector<Tensor> views = {base.transpose(0, 2), base.permute({1, 2, 0}), base.slice(2, 1, 8, 3),
                               base.select(1, 2), base.narrow(0, 2, 3).transpose(1, 2),
                               randn({4, 1}, DType::F64).expand({3, 4, 6})};
  for (const Tensor& v : views) {
    for (int64_t d = 0; d < v.dim(); ++d) {
      Shape ks;
      auto want = ref_sum(v, {d}, false, &ks);
      expect_near_all(kernels::sum(v, {d}, true).to_vector<double>(), want, 1e-12);
      std::vector<double> wv;
      std::vector<int64_t> wi;
      ref_max(v, d, &wv, &wi);
      auto [mv, mi] = kernels::max(v, d, false);
      EXPECT_EQ(mv.to_vector<double>(), wv);
      EXPECT_EQ(mi.to_vector<int64_t>(), wi);
    }
    Shape ks;
    auto want = ref_sum(v, {}, true, &ks);
    expect_near_all(kernels::mean(v, {}).to_vector<double>(), want, 1e-12);
  }
}

// Sums in double for f32 input: 2^24 + many ones would stall a float accumulator.
TEST(ReduceKernel, F32AccumulatesInDouble) {
  const int64_t n = 1 << 20;
  Tensor x = full({n}, 1.0, DType::F32);
  x.narrow(0, 0, 1).fill_(double(1 << 24));
  double got = kernels::sum(x, {}).item();
  // Exact in double, then one rounding to the f32 output (spacing 2 at this magnitude).
  EXPECT_EQ(got, double(float(double(1 << 24) + double(n - 1))));
}

// The full reduction splits into fixed chunks: the bits do not depend on the thread count.
TEST(ReduceKernel, SumIsThreadCountIndependent) {
  Tensor x = randn({3, 400000}, DType::F32);
  Tensor y = randn({20000, 40}, DType::F32);
  int saved = num_threads();
  set_num_threads(1);
  auto a = kernels::sum(x, {}).to_vector<float>();
  auto a_rows = kernels::sum(x, {1}).to_vector<float>();
  auto a_cols = kernels::sum(y, {0}).to_vector<float>();
  set_num_threads(std::max(4, saved));
  auto b = kernels::sum(x, {}).to_vector<float>();
  auto b_rows = kernels::sum(x, {1}).to_vector<float>();
  auto b_cols = kernels::sum(y, {0}).to_vector<float>();
  set_num_threads(saved);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a_rows, b_rows);
  EXPECT_EQ(a_cols, b_cols);
}

TEST(ReduceKernel, MaxMatchesLoopsWithFirstTie) {
  for (DType dt : {DType::F64, DType::F32}) {
    for (const Case& c : kCases) {
      if (c.dims.size() != 1) continue;
      // Rounded values make ties frequent.
      Tensor x = randn(c.shape, DType::F64, nullptr, 0.0, 2.0);
      {
        auto v = x.to_vector<double>();
        for (double& e : v) e = std::round(e);
        x = from_vector(v, c.shape, dt);
      }
      const int64_t nd = int64_t(c.shape.size());
      const int64_t d = c.dims[0] < 0 ? c.dims[0] + nd : c.dims[0];
      auto [val, idx] = kernels::max(x, c.dims[0], false);
      EXPECT_EQ(idx.dtype(), DType::I64);
      Shape os = c.shape;
      os.erase(os.begin() + d);
      ASSERT_EQ(val.shape(), os);
      std::vector<double> wv;
      std::vector<int64_t> wi;
      ref_max(x, d, &wv, &wi);
      auto gi = idx.to_vector<int64_t>();
      EXPECT_EQ(val.to_vector<double>(), wv) << shape_str(c.shape) << " dim " << d;
      EXPECT_EQ(gi, wi) << shape_str(c.shape) << " dim " << d;
      auto [kv, ki] = kernels::max(x, c.dims[0], true);
      Shape ks = c.shape;
      ks[size_t(d)] = 1;
      EXPECT_EQ(kv.shape(), ks);
      EXPECT_EQ(ki.to_vector<int64_t>(), gi);
    }
  }
}

TEST(ReduceKernel, MaxPropagatesNaN) {
  Tensor x = from_vector<double>({1, NAN, 5, 2, 3, 4}, {2, 3}, DType::F32);
  auto [v, i] = kernels::max(x, 1);
  auto vv = v.to_vector<double>();
  EXPECT_TRUE(std::isnan(vv[0]));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
  auto [v0, i0] = kernels::max(x, 0);  // column strategy
  EXPECT_TRUE(std::isnan(v0.to_vector<double>()[1]));
  EXPECT_EQ(i0.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
}

TEST(ReduceKernel, EmptyAndScalar) {
  Tensor e = zeros({0, 3}, DType::F64);
  EXPECT_EQ(kernels::sum(e, {0}).to_vector<double>(), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(kernels::sum(e, {1}).shape(), (Shape{0}));
  EXPECT_TRUE(std::isnan(kernels::mean(e, {}).item()));
  Tensor s = scalar_tensor(2.5, DType::F64);
  EXPECT_EQ(kernels::sum(s, {}).item(), 2.5);
  EXPECT_EQ(kernels::sum(s, {}).dim(), 0);
  EXPECT_EQ(kernels::max(s, 0).first.item(), 2.5);
}

TEST(ReduceKernel, SumBackwardBroadcasts) {
  Tensor g = randn({2, 4}, DType::F64);
  Tensor dx = kernels::sum_backward(g, {2, 3, 4}, {1}, false, 0.5);
  ASSERT_EQ(dx.shape(), (Shape{2, 3, 4}));
  auto gv = g.to_vector<double>(), dv = dx.to_vector<double>();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) EXPECT_EQ(dv[size_t((i * 3 + j) * 4 + k)], 0.5 * gv[size_t(i * 4 + k)]);
}

TEST(ReduceKernel, MaxBackwardScatters) {
  Tensor x = from_vector<double>({1, 7, 7, 2, 0, 9}, {2, 3}, DType::F64);
  auto [v, i] = kernels::max(x, 1, false);
  Tensor g = from_vector<double>({10, 20}, {2}, DType::F64);
  Tensor dx = kernels::max_backward(g, i, {2, 3}, 1, false);
  EXPECT_EQ(dx.to_vector<double>(), (std::vector<double>{0, 10, 0, 0, 0, 20}));
}

TEST(ReduceKernel, BadInputsNameTheOp) {
  Tensor x = randn({2, 3}, DType::F64);
  try {
    kernels::sum(x, {2});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("sum"));
    EXPECT_THAT(e.what(), HasSubstr("dim 2"));
  }
  try {
    kernels::mean(x, {1, -1});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("mean"));
    EXPECT_THAT(e.what(), HasSubstr("repeated"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
  }
  try {
    kernels::max(zeros({2, 0}, DType::F64), 1);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("max"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 0]"));
  }
  try {
    kernels::sum(zeros({2}, DType::I32), {0});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("sum"));
    EXPECT_THAT(e.what(), HasSubstr("i32"));
  }
}

}  // namespace
}  // namespace hymba
