// Iteration over N same-shape strided operands (outputs and broadcast inputs alike: a
// broadcast operand simply has stride 0). Dims are coalesced where every operand allows it,
// so contiguous tensors become one long row, and size-1 dims are dropped. Kernels write only
// the innermost loop: f(offsets, n, inner_strides) for one row of n elements.
#pragma once

#include <array>
#include <cstdint>

#include "core/error.h"
#include "core/parallel.h"
#include "core/tensor.h"

namespace hymba {

constexpr int kMaxDims = 12;

template <int N>
struct StridedLayout {
  int ndim = 0;  // after coalescing; 0 means a single element
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
  int64_t numel = 1;
};

// strides[k] are operand k's strides (in elements) for `shape`.
template <int N>
StridedLayout<N> make_layout(const Shape& shape, const std::array<const Shape*, N>& strides) {
  HYMBA_CHECK(int(shape.size()) <= kMaxDims, "tensors of more than ", kMaxDims, " dims are not supported, got ",
              shape_str(shape));
  StridedLayout<N> L;
  for (int64_t s : shape) L.numel *= s;
  // Keep non-trivial dims, outermost first.
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    int nd = L.ndim;
    if (nd > 0) {
      // Merge into the previous (outer) dim when, for every operand, stepping the outer dim
      // equals stepping the inner one shape[d] times.
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (L.strides[k][nd - 1] != (*strides[k])[d] * shape[d]) merge = false;
      if (merge) {
        L.shape[nd - 1] *= shape[d];
        for (int k = 0; k < N; ++k) L.strides[k][nd - 1] = (*strides[k])[d];
        continue;
      }
    }
    L.shape[nd] = shape[d];
    for (int k = 0; k < N; ++k) L.strides[k][nd] = (*strides[k])[d];
    L.ndim++;
  }
  return L;
}

// Calls f(const std::array<int64_t, N>& offsets, int64_t n, const std::array<int64_t, N>& inner)
// once per row; rows are split across threads when the tensor has at least `grain` elements.
template <int N, typename F>
void for_each_row(const StridedLayout<N>& L, int64_t grain, F&& f) {
  if (L.numel == 0) return;
  std::array<int64_t, N> inner{};
  int64_t n = 1;
  if (L.ndim > 0) {
    n = L.shape[L.ndim - 1];
    for (int k = 0; k < N; ++k) inner[k] = L.strides[k][L.ndim - 1];
  }
  const int outer_dims = L.ndim > 0 ? L.ndim - 1 : 0;
  int64_t rows = L.numel / n;
  int64_t row_grain = grain <= n ? 1 : (grain + n - 1) / n;
  parallel_for(rows, row_grain, [&](int64_t r0, int64_t r1) {
    // Decompose r0 into an index over the outer dims, then step like an odometer.
    int64_t idx[kMaxDims] = {};
    std::array<int64_t, N> off{};
    int64_t rem = r0;
    for (int d = outer_dims - 1; d >= 0; --d) {
      idx[d] = rem % L.shape[d];
      rem /= L.shape[d];
      for (int k = 0; k < N; ++k) off[k] += idx[d] * L.strides[k][d];
    }
    for (int64_t r = r0; r < r1; ++r) {
      f(off, n, inner);
      for (int d = outer_dims - 1; d >= 0; --d) {
        idx[d]++;
        for (int k = 0; k < N; ++k) off[k] += L.strides[k][d];
        if (idx[d] < L.shape[d]) break;
        for (int k = 0; k < N; ++k) off[k] -= L.strides[k][d] * L.shape[d];
        idx[d] = 0;
      }
    }
  });
}

// Shape that a and b broadcast to (numpy rules); throws naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Strides of `t` viewed as `shape` (t's shape must broadcast to it): 0 on broadcast dims.
Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op);

}  // namespace hymba
