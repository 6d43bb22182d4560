#include "kernels/cuda/cublaslt.h"

#include <climits>
#include <memory>

#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

// RAII for the descriptors of one call (host objects, cheap to create).
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d) (void)cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d) (void)cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) (void)cublasLtMatmulPreferenceDestroy(d);
  }
};

cudaDataType_t cuda_dtype(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: break;
  }
  HYMBA_FAIL("matmul: dtype ", dtype_name(t), " not supported on CUDA, expected f32, f64, bf16 or f16");
}

// The alignment (bytes, a power of two up to 256) that every batch entry of an operand has:
// cuBLASLt's heuristic assumes 256 unless told, and a view at an odd offset would otherwise
// get a kernel that faults or reads wrong.
uint32_t alignment(const void* p, int64_t stride_elems, size_t elem_size, int64_t batch) {
  uint64_t v = uint64_t(reinterpret_cast<uintptr_t>(p)) | 256u;
  if (batch > 1) v |= uint64_t(stride_elems) * elem_size;
  return uint32_t(v & (~v + 1));  // lowest set bit
}

cublasOperation_t op_of(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

// A column-major layout of `rows` x `cols` with leading dimension ld, batched.
void make_layout(Layout& l, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  HYMBA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l.d, t, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    HYMBA_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    HYMBA_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

}  // namespace

size_t CublasLt::KeyHash::operator()(const Key& k) const {
  size_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(uint64_t(k.dtype) | uint64_t(k.compute) << 8 | uint64_t(k.ta) << 16 | uint64_t(k.tb) << 17);
  for (int64_t v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc, k.sa, k.sb, k.sc, k.batch}) mix(uint64_t(v));
  mix(uint64_t(k.align_a) | uint64_t(k.align_b) << 16 | uint64_t(k.align_c) << 32);
  return h;
}

CublasLt& CublasLt::get(int device) {
  static std::mutex mu;
  static std::unordered_map<int, CublasLt*> states;  // leaked on purpose (see the header)
  std::lock_guard<std::mutex> lock(mu);
  auto it = states.find(device);
  if (it != states.end()) return *it->second;
  auto* s = new CublasLt(device);
  states.emplace(device, s);
  return *s;
}

CublasLt::CublasLt(int device) : device_(device) {
  ::hymba::cuda::DeviceGuard guard(device);
  HYMBA_CUBLAS_CHECK(cublasLtCreate(&lt_), "creating the cuBLASLt handle for cuda:", device);
  HYMBA_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes), "allocating the cuBLASLt workspace on cuda:", device);
}

void CublasLt::gemm_f64(const GemmArgs& g) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!blas_) {
      HYMBA_CUBLAS_CHECK(cublasCreate(&blas_), "creating the cuBLAS handle for cuda:", device_);
      HYMBA_CUBLAS_CHECK(cublasSetStream(blas_, stream()));
    }
  }
  HYMBA_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.lda <= INT_MAX && g.ldb <= INT_MAX &&
                  g.ldc <= INT_MAX && g.batch <= INT_MAX,
              "matmul: f64 dims or strides beyond cuBLAS's 32-bit range (M ", g.m, ", N ", g.n, ", K ", g.k, ")");
  const double alpha = g.alpha, beta = g.beta;
  // Column-major C^T (N x M) = op(B)^T (N x K) op(A)^T (K x M).
  HYMBA_CUBLAS_CHECK(cublasDgemmStridedBatched(
      blas_, op_of(g.trans_b), op_of(g.trans_a), int(g.n), int(g.m), int(g.k), &alpha,
      static_cast<const double*>(g.b), int(g.ldb), g.stride_b, static_cast<const double*>(g.a), int(g.lda), g.stride_a,
      &beta, static_cast<double*>(g.c), int(g.ldc), g.stride_c, int(g.batch)));
}

