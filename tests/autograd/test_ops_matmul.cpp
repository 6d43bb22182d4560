// matmul / linear: forward against float64 loops, gradients by finite differences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/matmul.h"
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

// A non-contiguous leaf: the transpose of a fresh (d1, d0) tensor, shape (d0, d1).
Tensor transposed_leaf(int64_t d0, int64_t d1, Generator& g) {
  Tensor base = randn({d1, d0}, DType::F64, &g);
  Tensor t = base.t();
  t.set_requires_grad(true);
  return t;
}

std::vector<double> values(const Tensor& t) {
  NoGradGuard ng;
  return t.to_vector<double>();
}

// (M, K) @ (K, N) in double loops, on row-major vectors.
std::vector<double> mm(const std::vector<double>& a, const std::vector<double>& b, int64_t M, int64_t K, int64_t N) {
  std::vector<double> c(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) c[size_t(i * N + j)] += a[size_t(i * K + k)] * b[size_t(k * N + j)];
  return c;
}

void expect_vec_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

TEST(MatmulOp, ForwardVectorCasesMatchLoops) {
  Generator g(1);
  Tensor m = randn({3, 4}, DType::F64, &g), v3 = randn({3}, DType::F64, &g), v4 = randn({4}, DType::F64, &g);
  Tensor y = matmul(v3, m);  // (3) @ (3, 4) -> (4)
  EXPECT_EQ(y.shape(), (Shape{4}));
  expect_vec_near(values(y), mm(values(v3), values(m), 1, 3, 4), 1e-12);
  y = matmul(m, v4);  // (3, 4) @ (4) -> (3)
  EXPECT_EQ(y.shape(), (Shape{3}));
  expect_vec_near(values(y), mm(values(m), values(v4), 3, 4, 1), 1e-12);
  y = matmul(v4, v4);
  EXPECT_EQ(y.dim(), 0);
  expect_vec_near(values(y), mm(values(v4), values(v4), 1, 4, 1), 1e-12);
  Tensor bm = randn({2, 4, 5}, DType::F64, &g);
  y = matmul(v4, bm);  // (4) @ (2, 4, 5) -> (2, 5)
  EXPECT_EQ(y.shape(), (Shape{2, 5}));
}

TEST(MatmulOp, GradientsWithBroadcastBatches) {
  Generator g(2);
  struct C {
    Shape a, b;
  };
  const std::vector<C> cases = {
      {{3, 4}, {4, 2}},       {{1, 1}, {1, 1}},          {{2, 3, 4}, {4, 5}},     // shared weight: one-gemm dB
      {{3, 4}, {2, 4, 5}},    {{2, 1, 3, 4}, {5, 4, 2}}, {{2, 3, 4}, {1, 4, 2}},  // dB over a size-1 batch
      {{1, 2, 4}, {3, 1, 4, 1}}, {{4}, {4, 3}},          {{2, 4}, {4}},
      {{4}, {4}},             {{3}, {2, 3, 2}},
  };
  for (const C& c : cases) {
    Tensor a = leaf(c.a, g), b = leaf(c.b, g);
    auto r = gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {a, b});
    EXPECT_TRUE(r.ok) << shape_str(c.a) << " @ " << shape_str(c.b) << ": " << r.message;
  }
}

TEST(MatmulOp, GradientsNonContiguousAndOneSided) {
  Generator g(3);
  Tensor at = transposed_leaf(5, 3, g), bt = transposed_leaf(3, 4, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {at, bt});
  EXPECT_TRUE(r.ok) << r.message;
  // Only one input requires grad: the other's gradient is not computed (and not needed).
  Tensor a = leaf({2, 3, 5}, g);
  Tensor b = randn({5, 2}, DType::F64, &g);
  r = gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {a, b});
  EXPECT_TRUE(r.ok) << r.message;
  Tensor a2 = randn({2, 3, 5}, DType::F64, &g);
  Tensor b2 = leaf({5, 2}, g);
  r = gradcheck([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {a2, b2});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(MatmulOp, BadShapesNameOpAndShapes) {
  try {
    matmul(randn({2, 3}), randn({4, 5}));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4, 5]"));
  }
  try {
    matmul(randn({3}), randn({4}));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
    EXPECT_THAT(e.what(), HasSubstr("[3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4]"));
  }
}

// y[r, o] = sum_i x[r, i] W[o, i] + b[o], straight from the definition.
std::vector<double> ref_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  auto xv = values(x), wv = values(w);
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  std::vector<double> y(size_t(rows * out), 0.0);
  std::vector<double> bv = b.defined() ? values(b) : std::vector<double>(size_t(out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[size_t(o)];
      for (int64_t i = 0; i < in; ++i) s += xv[size_t(r * in + i)] * wv[size_t(o * in + i)];
      y[size_t(r * out + o)] = s;
    }
  return y;
}

TEST(LinearOp, ForwardMatchesLoops) {
  Generator g(4);
  Tensor w = randn({5, 3}, DType::F64, &g), b = randn({5}, DType::F64, &g);
  for (Shape xs : {Shape{3}, Shape{4, 3}, Shape{2, 4, 3}, Shape{1, 1, 3}}) {
    Tensor x = randn(xs, DType::F64, &g);
    Tensor y = linear(x, w, b);
    Shape ys = xs;
    ys.back() = 5;
    EXPECT_EQ(y.shape(), ys);
    expect_vec_near(values(y), ref_linear(x, w, b), 1e-12);
    expect_vec_near(values(linear(x, w)), ref_linear(x, w, Tensor()), 1e-12);
  }
  // f32 with a transposed input view.
  Tensor xf = randn({3, 6}, DType::F32, &g).t();
  Tensor wf = randn({4, 3}, DType::F32, &g), bf = randn({4}, DType::F32, &g);
  expect_vec_near(values(linear(xf, wf, bf)), ref_linear(xf, wf, bf), 1e-5);
}

TEST(LinearOp, Gradients) {
  Generator g(5);
  for (Shape xs : {Shape{3}, Shape{4, 3}, Shape{2, 4, 3}, Shape{1, 1, 3}}) {
    Tensor x = leaf(xs, g), w = leaf({5, 3}, g), b = leaf({5}, g);
    auto r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
    EXPECT_TRUE(r.ok) << shape_str(xs) << ": " << r.message;
    r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w});
    EXPECT_TRUE(r.ok) << shape_str(xs) << " no bias: " << r.message;
  }
  // Non-contiguous x and W (a transposed view of a (in, out) buffer).
  Tensor xt = transposed_leaf(6, 3, g), wt = transposed_leaf(2, 3, g), b = leaf({2}, g);
  auto r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {xt, wt, b});
  EXPECT_TRUE(r.ok) << r.message;
  // Frozen weight: only x and the bias train.
  Tensor x = leaf({2, 3, 4}, g), w = randn({2, 4}, DType::F64, &g), bb = leaf({2}, g);
  r = gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, bb});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(LinearOp, BadInputs) {
  try {
    linear(randn({2, 3}), randn({4, 5}));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("linear"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4, 5]"));
  }
  try {
    linear(randn({2, 3}), randn({4, 3}), randn({3}));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("linear"));
    EXPECT_THAT(e.what(), HasSubstr("bias"));
    EXPECT_THAT(e.what(), HasSubstr("[3]"));
  }
  try {
    linear(randn({2, 3}), randn({4, 3}, DType::F64));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("linear"));
    EXPECT_THAT(e.what(), HasSubstr("f32[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("f64[4, 3]"));
  }
}

}  // namespace
}  // namespace hymba
