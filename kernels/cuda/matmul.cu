// Matrix products on CUDA (kernels/matmul.h) through cuBLASLt (kernels/cuda/cublaslt.h).
//
// The layout logic is the CPU kernel's (kernels/cpu/matmul.cpp): a matrix whose rows or
// columns are unit-stride goes to cuBLAS as it is (leading dimension from the other stride,
// plus a transpose flag), anything else is made contiguous first; a weight shared by the
// whole batch folds the batch into the rows of one tall gemm; a column-major output is
// computed as C^T = B^T A^T. Batches that the fold does not cover become strided-batched
// gemms over the innermost batch dim (after coalescing), looped over the outer ones. Large
// 16-bit products with a dimension that is not a multiple of 8 run on zero-padded copies
// (run_padded; kernels/matmul.h says why).
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "core/cuda_check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cublaslt.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/matmul_plan.h"

namespace hymba::kernels::cuda {

namespace {

using matmul_plan::batch_strides;
using matmul_plan::blas_layout;
using matmul_plan::BlasLayout;
using matmul_plan::fold_rows;
using matmul_plan::output_writable;
using matmul_plan::Problem;

// -1: not decided yet (HYMBA_ALLOW_TF32 read on first use), else 0 / 1.
std::atomic<int> g_allow_tf32{-1};

bool tf32_allowed() {
  int v = g_allow_tf32.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("HYMBA_ALLOW_TF32");
    v = env != nullptr && std::strcmp(env, "1") == 0 ? 1 : 0;
    int expected = -1;
    // A concurrent set_allow_tf32 wins over the environment.
    if (!g_allow_tf32.compare_exchange_strong(expected, v)) v = expected;
  }
  return v == 1;
}

std::atomic<double> g_pad_min_mnk{8589934592.0};  // 2^33 (kernels/matmul.h)

// ---------------------------------------------------------------- shapes (as the CPU)

Problem plan(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  HYMBA_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  check_cuda_tensor("matmul", "a", a);
  HYMBA_CHECK(is_floating(a.dtype()), "matmul: dtype ", dtype_name(a.dtype()),
              " not supported on CUDA, expected f32, f64, bf16 or f16");
  return matmul_plan::plan(a, b, trans_a, trans_b);
}

// ---------------------------------------------------------------- gemm calls

// A logical rows x cols matrix: element (i, j) at ptr + (i*rs + j*cs) elements.
struct Mat {
  char* ptr;
  int64_t rows, cols, rs, cs;
  Mat t() const { return {ptr, cols, rows, cs, rs}; }
};

struct Call {
  int device;
  DType dtype;
  size_t es;
  bool tf32;
  double alpha, beta;
};

// C[i] = alpha A[i] B[i] + beta C[i] for i < batch, entries sa / sb / sc elements apart.
// Layouts are cuBLAS-compatible (checked by the caller); K >= 1.
void gemm_batch(const Call& call, const Mat& A, const Mat& B, const Mat& C, int64_t batch, int64_t sa, int64_t sb,
                int64_t sc) {
  const BlasLayout lc = blas_layout(C.rows, C.cols, C.rs, C.cs);
  if (lc.trans) {  // column-major C: C^T = B^T A^T is row-major
    gemm_batch(call, B.t(), A.t(), C.t(), batch, sb, sa, sc);
    return;
  }
  const BlasLayout la = blas_layout(A.rows, A.cols, A.rs, A.cs), lb = blas_layout(B.rows, B.cols, B.rs, B.cs);
  HYMBA_CHECK(la.ok && lb.ok && lc.ok, "matmul: internal error, operand layout not cuBLAS-compatible");
  GemmArgs g;
  g.dtype = call.dtype;
  g.trans_a = la.trans;
  g.trans_b = lb.trans;
  g.m = C.rows;
  g.n = C.cols;
  g.k = A.cols;
  g.a = A.ptr;
  g.lda = la.ld;
  g.stride_a = sa;
  g.b = B.ptr;
  g.ldb = lb.ld;
  g.stride_b = sb;
  g.c = C.ptr;
  g.ldc = lc.ld;
  g.stride_c = sc;
  g.batch = batch;
  g.alpha = call.alpha;
  g.beta = call.beta;
  g.allow_tf32 = call.tf32;
  CublasLt::get(call.device).gemm(g);
}

void run(const Problem& p, const Tensor& c, Tensor a, Tensor b, bool trans_a, bool trans_b, double alpha,
         double beta) {
  const int64_t M = p.M, N = p.N, K = p.K;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: C = beta * C (beta 0 ignores C's old contents, NaN included)
    if (beta == 0.0)
      c.fill_(0.0);
    else
      ::hymba::kernels::cuda::scalar_out(ScalarOp::Mul, c, beta, c);
    return;
  }
  const auto [ars, acs] = matmul_plan::make_blas_readable(a, trans_a, M, K);
  const auto [brs, bcs] = matmul_plan::make_blas_readable(b, trans_b, K, N);
  const int64_t crs = c.strides()[size_t(c.dim() - 2)], ccs = c.strides().back();
  const size_t es = dtype_size(c.dtype());
  char* ap = static_cast<char*>(a.data_ptr());
  char* bp = static_cast<char*>(b.data_ptr());
  char* cp = static_cast<char*>(c.data_ptr());
  const Shape a_bst = batch_strides(a, p.batch), b_bst = batch_strides(b, p.batch), c_bst = batch_strides(c, p.batch);
  const int64_t nb = shape_numel(p.batch);
  const Call call{c.device().index, c.dtype(), es, c.dtype() == DType::F32 && tf32_allowed(), alpha, beta};

  // A weight shared by the whole batch (x @ W^T in every linear layer): one tall gemm.
  const bool b_shared = std::all_of(b_bst.begin(), b_bst.end(), [](int64_t s) { return s == 0; });
  int64_t afs = 0, cfs = 0;
  if (nb > 1 && b_shared && fold_rows(p.batch, a_bst, M, ars, &afs) && fold_rows(p.batch, c_bst, M, crs, &cfs)) {
    const Mat A{ap, nb * M, K, afs, acs}, C{cp, nb * M, N, cfs, ccs};
    if (blas_layout(A.rows, A.cols, A.rs, A.cs).ok && blas_layout(C.rows, C.cols, C.rs, C.cs).ok) {
      gemm_batch(call, A, {bp, K, N, brs, bcs}, C, 1, 0, 0, 0);
      return;
    }
  }

  // Batch dims coalesced across the three operands; the innermost becomes cuBLAS's strided
  // batch unless a or b is broadcast along it (stride 0), the others are looped here.
  const StridedLayout<3> L = make_layout<3>(p.batch, {&a_bst, &b_bst, &c_bst}, "matmul");
  int outer_dims = L.ndim;
  int64_t inner = 1, isa = 0, isb = 0, isc = 0;
  if (L.ndim > 0 && L.strides[0][L.ndim - 1] != 0 && L.strides[1][L.ndim - 1] != 0) {
    outer_dims = L.ndim - 1;
    inner = L.shape[outer_dims];
    isa = L.strides[0][outer_dims];
    isb = L.strides[1][outer_dims];
    isc = L.strides[2][outer_dims];
  }
  const int64_t outer = L.numel / inner;
  int64_t idx[kMaxDims] = {};
  int64_t ao = 0, bo = 0, co = 0;  // element offsets of the current outer entry
  for (int64_t i = 0; i < outer; ++i) {
    gemm_batch(call, {ap + ao * int64_t(es), M, K, ars, acs}, {bp + bo * int64_t(es), K, N, brs, bcs},
               {cp + co * int64_t(es), M, N, crs, ccs}, inner, isa, isb, isc);
    for (int d = outer_dims - 1; d >= 0; --d) {
      ao += L.strides[0][d];
      bo += L.strides[1][d];
      co += L.strides[2][d];
      if (++idx[d] < L.shape[d]) break;
      ao -= L.strides[0][d] * L.shape[d];
      bo -= L.strides[1][d] * L.shape[d];
      co -= L.strides[2][d] * L.shape[d];
      idx[d] = 0;
    }
  }
}

// ---------------------------------------------------------------- padded products

bool unaligned(int64_t d) { return d % 8 != 0; }
int64_t padded(int64_t d) { return unaligned(d) ? (d + 127) / 128 * 128 : d; }

// t (rows x cols) in a zeroed rows_p x cols_p buffer (t itself when no padding is needed).
Tensor zero_padded(const Tensor& t, int64_t rows_p, int64_t cols_p) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (rows == rows_p && cols == cols_p) return t;
  Tensor out = empty({rows_p, cols_p}, TensorOptions(t.dtype(), t.device()));
  if (cols_p > cols) out.narrow(1, cols, cols_p - cols).fill_(0.0);
  if (rows_p > rows) out.narrow(0, rows, rows_p - rows).fill_(0.0);
  out.narrow(0, 0, rows).narrow(1, 0, cols).copy_(t);
  return out;
}

