// Softmax, log-softmax and cross-entropy kernels against plain float64 definitions: every
// dim, strided inputs, logits of magnitude 1e4, ignore_index, reductions, bad targets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/softmax_xent.h"

using namespace hymba;
using namespace hymba::kernels;
using ::testing::HasSubstr;

namespace {

// (outer, n, inner) for reducing `dim` of a contiguous tensor of shape s.
struct Split {
  int64_t outer = 1, n = 1, inner = 1;
};
Split split(const Shape& s, int64_t dim) {
  Split r;
  if (s.empty()) return r;
  int64_t d = dim < 0 ? dim + int64_t(s.size()) : dim;
  for (int64_t i = 0; i < int64_t(s.size()); ++i) {
    if (i < d) r.outer *= s[size_t(i)];
    if (i == d) r.n = s[size_t(i)];
    if (i > d) r.inner *= s[size_t(i)];
  }
  return r;
}

// softmax (log = false) or log_softmax of x along dim, straight from the definition.
std::vector<double> softmax_ref(const std::vector<double>& x, const Shape& s, int64_t dim, bool log) {
  Split p = split(s, dim);
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t i = 0; i < p.inner; ++i) {
      auto at = [&](int64_t k) { return size_t((o * p.n + k) * p.inner + i); };
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < p.n; ++k) m = std::max(m, x[at(k)]);
      double sum = 0;
      for (int64_t k = 0; k < p.n; ++k) sum += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < p.n; ++k) y[at(k)] = log ? x[at(k)] - m - std::log(sum) : std::exp(x[at(k)] - m) / sum;
    }
  return y;
}

// Backward as a Jacobian-vector product: d softmax_j / d x_k = p_j ([j == k] - p_k) and
// d log_softmax_j / d x_k = [j == k] - p_k, with p the softmax.
std::vector<double> softmax_grad_ref(const std::vector<double>& x, const std::vector<double>& dy, const Shape& s,
                                     int64_t dim, bool log) {
  Split sp = split(s, dim);
  std::vector<double> p = softmax_ref(x, s, dim, false);
  std::vector<double> dx(x.size());
  for (int64_t o = 0; o < sp.outer; ++o)
    for (int64_t i = 0; i < sp.inner; ++i) {
      auto at = [&](int64_t k) { return size_t((o * sp.n + k) * sp.inner + i); };
      for (int64_t k = 0; k < sp.n; ++k) {
        double acc = 0;
        for (int64_t j = 0; j < sp.n; ++j) {
          double delta = j == k ? 1.0 : 0.0;
          acc += dy[at(j)] * (log ? delta - p[at(k)] : p[at(j)] * (delta - p[at(k)]));
        }
        dx[at(k)] = acc;
      }
    }
  return dx;
}

// Per-row cross-entropy loss and its gradient (softmax - onehot) * grad_row * scale.
struct XentRef {
  std::vector<double> loss, dlogits;
  int64_t count = 0;
};
XentRef xent_ref(const std::vector<double>& x, const std::vector<int64_t>& t, int64_t v, int64_t ignore,
                 const std::vector<double>& grad_rows, double scale) {
  XentRef r;
  int64_t rows = int64_t(t.size());
  r.dlogits.assign(x.size(), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    if (t[size_t(i)] == ignore) {
      r.loss.push_back(0.0);
      continue;
    }
    r.count++;
    const double* xr = &x[size_t(i * v)];
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < v; ++j) m = std::max(m, xr[j]);
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(xr[j] - m);
    double lse = m + std::log(sum);
    r.loss.push_back(lse - xr[t[size_t(i)]]);
    double g = grad_rows[size_t(i)] * scale;
    for (int64_t j = 0; j < v; ++j)
      r.dlogits[size_t(i * v + j)] = (std::exp(xr[j] - lse) - (j == t[size_t(i)] ? 1.0 : 0.0)) * g;
  }
  return r;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& ref, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], ref[i], atol + rtol * std::fabs(ref[i])) << what << " at " << i;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Random targets in [0, v), with roughly one in `ignore_every` set to `ignore`.
