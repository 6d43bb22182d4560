// Matrix products: C = op(A) @ op(B), op = identity or transpose, batched over leading dims.
//
// A is (..., M, K) (or (..., K, M) with trans_a), B is (..., K, N) (or (..., N, K) with
// trans_b); the batch dims broadcast (numpy rules), so a 2-D weight multiplies every matrix
// of a batch. Transposed and sliced views go to BLAS as they are (a unit stride on either dim
// becomes a leading dimension plus a transpose flag); only a layout BLAS cannot express
// (no unit stride, overlapping rows) is copied first. CPU: OpenBLAS sgemm/dgemm, f32 and f64.
// CUDA: cuBLASLt, f32/bf16/f16 with fp32 accumulation (output in the input dtype); f64 via cuBLAS.
#pragma once

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
// A new contiguous (batch..., M, N) tensor.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
// c = alpha * op(a) @ op(b) + beta * c, into an existing tensor of exactly the result's
// shape (any layout; a layout BLAS cannot write goes through a temporary). beta = 0 ignores
// c's old contents, NaN included. Used to accumulate gradients in place.
void matmul_out(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
                double beta);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
namespace cuda {
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
void matmul_out(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
                double beta);
// f32 products on TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation): off by
// default, on with set_allow_tf32(true) or HYMBA_ALLOW_TF32=1 in the environment (read on the
// first f32 matmul; an explicit call wins). bf16/f16/f64 are unaffected.
void set_allow_tf32(bool allow);
bool allow_tf32();
// cuBLAS runs 16-bit products with a dimension that is not a multiple of 8 several times
// slower (on an H100 the LM head over a 32001-word vocabulary: 99-153 TFLOP/s, against
// 657-699 with the vocabulary padded to 32128; bench/RESULTS.md). So a plain 2-D bf16 or f16
// product with such a dimension and M*N*K of at least this threshold (default 2^33) runs on
// copies zero-padded to a multiple of 128 in those dimensions: the padding adds zeros to the
// sums and the padded outputs are dropped, so the result is the same product. The copies cost
// up to 2-3 passes over the padded operands. 0 pads every such product (tests); infinity
// never pads.
void set_gemm_pad_min_mnk(double mnk);
double gemm_pad_min_mnk();
}  // namespace cuda
#endif

inline Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false) {
  check_same_device("matmul", a, b);
  return HYMBA_DISPATCH(a.device(), matmul, a, b, trans_a, trans_b);
}

inline void matmul_out(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a = false,
                       bool trans_b = false, double alpha = 1.0, double beta = 0.0) {
  check_same_device("matmul", a, b);
  check_same_device("matmul", c, a);
  HYMBA_DISPATCH(c.device(), matmul_out, c, a, b, trans_a, trans_b, alpha, beta);
}

}  // namespace hymba::kernels