// Runs c = alpha op(a) op(b) + beta c on zero-padded copies when the product qualifies
// (kernels/matmul.h, set_gemm_pad_min_mnk); returns false, having done nothing, otherwise.
bool run_padded(const Problem& p, const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
                double alpha, double beta) {
  if ((c.dtype() != DType::BF16 && c.dtype() != DType::F16) || a.dim() != 2 || b.dim() != 2 || c.dim() != 2)
    return false;
  const int64_t M = p.M, N = p.N, K = p.K;
  if (!unaligned(M) && !unaligned(N) && !unaligned(K)) return false;
  if (double(M) * double(N) * double(K) < g_pad_min_mnk.load(std::memory_order_relaxed)) return false;
  const int64_t Mp = padded(M), Np = padded(N), Kp = padded(K);
  // Operands as stored: op(a) is M x K (a is K x M when transposed), op(b) K x N.
  const Tensor ap = trans_a ? zero_padded(a, Kp, Mp) : zero_padded(a, Mp, Kp);
  const Tensor bp = trans_b ? zero_padded(b, Np, Kp) : zero_padded(b, Kp, Np);
  if (Mp == M && Np == N) {
    run(plan(ap, bp, trans_a, trans_b), c, ap, bp, trans_a, trans_b, alpha, beta);
    return true;
  }
  Tensor cp = empty({Mp, Np}, TensorOptions(c.dtype(), c.device()));
  Tensor real = cp.narrow(0, 0, M).narrow(1, 0, N);
  if (beta != 0.0) real.copy_(c);  // the padded part's contents only reach dropped outputs
  run(plan(ap, bp, trans_a, trans_b), cp, ap, bp, trans_a, trans_b, alpha, beta);
  c.copy_(real);
  return true;
}

}  // namespace