void CublasLt::gemm(const GemmArgs& g) {
  HYMBA_CHECK(g.m > 0 && g.n > 0 && g.k > 0 && g.batch > 0, "cuBLASLt gemm: empty problem (M ", g.m, ", N ", g.n,
              ", K ", g.k, ", batch ", g.batch, ")");
  HYMBA_CHECK(g.batch <= INT32_MAX, "matmul: batch of ", g.batch, " matrices exceeds cuBLASLt's 32-bit count");
  ::hymba::cuda::DeviceGuard guard(device_);
  if (g.dtype == DType::F64) {
    gemm_f64(g);
    return;
  }
  const cudaDataType_t dt = cuda_dtype(g.dtype);
  const cublasComputeType_t compute =
      g.dtype == DType::F32 && g.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const size_t es = dtype_size(g.dtype);

  // Row-major C (M x N) is column-major C^T (N x M): cuBLAS's "A" is our B, its "B" our A.
  // Stored column-major, our row-major B (K x N, or N x K when transposed) is N x K (K x N),
  // and our A (M x K, or K x M) is K x M (M x K).
  MatmulDesc desc;
  HYMBA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.d, compute, CUDA_R_32F));
  const cublasOperation_t opa = op_of(g.trans_b), opb = op_of(g.trans_a);
  HYMBA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  HYMBA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  Layout la, lb, lc;
  make_layout(la, dt, g.trans_b ? g.k : g.n, g.trans_b ? g.n : g.k, g.ldb, g.batch, g.stride_b);
  make_layout(lb, dt, g.trans_a ? g.m : g.k, g.trans_a ? g.k : g.m, g.lda, g.batch, g.stride_a);
  make_layout(lc, dt, g.n, g.m, g.ldc, g.batch, g.stride_c);

  // cuBLAS's operands (A, B, C) are our (b, a, c).
  const Key key{int(g.dtype), int(compute), g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldc,
                g.stride_a, g.stride_b, g.stride_c, g.batch, alignment(g.b, g.stride_b, es, g.batch),
                alignment(g.a, g.stride_a, es, g.batch), alignment(g.c, g.stride_c, es, g.batch)};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = algos_.find(key);
    if (it != algos_.end()) {
      algo = it->second;
    } else {
      Preference pref;
      HYMBA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.d));
      const uint64_t ws = kWorkspaceBytes;
      HYMBA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                              sizeof(ws)));
      const uint32_t al[4] = {key.align_a, key.align_b, key.align_c, key.align_c};
      const cublasLtMatmulPreferenceAttributes_t which[4] = {
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
      for (int i = 0; i < 4; ++i)
        HYMBA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, which[i], &al[i], sizeof(al[i])));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      HYMBA_CUBLAS_CHECK(
          cublasLtMatmulAlgoGetHeuristic(lt_, desc.d, la.d, lb.d, lc.d, lc.d, pref.d, 1, &result, &found),
          "matmul ", dtype_name(g.dtype), " M ", g.m, " N ", g.n, " K ", g.k, " batch ", g.batch);
      HYMBA_CHECK(found > 0 && result.state == CUBLAS_STATUS_SUCCESS, "matmul: cuBLASLt has no algorithm for ",
                  dtype_name(g.dtype), " M ", g.m, " N ", g.n, " K ", g.k, " batch ", g.batch, " (lda ", g.lda,
                  ", ldb ", g.ldb, ", ldc ", g.ldc, ", trans ", g.trans_a, g.trans_b, ")");
      algo = result.algo;
      algos_.emplace(key, algo);
    }
  }
  const float alpha = float(g.alpha), beta = float(g.beta);
  HYMBA_CUBLAS_CHECK(cublasLtMatmul(lt_, desc.d, &alpha, g.b, la.d, g.a, lb.d, &beta, g.c, lc.d, g.c, lc.d, &algo,
                                    workspace_, kWorkspaceBytes, stream()),
                     "matmul ", dtype_name(g.dtype), " M ", g.m, " N ", g.n, " K ", g.k, " batch ", g.batch);
}

}  // namespace hymba::kernels::cuda
