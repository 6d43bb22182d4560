// Plain float64 building blocks for the layer tests' reference implementations. Matrices are
// row-major vectors; rows are (batch, time) flattened.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace hymba::testref {

using Vec = std::vector<double>;

// y = x W^T for x (rows, in), W (out, in).
inline Vec linear(const Vec& x, int64_t rows, int64_t in, const Vec& W, int64_t out) {
  Vec y(size_t(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += x[size_t(r * in + i)] * W[size_t(o * in + i)];
      y[size_t(r * out + o)] = s;
    }
  return y;
}

// RMSNorm of each row of x (rows, d) with weight w.
inline Vec rms(const Vec& x, int64_t rows, int64_t d, const Vec& w, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[size_t(r * d + i)] * x[size_t(r * d + i)];
    double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) y[size_t(r * d + i)] = x[size_t(r * d + i)] * inv * w[size_t(i)];
  }
  return y;
}

// Columns [c0, c0 + n) of a (rows, width) matrix.
inline Vec cols(const Vec& x, int64_t rows, int64_t width, int64_t c0, int64_t n) {
  Vec y(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) y[size_t(r * n + c)] = x[size_t(r * width + c0 + c)];
  return y;
}

inline double silu(double v) { return v / (1 + std::exp(-v)); }
inline double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }

}  // namespace hymba::testref