void set_gemm_pad_min_mnk(double mnk) { g_pad_min_mnk.store(mnk, std::memory_order_relaxed); }
double gemm_pad_min_mnk() { return g_pad_min_mnk.load(std::memory_order_relaxed); }

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow ? 1 : 0, std::memory_order_relaxed); }
bool allow_tf32() { return tf32_allowed(); }

void matmul_out(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
                double beta) {
  Problem p = plan(a, b, trans_a, trans_b);
  HYMBA_CHECK(c.defined() && c.shape() == p.out_shape, "matmul: output ", c.defined() ? c.meta_str() : "undefined",
              " does not match the product of ", a.meta_str(), " and ", b.meta_str(), ", expected ",
              shape_str(p.out_shape));
  HYMBA_CHECK(c.dtype() == a.dtype(), "matmul: output dtype ", c.meta_str(), " differs from operands ",
              a.meta_str());
  if (c.numel() == 0) return;
  ::hymba::cuda::DeviceGuard guard(c.device().index);
  Tensor a0 = a.detach(), b0 = b.detach(), c0 = c.detach();
  if (!output_writable(c0, p)) {
    Tensor tmp = beta == 0.0 ? empty(p.out_shape, TensorOptions(c.dtype(), c.device())) : c0.contiguous();
    matmul_out(tmp, a0, b0, trans_a, trans_b, alpha, beta);
    c0.copy_(tmp);
    return;
  }
  if (run_padded(p, c0, a0, b0, trans_a, trans_b, alpha, beta)) return;
  run(p, c0, a0, b0, trans_a, trans_b, alpha, beta);
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  Problem p = plan(a, b, trans_a, trans_b);
  Tensor c = empty(p.out_shape, TensorOptions(a.dtype(), a.device()));
  if (c.numel() == 0) return c;
  ::hymba::cuda::DeviceGuard guard(c.device().index);
  const Tensor a0 = a.detach(), b0 = b.detach();
  if (!run_padded(p, c, a0, b0, trans_a, trans_b, 1.0, 0.0)) run(p, c, a0, b0, trans_a, trans_b, 1.0, 0.0);
  return c;
}

}  // namespace hymba::kernels::cuda
