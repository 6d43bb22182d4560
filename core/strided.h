// Iteration over N same-shape strided operands on the CPU, by rows of the coalesced layout
// (core/coalesce.h: make_layout). Kernels write only the innermost loop: f(offsets, n,
// inner_strides) for one row of n elements.
#pragma once

#include <array>
#include <cstdint>

#include "core/coalesce.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/tensor.h"

namespace hymba {

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

}  // namespace hymba