Tensor random_targets(int64_t rows, int64_t v, int64_t ignore, int ignore_every, Generator& g, DType dt,
                      Shape shape = {}) {
  std::vector<double> u = rand({rows}, DType::F64, &g).to_vector<double>();
  std::vector<int64_t> t;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t c = std::min<int64_t>(v - 1, int64_t(u[size_t(i)] * double(v)));
    t.push_back(ignore_every > 0 && i % ignore_every == 1 ? ignore : c);
  }
  if (shape.empty()) shape = {rows};
  return from_vector<int64_t>(t, shape).to(dt);
}

}  // namespace

TEST(SoftmaxKernels, ForwardAndBackwardMatchDefinitionOnEveryDim) {
  Generator g(1);
  for (DType dt : {DType::F64, DType::F32}) {
    // f64 to 1e-13, f32 to 1e-6 (inputs O(3), so sums of O(1) terms)
    const double tol = dt == DType::F64 ? 1e-13 : 1e-6;
    for (Shape s : {Shape{2, 3, 5}, Shape{1, 4, 1}, Shape{7}, Shape{}, Shape{3, 1}, Shape{2, 70, 3}}) {
      Tensor x = randn(s, dt, &g, 0.0, 3.0), dy = randn(s, dt, &g);
      std::vector<double> xv = x.to_vector<double>(), dyv = dy.to_vector<double>();
      int64_t nd = int64_t(s.size());
      for (int64_t dim = -std::max<int64_t>(nd, 1); dim < std::max<int64_t>(nd, 1); ++dim) {
        std::string what = shape_str(s) + " dim " + std::to_string(dim) + " " + dtype_name(dt);
        Tensor y = softmax_forward(x, dim), ly = log_softmax_forward(x, dim);
        ASSERT_EQ(y.shape(), s);
        expect_close(y.to_vector<double>(), softmax_ref(xv, s, dim, false), tol, tol, "softmax " + what);
        expect_close(ly.to_vector<double>(), softmax_ref(xv, s, dim, true), tol, tol, "log_softmax " + what);
        expect_close(softmax_backward(dy, y, dim).to_vector<double>(), softmax_grad_ref(xv, dyv, s, dim, false), tol,
                     tol, "softmax_backward " + what);
        expect_close(log_softmax_backward(dy, ly, dim).to_vector<double>(), softmax_grad_ref(xv, dyv, s, dim, true),
                     tol, tol * 4, "log_softmax_backward " + what);
      }
    }
  }
}

TEST(SoftmaxKernels, StableForHugeAndMaskedInputs) {
  Generator g(2);
  // f32 logits of magnitude 1e4 and -inf entries (masked positions): finite, rows sum to 1,
  // and equal to the float64 definition evaluated on the same f32 inputs.
  Tensor x = randn({6, 300}, DType::F32, &g, 0.0, 1e4);
  std::vector<double> xv = x.to_vector<double>();
  for (int64_t j = 0; j < 300; j += 7) xv[size_t(2 * 300 + j)] = -std::numeric_limits<double>::infinity();
  x = from_vector<double>(xv, {6, 300}).to(DType::F32);
  std::vector<double> y = softmax_forward(x).to_vector<double>(), ly = log_softmax_forward(x).to_vector<double>();
  std::vector<double> ry = softmax_ref(xv, {6, 300}, -1, false), rly = softmax_ref(xv, {6, 300}, -1, true);
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << i;
    ASSERT_NEAR(y[i], ry[i], 1e-6 * ry[i] + 1e-30) << i;
    if (std::isinf(rly[i])) {
      ASSERT_EQ(ly[i], rly[i]) << i;
    } else {
      // log-probabilities down to -1e4 * several: f32 relative precision.
      ASSERT_NEAR(ly[i], rly[i], 1e-6 * std::fabs(rly[i]) + 1e-6) << i;
    }
  }
  for (int r = 0; r < 6; ++r) {
    double s = 0;
    for (int j = 0; j < 300; ++j) s += y[size_t(r * 300 + j)];
    EXPECT_NEAR(s, 1.0, 1e-6) << "row " << r;
  }
}

