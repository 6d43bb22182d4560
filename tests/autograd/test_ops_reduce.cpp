// sum / mean / max gradients by finite differences, and sum_to against loops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/reduce.h"
#include "core/rng.h"

namespace hymba {
namespace {

using autograd::gradcheck;
using ::testing::HasSubstr;

Tensor leaf(const Shape& s, Generator& g) {
  Tensor t = randn(s, DType::F64, &g);
  t.set_requires_grad(true);
  return t;
}

std::vector<double> values(const Tensor& t) {
  NoGradGuard ng;
  return t.to_vector<double>();
}

// Leaves that are views: transposed, and strided along a sliced dim.
std::vector<Tensor> view_leaves(Generator& g) {
  std::vector<Tensor> out;
  Tensor a = randn({4, 3, 2}, DType::F64, &g), b = randn({3, 7}, DType::F64, &g);
  out.push_back(a.permute({2, 0, 1}));
  out.push_back(b.slice(1, 0, 7, 2));
  for (Tensor& t : out) t.set_requires_grad(true);
  return out;
}

TEST(ReduceOp, SumAndMeanGradients) {
  Generator g(20);
  std::vector<Tensor> xs = {leaf({3, 4}, g), leaf({2, 1, 3}, g), leaf({5}, g), leaf({1, 1}, g)};
  for (Tensor& v : view_leaves(g)) xs.push_back(v);
  for (const Tensor& x : xs) {
    std::vector<std::function<Tensor(const Tensor&)>> fs = {
        [](const Tensor& v) { return sum(v); },
        [](const Tensor& v) { return mean(v); },
        [](const Tensor& v) { return sum(v, {0}); },
        [](const Tensor& v) { return mean(v, {-1}, true); },
        [](const Tensor& v) { return sum(v, {0, -1}, true); },
        [](const Tensor& v) { return mean(v, {0}); },
    };
    for (size_t i = 0; i < fs.size(); ++i) {
      if (x.dim() == 1 && i == 4) continue;  // {0, -1} is one dim twice on a vector
      auto r = gradcheck([&](const std::vector<Tensor>& in) { return fs[i](in[0]); }, {x});
      EXPECT_TRUE(r.ok) << "fn " << i << " on " << x.meta_str() << ": " << r.message;
    }
  }
}

TEST(ReduceOp, ForwardValues) {
  Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}, DType::F64);
  EXPECT_EQ(sum(x).item(), 21.0);
  EXPECT_EQ(sum(x).dim(), 0);
  EXPECT_EQ(mean(x).item(), 3.5);
  EXPECT_EQ(values(sum(x, {0})), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(values(mean(x, {1})), (std::vector<double>{2, 5}));
  auto [v, i] = max(x, 0);
  EXPECT_EQ(values(v), (std::vector<double>{4, 5, 6}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1}));
}

TEST(ReduceOp, MaxGradients) {
  Generator g(21);
  std::vector<Tensor> xs = {leaf({3, 4}, g), leaf({2, 1, 5}, g), leaf({6}, g)};
  for (Tensor& v : view_leaves(g)) xs.push_back(v);
  for (const Tensor& x : xs) {
    for (int64_t d = 0; d < x.dim(); ++d) {
      for (bool keepdim : {false, true}) {
        auto r = gradcheck([&](const std::vector<Tensor>& in) { return max(in[0], d, keepdim).first; }, {x});
        EXPECT_TRUE(r.ok) << x.meta_str() << " dim " << d << ": " << r.message;
      }
    }
  }
}

TEST(ReduceOp, MaxTiesRouteToFirst) {
  Tensor x = from_vector<double>({1, 3, 3, 7, 7, 2}, {2, 3}, DType::F64);
  x.set_requires_grad(true);
  auto [v, i] = max(x, 1);
  EXPECT_FALSE(i.requires_grad());
  v.backward(from_vector<double>({10, 20}, {2}, DType::F64));
  EXPECT_EQ(values(x.grad()), (std::vector<double>{0, 10, 0, 20, 0, 0}));
}

// sum_to against loops: the sum of every grad element that broadcasts onto each target slot.
TEST(ReduceOp, SumToReducesBroadcastDims) {
  Generator g(22);
  Tensor grad = randn({2, 3, 4}, DType::F64, &g);
  auto gv = values(grad);
  for (Shape t : {Shape{3, 1}, Shape{4}, Shape{1}, Shape{}, Shape{1, 3, 4}, Shape{2, 1, 4}, Shape{2, 3, 4}}) {
    Tensor r = sum_to(grad, t);
    ASSERT_EQ(r.shape(), t);
    // Target padded on the left to rank 3.
    Shape tp(3 - t.size(), 1);
    tp.insert(tp.end(), t.begin(), t.end());
    std::vector<double> want(size_t(shape_numel(t)), 0.0);
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t k = 0; k < 4; ++k) {
          int64_t ti = tp[0] == 1 ? 0 : i, tj = tp[1] == 1 ? 0 : j, tk = tp[2] == 1 ? 0 : k;
          want[size_t((ti * tp[1] + tj) * tp[2] + tk)] += gv[size_t((i * 3 + j) * 4 + k)];
        }
    auto got = values(r);
    for (size_t q = 0; q < want.size(); ++q) EXPECT_NEAR(got[q], want[q], 1e-12) << shape_str(t) << " at " << q;
  }
  EXPECT_TRUE(sum_to(grad, {2, 3, 4}).is_same(grad));  // nothing to reduce: no copy
  // Non-contiguous gradient.
  Tensor gt = grad.transpose(0, 2);  // (4, 3, 2)
  auto r = values(sum_to(gt, {1, 2}));
  std::vector<double> want(2, 0.0);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) want[size_t(i)] += gv[size_t((i * 3 + j) * 4 + k)];
  EXPECT_NEAR(r[0], want[0], 1e-12);
  EXPECT_NEAR(r[1], want[1], 1e-12);
}

TEST(ReduceOp, BadInputs) {
  Tensor g = randn({2, 3});
  try {
    sum_to(g, {4});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("sum_to"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4]"));
  }
  try {
    sum_to(g, {1, 2, 3});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("[1, 2, 3]"));
  }
  try {
    sum(g, {3});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("sum"));
  }
  try {
    max(g, -3);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("max"));
  }
}

}  // namespace
}  // namespace hymba
