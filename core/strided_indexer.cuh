// Device side of a StridedLayout (core/coalesce.h): the offsets (in elements) of row-major
// element i in each of N operands. Passed to kernels by value. Idx is uint32_t when the
// layout fits_32bit() (division is the cost of a strided kernel), else int64_t.
#pragma once

#include "core/coalesce.h"
#include "core/macros.h"

namespace hymba {

template <typename Idx, int N>
struct StridedIndexer {
  bool dense;  // every operand dense: offset = i, no arithmetic
  int ndim;
  Idx shape[kMaxDims];
  Idx strides[N][kMaxDims];

  // The loop runs over the full compile-time range with a guard so that the arrays stay in
  // parameter space instead of being copied to local memory for dynamic indexing.
  HYMBA_HD void get(Idx i, Idx (&off)[N]) const {
    HYMBA_UNROLL
    for (int k = 0; k < N; ++k) off[k] = dense ? i : Idx(0);
    if (dense) return;
    HYMBA_UNROLL
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d < ndim) {
        const Idx c = i % shape[d];
        i /= shape[d];
        HYMBA_UNROLL
        for (int k = 0; k < N; ++k) off[k] += c * strides[k][d];
      }
    }
  }
};

template <typename Idx, int N>
StridedIndexer<Idx, N> make_indexer(const StridedLayout<N>& L) {
  StridedIndexer<Idx, N> ix{};
  ix.dense = L.dense();
  ix.ndim = L.ndim;
  for (int d = 0; d < L.ndim; ++d) {
    ix.shape[d] = Idx(L.shape[d]);
    for (int k = 0; k < N; ++k) ix.strides[k][d] = Idx(L.strides[k][d]);
  }
  return ix;
}

}  // namespace hymba