TEST(SoftmaxKernels, StridedAndLargeInputsMatchContiguous) {
  Generator g(3);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor base = randn({128, 160}, dt, &g);  // big enough to split across threads
    Tensor x = base.t();
    Tensor dy = randn({160, 128}, dt, &g);
    for (int64_t dim : {0, 1}) {
      EXPECT_EQ(softmax_forward(x, dim).to_vector<double>(), softmax_forward(x.contiguous(), dim).to_vector<double>());
      Tensor y = softmax_forward(x, dim);
      EXPECT_EQ(softmax_backward(dy.t().contiguous().t(), y, dim).to_vector<double>(),
                softmax_backward(dy, y, dim).to_vector<double>());
    }
  }
}

TEST(SoftmaxKernels, BadInputsNameTheOpAndShapes) {
  std::string m = error_of([] { softmax_forward(zeros({2, 3}), 2); });
  EXPECT_THAT(m, HasSubstr("softmax"));
  EXPECT_THAT(m, HasSubstr("dim 2"));
  m = error_of([] { log_softmax_forward(zeros({2, 3}, DType::I32), -1); });
  EXPECT_THAT(m, HasSubstr("log_softmax"));
  EXPECT_THAT(m, HasSubstr("i32"));
  m = error_of([] { softmax_backward(zeros({2, 4}), zeros({2, 3}), -1); });
  EXPECT_THAT(m, HasSubstr("softmax_backward"));
  EXPECT_THAT(m, HasSubstr("[2, 4]"));
  EXPECT_THAT(m, HasSubstr("[2, 3]"));
  m = error_of([] { log_softmax_backward(zeros({2, 3}, DType::F64), zeros({2, 3}), -1); });
  EXPECT_THAT(m, HasSubstr("log_softmax_backward"));
  EXPECT_THAT(m, HasSubstr("f64"));
  EXPECT_THAT(m, HasSubstr("f32"));
}

TEST(CrossEntropyKernels, ForwardAndBackwardMatchDefinitionForEveryReduction) {
  Generator g(4);
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 2e-6;
    for (DType tdt : {DType::I64, DType::I32}) {
      for (int64_t ignore : {int64_t(-100), int64_t(0)}) {
        const int64_t rows = 37, v = 11;
        Tensor logits = randn({rows, v}, dt, &g, 0.0, 3.0);
        Tensor targets = random_targets(rows, v, ignore, 4, g, tdt);
        std::vector<double> xv = logits.to_vector<double>();
        std::vector<int64_t> tv = targets.to_vector<int64_t>();
        std::string what = std::string(dtype_name(dt)) + " targets " + dtype_name(tdt) + " ignore " +
                           std::to_string(ignore);
        // None: per-row losses and per-row gradients.
        Tensor grow = randn({rows}, dt, &g);
        XentRef rn = xent_ref(xv, tv, v, ignore, grow.to_vector<double>(), 1.0);
        CrossEntropyForward fn = cross_entropy_forward(logits, targets, ignore, LossReduction::None);
        ASSERT_EQ(fn.loss.shape(), Shape({rows}));
        ASSERT_EQ(fn.count, rn.count);
        expect_close(fn.loss.to_vector<double>(), rn.loss, tol, tol, "losses " + what);
        expect_close(cross_entropy_backward(grow, logits, targets, fn.stats, ignore, 1.0).to_vector<double>(),
                     rn.dlogits, tol, tol, "dlogits none " + what);
        // Sum and Mean: a 0-dim loss and a 0-dim incoming gradient.
        double total = 0;
        for (double l : rn.loss) total += l;
        for (LossReduction red : {LossReduction::Sum, LossReduction::Mean}) {
          CrossEntropyForward f = cross_entropy_forward(logits, targets, ignore, red);
          ASSERT_EQ(f.loss.dim(), 0);
          double scale = red == LossReduction::Mean ? 1.0 / double(rn.count) : 1.0;
          EXPECT_NEAR(f.loss.item(), total * scale, tol * total * scale) << what;
          Tensor g0 = full({}, 0.7, dt);
          XentRef rr = xent_ref(xv, tv, v, ignore, std::vector<double>(size_t(rows), 0.7), scale);
          expect_close(cross_entropy_backward(g0, logits, targets, f.stats, ignore, scale).to_vector<double>(),
                       rr.dlogits, tol, tol * scale, "dlogits reduced " + what);
        }
      }
    }
  }
}

