// Host-side planning shared by the CPU (OpenBLAS) and CUDA (cuBLASLt) matmul kernels: the
// shapes of a (batched, broadcast) product, and how a BLAS library can read a strided matrix
// without a copy. Both libraries take row-major operands with a transpose flag and one
// leading dimension, so the same rules decide when a view can be passed as it is.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "core/error.h"
#include "core/tensor.h"

namespace hymba::kernels::matmul_plan {

struct Problem {
  Shape batch, out_shape;
  int64_t M = 0, N = 0, K = 0;
};

inline Problem plan(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  HYMBA_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  HYMBA_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: expected operands of at least 2 dims, got ", a.meta_str(),
              " and ", b.meta_str());
  HYMBA_CHECK(a.dtype() == b.dtype(), "matmul: dtype mismatch: ", a.meta_str(), " and ", b.meta_str());
  Problem p;
  const Shape &as = a.shape(), &bs = b.shape();
  const int64_t ar = as[as.size() - 2], ac = as.back(), br = bs[bs.size() - 2], bc = bs.back();
  p.M = trans_a ? ac : ar;
  p.K = trans_a ? ar : ac;
  const int64_t kb = trans_b ? bc : br;
  p.N = trans_b ? br : bc;
  HYMBA_CHECK(p.K == kb, "matmul: shapes ", shape_str(as), (trans_a ? "^T" : ""), " and ", shape_str(bs),
              (trans_b ? "^T" : ""), " cannot be multiplied: inner dims ", p.K, " and ", kb, " differ");
  Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t n = std::max(ab.size(), bb.size());
  p.batch.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t x = i < n - ab.size() ? 1 : ab[i - (n - ab.size())];
    const int64_t y = i < n - bb.size() ? 1 : bb[i - (n - bb.size())];
    HYMBA_CHECK(x == y || x == 1 || y == 1, "matmul: batch dims of ", shape_str(as), " and ", shape_str(bs),
                " cannot be broadcast together");
    p.batch[i] = x == 1 ? y : x;
  }
  p.out_shape = p.batch;
  p.out_shape.push_back(p.M);
  p.out_shape.push_back(p.N);
  return p;
}

// Strides of t's batch dims (all but the last two) broadcast to `batch`: 0 where broadcast.
inline Shape batch_strides(const Tensor& t, const Shape& batch) {
  Shape st(batch.size(), 0);
  const size_t tb = size_t(t.dim()) - 2, lead = batch.size() - tb;
  for (size_t i = 0; i < tb; ++i)
    if (t.shape()[i] != 1) st[lead + i] = t.strides()[i];
  return st;
}

// How BLAS (row-major terms) can read a logical rows x cols matrix with strides (rs, cs): as
// stored (trans false, ld = rs) when columns are unit-stride, or as the transpose of a
// row-major matrix (trans true, ld = cs) when rows are. Size-1 dims constrain nothing.
struct BlasLayout {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};

inline BlasLayout blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= std::max<int64_t>(1, cols)))
    return {true, false, rows == 1 ? std::max<int64_t>(1, cols) : rs};
  if ((rs == 1 || rows == 1) && (cols == 1 || cs >= std::max<int64_t>(1, rows)))
    return {true, true, cols == 1 ? std::max<int64_t>(1, rows) : cs};
  return {};
}

// op(t) (t or its transpose over the last two dims) as a logical matrix: (row stride, column
// stride).
inline std::pair<int64_t, int64_t> op_strides(const Tensor& t, bool trans) {
  const int64_t rs = t.strides()[size_t(t.dim() - 2)], cs = t.strides().back();
  return trans ? std::pair{cs, rs} : std::pair{rs, cs};
}

// Makes op(t), a rows x cols matrix, readable by BLAS: t itself when its strides allow,
// otherwise a contiguous copy. Returns op(t)'s strides.
inline std::pair<int64_t, int64_t> make_blas_readable(Tensor& t, bool trans, int64_t rows, int64_t cols) {
  auto st = op_strides(t, trans);
  if (!blas_layout(rows, cols, st.first, st.second).ok) {
    t = t.contiguous();
    st = op_strides(t, trans);
  }
  return st;
}

// Folds (batch dims..., row dim) of one operand into a single row dim, when its strides
// allow it: then a batch of products with a shared right operand is one gemm.
inline bool fold_rows(const Shape& batch, const Shape& bstrides, int64_t rows, int64_t rstride,
                      int64_t* folded_stride) {
  int64_t stride = rstride, extent = rows;  // the folded dim so far: `extent` rows at `stride`
  if (rows == 1) extent = 1;
  for (int64_t d = int64_t(batch.size()) - 1; d >= 0; --d) {
    if (batch[size_t(d)] == 1) continue;
    if (extent == 1) {
      stride = bstrides[size_t(d)];
    } else if (bstrides[size_t(d)] != stride * extent) {
      return false;
    }
    extent *= batch[size_t(d)];
  }
  *folded_stride = stride;
  return true;
}

// True when every matrix of c can be written by BLAS and distinct batch entries do not
// overlap (an expanded output would make gemm results race over the same memory).
inline bool output_writable(const Tensor& c, const Problem& p) {
  const int64_t crs = c.strides()[size_t(c.dim() - 2)], ccs = c.strides().back();
  if (!blas_layout(p.M, p.N, crs, ccs).ok) return false;
  if (p.M == 0 || p.N == 0) return true;
  for (size_t d = 0; d < p.batch.size(); ++d)
    if (p.batch[d] > 1 && c.strides()[d] == 0) return false;
  return true;
}

}  // namespace hymba::kernels::matmul_plan
