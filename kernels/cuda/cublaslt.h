// The process's cuBLASLt state for one GPU: a handle, a 32 MiB workspace and a cache of the
// algorithm chosen for each problem shape, created on first use and kept for the process's
// lifetime. kernels/cuda/matmul.cu maps tensors onto gemm() calls.
//
// gemm() takes row-major operands, like the CPU's cblas calls (kernels/cpu/matmul.cpp):
//   C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b],  b < batch,
// with op(A) M x K (A stored M x K with row stride lda, or K x M when trans_a), op(B) K x N,
// C M x N with row stride ldc, and batch entries `stride_*` elements apart. cuBLAS is
// column-major; a row-major C is the column-major C^T = op(B)^T op(A)^T, so the call swaps
// the operands and passes the row strides as leading dimensions.
//
// Math: f32/bf16/f16 accumulate in fp32 (CUBLAS_COMPUTE_32F; f32 uses TF32 tensor cores only
// when allow_tf32 is set), output in the operands' dtype; f64 goes through the legacy cuBLAS
// handle (cublasDgemmStridedBatched) in full double precision. Every call is on stream() (0).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "core/dtype.h"

namespace hymba::kernels::cuda {

struct GemmArgs {
  DType dtype = DType::F32;  // of A, B and C
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  double alpha = 1.0, beta = 0.0;  // beta == 0: C is not read (NaN in C stays out)
  bool allow_tf32 = false;         // f32 only
};

class CublasLt {
 public:
  // The state of `device`, created on first use (thread-safe). Never destroyed: tearing
  // cuBLAS down from a static destructor races the CUDA runtime's own shutdown.
  static CublasLt& get(int device);

  // Requires m, n, k >= 1 and valid leading dimensions (>= the stored row length).
  void gemm(const GemmArgs& g);

  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

 private:
  explicit CublasLt(int device);

  // Everything the heuristic's choice depends on.
  struct Key {
    int dtype, compute;
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc, sa, sb, sc, batch;
    uint32_t align_a, align_b, align_c;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };

  int device_;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;  // f64 only, created on first f64 gemm
  void* workspace_ = nullptr;
  std::mutex mu_;  // guards algos_ and blas_
  std::unordered_map<Key, cublasLtMatmulAlgo_t, KeyHash> algos_;

  void gemm_f64(const GemmArgs& g);
};

}  // namespace hymba::kernels::cuda