TEST(CrossEntropyKernels, LeadingDimsAndSingleRow) {
  Generator g(5);
  Tensor logits = randn({2, 3, 9}, DType::F64, &g);
  Tensor targets = random_targets(6, 9, -100, 0, g, DType::I64, {2, 3});
  CrossEntropyForward f = cross_entropy_forward(logits, targets, -100, LossReduction::None);
  ASSERT_EQ(f.loss.shape(), Shape({2, 3}));
  XentRef r = xent_ref(logits.to_vector<double>(), targets.to_vector<int64_t>(), 9, -100,
                       std::vector<double>(6, 1.0), 1.0);
  expect_close(f.loss.to_vector<double>(), r.loss, 1e-12, 1e-12, "3-d logits");
  // One row: logits (V) with a 0-dim target.
  Tensor l1 = randn({5}, DType::F64, &g);
  Tensor t1 = from_vector<int64_t>({3}, {});
  XentRef r1 = xent_ref(l1.to_vector<double>(), {3}, 5, -100, {1.0}, 1.0);
  EXPECT_NEAR(cross_entropy_forward(l1, t1).loss.item(), r1.loss[0], 1e-12);
}

TEST(CrossEntropyKernels, AllIgnoredGivesZeroNotNaN) {
  Tensor logits = randn({4, 6});
  Tensor targets = full({4}, -100, DType::I64);
  CrossEntropyForward f = cross_entropy_forward(logits, targets, -100, LossReduction::Mean);
  EXPECT_EQ(f.count, 0);
  EXPECT_EQ(f.loss.item(), 0.0);
  Tensor d = cross_entropy_backward(ones({}), logits, targets, f.stats, -100, 0.0);
  EXPECT_EQ(d.to_vector<float>(), std::vector<float>(24, 0.0f));
  // No rows at all behaves the same.
  CrossEntropyForward e = cross_entropy_forward(zeros({0, 6}), zeros({0}, DType::I64), -100, LossReduction::Mean);
  EXPECT_EQ(e.loss.item(), 0.0);
}

TEST(CrossEntropyKernels, StableForLogitsOfMagnitude1e4) {
  Generator g(6);
  const int64_t rows = 16, v = 500;
  // f32 logits spread over +-3e4, targets both at the largest and at very negative logits.
  Tensor logits = randn({rows, v}, DType::F32, &g, 0.0, 1e4);
  std::vector<double> xv = logits.to_vector<double>();
  std::vector<int64_t> tv;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t best = 0, worst = 0;
    for (int64_t j = 0; j < v; ++j) {
      if (xv[size_t(i * v + j)] > xv[size_t(i * v + best)]) best = j;
      if (xv[size_t(i * v + j)] < xv[size_t(i * v + worst)]) worst = j;
    }
    tv.push_back(i % 3 == 0 ? best : i % 3 == 1 ? worst : (i * 37) % v);
  }
  Tensor targets = from_vector<int64_t>(tv, {rows});
  Tensor grow = ones({rows});
  XentRef r = xent_ref(xv, tv, v, -100, std::vector<double>(size_t(rows), 1.0), 1.0);
  CrossEntropyForward f = cross_entropy_forward(logits, targets, -100, LossReduction::None);
  std::vector<double> loss = f.loss.to_vector<double>();
  for (int64_t i = 0; i < rows; ++i) {
    ASSERT_TRUE(std::isfinite(loss[size_t(i)])) << i;
    // Losses range from ~0 (target is the max) to ~6e4: f32 relative precision.
    ASSERT_NEAR(loss[size_t(i)], r.loss[size_t(i)], 1e-6 * r.loss[size_t(i)] + 1e-6) << i;
  }
  // The gradient, recomputed from the saved stats, is as precise as at small magnitudes.
  std::vector<double> d = cross_entropy_backward(grow, logits, targets, f.stats, -100, 1.0).to_vector<double>();
  for (size_t i = 0; i < d.size(); ++i) {
    ASSERT_TRUE(std::isfinite(d[i])) << i;
    ASSERT_NEAR(d[i], r.dlogits[i], 1e-6 * std::fabs(r.dlogits[i]) + 1e-7) << i;
  }
  // Every row's gradient sums to 0 (softmax sums to 1).
  for (int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += d[size_t(i * v + j)];
    EXPECT_NEAR(s, 0.0, 1e-6) << "row " << i;
  }
  // The mean is finite too.
  EXPECT_TRUE(std::isfinite(cross_entropy_forward(logits, targets).loss.item()));
}

