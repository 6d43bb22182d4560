// The one host-side rule for walking N same-shape strided operands (outputs and broadcast
// inputs alike: a broadcast operand simply has stride 0): size-1 dims are dropped and a dim is
// merged into its outer neighbour wherever every operand steps through both as one, so a
// contiguous tensor becomes one long row. The CPU's row iteration (core/strided.h), the CUDA
// copies (core/cuda_copy.cu) and the CUDA kernels (kernels/cuda/common.cuh, through
// core/strided_indexer.cuh) all start from this layout. No OpenMP or CUDA here, so both
// compilers include it.
#pragma once

#include <array>
#include <climits>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace hymba {

constexpr int kMaxDims = 12;

template <int N>
struct StridedLayout {
  int ndim = 0;  // after coalescing; 0 means a single element
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
  int64_t numel = 1;

  // Every operand dense and in the same order: element i is at offset i in each.
  bool dense() const {
    if (ndim == 0) return true;
    if (ndim > 1) return false;
    for (int k = 0; k < N; ++k)
      if (strides[k][0] != 1) return false;
    return true;
  }
  // Whether row-major indices and every offset fit in 32 bits (and no stride is negative, so
  // unsigned arithmetic is exact): 32-bit division is several times cheaper on a GPU.
  bool fits_32bit() const {
    if (numel > INT32_MAX) return false;
    for (int k = 0; k < N; ++k) {
      int64_t extent = 0;
      for (int d = 0; d < ndim; ++d) {
        if (strides[k][d] < 0) return false;
        extent += strides[k][d] * (shape[d] - 1);
      }
      if (extent > INT32_MAX) return false;
    }
    return true;
  }
};

// strides[k] are operand k's strides (in elements) for `shape`; `op` names the caller in the
// error for too many dims.
template <int N>
StridedLayout<N> make_layout(const Shape& shape, const std::array<const Shape*, N>& strides,
                             const char* op = "strided iteration") {
  HYMBA_CHECK(int(shape.size()) <= kMaxDims, op, ": tensors of more than ", kMaxDims,
              " dims are not supported, got ", shape_str(shape));
  StridedLayout<N> L;
  for (int64_t s : shape) L.numel *= s;
  // Keep non-trivial dims, outermost first.
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const int nd = L.ndim;
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

// Shape that a and b broadcast to (numpy rules); throws naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Strides of `t` viewed as `shape` (t's shape must broadcast to it): 0 on broadcast dims.
Shape broadcast_strides(const Tensor& t, const Shape& shape, const char* op);

}  // namespace hymba
