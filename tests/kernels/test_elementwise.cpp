// Elementwise kernels against direct float64 definitions; broadcasting; errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "kernels/elementwise.h"

using namespace hymba;
using namespace hymba::kernels;
using ::testing::HasSubstr;

namespace {

// Reference broadcast indexing: the element of `t` (shape ts) read at index idx of `out`.
double bread(const std::vector<double>& v, const Shape& ts, const Shape& os, int64_t linear) {
  std::vector<int64_t> idx(os.size());
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    idx[d] = linear % os[d];
    linear /= os[d];
  }
  int64_t off = 0, mul = 1;
  for (int64_t d = int64_t(ts.size()) - 1; d >= 0; --d) {
    int64_t od = d + int64_t(os.size() - ts.size());
    off += (ts[d] == 1 ? 0 : idx[od]) * mul;
    mul *= ts[d];
  }
  return v[size_t(off)];
}

}  // namespace

TEST(ElementwiseKernels, BinaryOpsBroadcastLikeNumpy) {
  Generator g(1);
  struct Case { Shape a, b, out; };
  std::vector<Case> cases = {{{3, 1, 5}, {4, 1}, {3, 4, 5}}, {{7}, {2, 3, 7}, {2, 3, 7}}, {{1}, {1}, {1}},
                             {{2, 3}, {2, 3}, {2, 3}},        {{}, {5}, {5}},            {{6, 1}, {1, 9}, {6, 9}}};
  for (DType dt : {DType::F64, DType::F32}) {
    for (const auto& c : cases) {
      Tensor a = randn(c.a, dt, &g), b = rand(c.b, dt, &g, 0.5, 2.0);
      std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
      for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
        Tensor out = binary(op, a, b);
        ASSERT_EQ(out.shape(), c.out);
        std::vector<double> vo = out.to_vector<double>();
        for (int64_t i = 0; i < out.numel(); ++i) {
          double x = bread(va, c.a, c.out, i), y = bread(vb, c.b, c.out, i);
          double r = op == BinaryOp::Add ? x + y : op == BinaryOp::Sub ? x - y : op == BinaryOp::Mul ? x * y : x / y;
          double tol = dt == DType::F64 ? 1e-15 : 1e-6;
          ASSERT_NEAR(vo[size_t(i)], r, tol * (1 + std::fabs(r))) << binary_op_name(op) << " case " << shape_str(c.out);
        }
      }
    }
  }
}

TEST(ElementwiseKernels, NonContiguousOperandsAndLargeParallelTensors) {
  Generator g(2);
  Tensor base = randn({64, 3000}, DType::F64, &g);  // big enough to go multi-threaded
  Tensor at = base.t();                              // (3000, 64), transposed view
  Tensor b = randn({3000, 64}, DType::F64, &g);
  Tensor out = binary(BinaryOp::Mul, at, b);
  std::vector<double> vb = base.to_vector<double>(), bb = b.to_vector<double>(), vo = out.to_vector<double>();
  for (int64_t i = 0; i < 3000; ++i)
    for (int64_t j = 0; j < 64; ++j)
      ASSERT_EQ(vo[size_t(i * 64 + j)], vb[size_t(j * 3000 + i)] * bb[size_t(i * 64 + j)]);
  // In place through a strided output view: out += 2 * x
  Tensor o = zeros({3000, 64}, DType::F64).t();  // (64, 3000) non-contiguous
  axpy_(o, base, 2.0);
  std::vector<double> vt = o.to_vector<double>();
  for (size_t i = 0; i < vt.size(); ++i) ASSERT_EQ(vt[i], 2.0 * vb[i]);
}

TEST(ElementwiseKernels, UnaryScalarAndBackwardMatchDefinitions) {
  Generator g(3);
  Tensor x = rand({5, 7}, DType::F64, &g, 0.1, 3.0);
  Tensor gr = randn({5, 7}, DType::F64, &g);
  std::vector<double> vx = x.to_vector<double>(), vg = gr.to_vector<double>();
  struct U { UnaryOp op; double (*f)(double); double (*df)(double); };
  std::vector<U> us = {
      {UnaryOp::Neg, [](double v) { return -v; }, [](double) { return -1.0; }},
      {UnaryOp::Exp, [](double v) { return std::exp(v); }, [](double v) { return std::exp(v); }},
      {UnaryOp::Log, [](double v) { return std::log(v); }, [](double v) { return 1 / v; }},
      {UnaryOp::Sqrt, [](double v) { return std::sqrt(v); }, [](double v) { return 0.5 / std::sqrt(v); }},
      {UnaryOp::Rsqrt, [](double v) { return 1 / std::sqrt(v); }, [](double v) { return -0.5 * std::pow(v, -1.5); }},
      {UnaryOp::Abs, [](double v) { return std::fabs(v); }, [](double v) { return v > 0 ? 1.0 : -1.0; }},
  };
  for (const auto& u : us) {
    Tensor y = unary(u.op, x);
    Tensor dx = unary_backward(u.op, gr, x, y);
    std::vector<double> vy = y.to_vector<double>(), vd = dx.to_vector<double>();
    for (size_t i = 0; i < vx.size(); ++i) {
      EXPECT_NEAR(vy[i], u.f(vx[i]), 1e-14 * (1 + std::fabs(vy[i]))) << unary_op_name(u.op);
      EXPECT_NEAR(vd[i], vg[i] * u.df(vx[i]), 1e-13 * (1 + std::fabs(vd[i]))) << unary_op_name(u.op);
    }
  }
  std::vector<double> p = scalar(ScalarOp::Pow, x, 1.5).to_vector<double>();
  std::vector<double> r = scalar(ScalarOp::RDiv, x, 2.0).to_vector<double>();
  std::vector<double> s = scalar(ScalarOp::RSub, x, 2.0).to_vector<double>();
  for (size_t i = 0; i < vx.size(); ++i) {
    EXPECT_NEAR(p[i], std::pow(vx[i], 1.5), 1e-14);
    EXPECT_NEAR(r[i], 2.0 / vx[i], 1e-14);
    EXPECT_NEAR(s[i], 2.0 - vx[i], 1e-14);
  }
}

TEST(ElementwiseKernels, MismatchesThrowNamingOpAndShapes) {
  Tensor a = zeros({2, 3}), b = zeros({4});
  try {
    binary(BinaryOp::Add, a, b);
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("add: shapes [2, 3] and [4] cannot be broadcast"));
  }
  try {
    binary(BinaryOp::Mul, a, zeros({2, 3}, DType::F64));
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("mul: dtype mismatch: f32[2, 3] cpu and f64[2, 3] cpu"));
  }
  EXPECT_THROW(unary(UnaryOp::Exp, zeros({2}, DType::I32)), Error);
}