TEST(CrossEntropyKernels, LossIsIdenticalForAnyThreadCount) {
  Generator g(7);
  Tensor logits = randn({257, 300});
  Tensor targets = random_targets(257, 300, -100, 5, g, DType::I64);
  int saved = num_threads();
  std::vector<double> losses;
  std::vector<std::vector<float>> grads;
  for (int nt : {1, 2, 5}) {
    set_num_threads(nt);
    CrossEntropyForward f = cross_entropy_forward(logits, targets);
    losses.push_back(f.loss.item());
    grads.push_back(cross_entropy_backward(ones({}), logits, targets, f.stats, -100, 1.0 / double(f.count))
                        .to_vector<float>());
  }
  set_num_threads(saved);
  for (size_t i = 1; i < losses.size(); ++i) {
    EXPECT_EQ(losses[i], losses[0]);
    EXPECT_EQ(grads[i], grads[0]);
  }
}

TEST(CrossEntropyKernels, StridedLogitsMatchContiguous) {
  Generator g(8);
  Tensor base = randn({40, 12});
  Tensor logits = base.t();  // (12, 40)
  Tensor targets = random_targets(12, 40, -100, 3, g, DType::I32);
  CrossEntropyForward a = cross_entropy_forward(logits, targets, -100, LossReduction::None);
  CrossEntropyForward b = cross_entropy_forward(logits.contiguous(), targets, -100, LossReduction::None);
  EXPECT_EQ(a.loss.to_vector<double>(), b.loss.to_vector<double>());
  Tensor gr = randn({12});
  EXPECT_EQ(cross_entropy_backward(gr, logits, targets, a.stats, -100, 1.0).to_vector<double>(),
            cross_entropy_backward(gr, logits.contiguous(), targets, b.stats, -100, 1.0).to_vector<double>());
}

TEST(CrossEntropyKernels, BadTargetsAndShapesAreNamed) {
  Tensor logits = zeros({4, 10});
  std::string m = error_of([&] { cross_entropy_forward(logits, from_vector<int64_t>({1, 2, 3, 10}, {4})); });
  EXPECT_THAT(m, HasSubstr("cross_entropy"));
  EXPECT_THAT(m, HasSubstr("target 10"));
  EXPECT_THAT(m, HasSubstr("row 3"));
  EXPECT_THAT(m, HasSubstr("10 classes"));
  m = error_of([&] { cross_entropy_forward(logits, from_vector<int32_t>({1, -5, 3, 4}, {4})); });
  EXPECT_THAT(m, HasSubstr("target -5"));
  EXPECT_THAT(m, HasSubstr("10 classes"));
  // -100 is fine with the default ignore_index, not with another one.
  EXPECT_NO_THROW(cross_entropy_forward(logits, from_vector<int64_t>({1, -100, 3, 4}, {4})));
  m = error_of([&] { cross_entropy_forward(logits, from_vector<int64_t>({1, -100, 3, 4}, {4}), -1); });
  EXPECT_THAT(m, HasSubstr("target -100"));
  m = error_of([&] { cross_entropy_forward(logits, zeros({5}, DType::I64)); });
  EXPECT_THAT(m, HasSubstr("cross_entropy"));
  EXPECT_THAT(m, HasSubstr("[5]"));
  EXPECT_THAT(m, HasSubstr("[4, 10]"));
  m = error_of([&] { cross_entropy_forward(logits, zeros({4})); });
  EXPECT_THAT(m, HasSubstr("cross_entropy"));
  EXPECT_THAT(m, HasSubstr("f32[4]"));
  m = error_of([&] { cross_entropy_forward(zeros({4, 0}), zeros({4}, DType::I64)); });
  EXPECT_THAT(m, HasSubstr("[4, 0]"));
  CrossEntropyForward f = cross_entropy_forward(logits, zeros({4}, DType::I64));
  m = error_of([&] { cross_entropy_backward(ones({3}), logits, zeros({4}, DType::I64), f.stats, -100, 1.0); });
  EXPECT_THAT(m, HasSubstr("cross_entropy_backward"));
  EXPECT_THAT(m, HasSubstr("[3]"));
  EXPECT_THAT(m, HasSubstr("[4]"));
}
