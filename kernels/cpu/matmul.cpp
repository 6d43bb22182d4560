#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <climits>

#include "core/parallel.h"
#include "core/strided.h"
#include "kernels/matmul_plan.h"

extern "C" void openblas_set_num_threads(int);

namespace hymba::kernels::cpu {
namespace {

using matmul_plan::batch_strides;
using matmul_plan::blas_layout;
using matmul_plan::BlasLayout;
using matmul_plan::fold_rows;
using matmul_plan::output_writable;
using matmul_plan::plan;
using matmul_plan::Problem;

// OpenBLAS keeps its own pool; follow hymba::num_threads() (HYMBA_NUM_THREADS, or a later
// set_num_threads) without paying the call on every gemm.
void sync_blas_threads() {
  static std::atomic<int> applied{-1};
  const int nt = num_threads();
  if (applied.load(std::memory_order_relaxed) != nt) {
    openblas_set_num_threads(nt);
    applied.store(nt, std::memory_order_relaxed);
  }
}

// A logical rows x cols matrix at `ptr` whose element (i, j) is at i*rs + j*cs.
template <typename T>
struct Mat {
  T* ptr;
  int64_t rows, cols, rs, cs;
  Mat t() const { return {ptr, cols, rows, cs, rs}; }
};

template <typename T>
BlasLayout layout_of(const Mat<T>& m) {
  return blas_layout(m.rows, m.cols, m.rs, m.cs);
}

inline void gemm_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A,
                      int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, double alpha, const double* A,
                      int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// C = alpha A B + beta C for matrices whose layouts BLAS accepts (checked by the caller;
// C may be row- or column-major).
template <typename T>
void gemm2d(const Mat<const T>& A, const Mat<const T>& B, const Mat<T>& C, T alpha, T beta) {
  BlasLayout lc = layout_of(C);
  if (lc.trans) {  // column-major C: compute C^T = B^T A^T, which is row-major
    gemm2d<T>(B.t(), A.t(), C.t(), alpha, beta);
    return;
  }
  const int64_t M = C.rows, N = C.cols, K = A.cols;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS leaves lda/ldb unconstrained here; do beta * C ourselves
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        T& c = C.ptr[i * C.rs + j * C.cs];
        c = beta == T(0) ? T(0) : beta * c;
      }
    return;
  }
  BlasLayout la = layout_of(A), lb = layout_of(B);
  HYMBA_CHECK(la.ok && lb.ok && lc.ok, "matmul: internal error, operand layout not BLAS-compatible");
  HYMBA_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && la.ld <= INT_MAX && lb.ld <= INT_MAX &&
                  lc.ld <= INT_MAX,
              "matmul: dims or strides beyond BLAS's 32-bit range (M ", M, ", N ", N, ", K ", K, ")");
  gemm_call(la.trans ? CblasTrans : CblasNoTrans, lb.trans ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), alpha,
            A.ptr, int(la.ld), B.ptr, int(lb.ld), beta, C.ptr, int(lc.ld));
}

template <typename T>
void run(const Problem& p, const Tensor& c, Tensor a, Tensor b, bool trans_a, bool trans_b, double alpha,
         double beta) {
  sync_blas_threads();
  const int64_t M = p.M, N = p.N, K = p.K;
  const auto [ars, acs] = matmul_plan::make_blas_readable(a, trans_a, M, K);
  const auto [brs, bcs] = matmul_plan::make_blas_readable(b, trans_b, K, N);
  const int64_t crs = c.strides()[size_t(c.dim() - 2)], ccs = c.strides().back();
  const T* ap = static_cast<const T*>(a.data_ptr());
  const T* bp = static_cast<const T*>(b.data_ptr());
  T* cp = static_cast<T*>(c.data_ptr());
  const Shape a_bst = batch_strides(a, p.batch), b_bst = batch_strides(b, p.batch), c_bst = batch_strides(c, p.batch);
  const int64_t nb = shape_numel(p.batch);
  const T al = T(alpha), be = T(beta);

  // A weight shared by the whole batch (x @ W^T in every linear layer): one tall gemm.
  const bool b_shared = std::all_of(b_bst.begin(), b_bst.end(), [](int64_t s) { return s == 0; });
  int64_t afs = 0, cfs = 0;
  if (nb > 1 && b_shared && fold_rows(p.batch, a_bst, M, ars, &afs) && fold_rows(p.batch, c_bst, M, crs, &cfs)) {
    const int64_t Mf = nb * M;
    Mat<const T> A{ap, Mf, K, afs, acs};
    Mat<T> C{cp, Mf, N, cfs, ccs};
    if (layout_of(A).ok || K == 0) {
      if (layout_of(C).ok) {
        gemm2d<T>(A, {bp, K, N, brs, bcs}, C, al, be);
        return;
      }
    }
  }
  // One gemm per batch entry; BLAS parallelizes inside each.
  int64_t idx[kMaxDims] = {};
  int64_t ao = 0, bo = 0, co = 0;
  const int64_t nd = int64_t(p.batch.size());
  for (int64_t i = 0; i < nb; ++i) {
    gemm2d<T>({ap + ao, M, K, ars, acs}, {bp + bo, K, N, brs, bcs}, {cp + co, M, N, crs, ccs}, al, be);
    for (int64_t d = nd - 1; d >= 0; --d) {
      ao += a_bst[d];
      bo += b_bst[d];
      co += c_bst[d];
      if (++idx[d] < p.batch[d]) break;
      ao -= a_bst[d] * p.batch[d];
      bo -= b_bst[d] * p.batch[d];
      co -= c_bst[d] * p.batch[d];
      idx[d] = 0;
    }
  }
}

}  // namespace

void matmul_out(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
                double beta) {
  Problem p = plan(a, b, trans_a, trans_b);
  HYMBA_CHECK(c.defined() && c.shape() == p.out_shape, "matmul: output ", c.defined() ? c.meta_str() : "undefined",
              " does not match the product of ", a.meta_str(), " and ", b.meta_str(), ", expected ",
              shape_str(p.out_shape));
  HYMBA_CHECK(c.dtype() == a.dtype(), "matmul: output dtype ", c.meta_str(), " differs from operands ",
              a.meta_str());
  if (c.numel() == 0) return;
  Tensor a0 = a.detach(), b0 = b.detach(), c0 = c.detach();
  if (!output_writable(c0, p)) {
    Tensor tmp = beta == 0.0 ? empty(p.out_shape, TensorOptions(c.dtype(), c.device())) : c0.contiguous();
    matmul_out(tmp, a0, b0, trans_a, trans_b, alpha, beta);
    c0.copy_(tmp);
    return;
  }
  dispatch_float(a.dtype(), "matmul",
                 [&](auto tag) { run<typename decltype(tag)::type>(p, c0, a0, b0, trans_a, trans_b, alpha, beta); });
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  Problem p = plan(a, b, trans_a, trans_b);
  dispatch_float(a.dtype(), "matmul", [](auto) {});  // reject integer operands before allocating
  Tensor c = empty(p.out_shape, TensorOptions(a.dtype(), a.device()));
  if (c.numel() == 0) return c;
  Tensor a0 = a.detach(), b0 = b.detach();
  dispatch_float(a.dtype(), "matmul",
                 [&](auto tag) { run<typename decltype(tag)::type>(p, c, a0, b0, trans_a, trans_b, 1.0, 0.0); });
  return c;
}

}  // namespace hymba::kernels::cpu
