// Warp-level tensor-core building blocks for the fast kernels: mma.sync m16n8k16 (bf16 in,
// fp32 accumulate), ldmatrix, and cp.async. Available on sm_80 and later (both of our
// default architectures). Inline PTX, because the wmma API hides which lane holds which
// accumulator element, and a flash-attention kernel must rescale and mask accumulator rows
// in registers.
//
// Fragment layouts of mma.m16n8k16.row.col (PTX ISA, "Matrix Fragments for mma.m16n8k16").
// In lane l, g = l / 4 (the "group", 0..7) and t = l % 4 (the thread in the group, 0..3):
//
//   A (16 x 16, row-major), 4 registers of 2 bf16 each (low half = lower column):
//     a[0] = A[g    ][2t, 2t+1]     a[1] = A[g + 8][2t, 2t+1]
//     a[2] = A[g    ][2t+8, 2t+9]   a[3] = A[g + 8][2t+8, 2t+9]
//   B (16 x 8, "col": element (k, n)), 2 registers:
//     b[0] = B[2t, 2t+1][g]         b[1] = B[2t+8, 2t+9][g]
//   C / D (16 x 8, fp32), 4 floats:
//     c[0], c[1] = C[g    ][2t, 2t+1]
//     c[2], c[3] = C[g + 8][2t, 2t+1]
//
// Two consequences the kernels use:
//   - A row of C is spread over the 4 lanes of a group: a row reduction (max, sum) is the
//     lane's own pair followed by two xor-shuffles with offsets 1 and 2.
//   - The C fragments of two adjacent n8 tiles (columns 0-7 and 8-15) hold exactly the A
//     fragment of the 16 x 16 tile they form: a = {pack(c0[0], c0[1]), pack(c0[2], c0[3]),
//     pack(c1[0], c1[1]), pack(c1[2], c1[3])} (c_to_a below). So P = softmax(S) feeds the
//     next product P V without a trip through shared memory.
//
// ldmatrix.x4 loads four 8 x 8 b16 matrices from shared memory; lanes 8i..8i+7 give the
// addresses of the 8 rows (16 bytes each, 16-byte aligned) of matrix i, and register i of lane
// l receives row l / 4, columns 2(l % 4), 2(l % 4) + 1 of matrix i (with .trans: of the
// transposed matrix). The *_addr helpers below give each lane's row address for the three
// operand shapes the kernels load; `ld` is the row stride in elements. A stride of a multiple
// of 64 elements puts the 8 rows of a matrix in the same banks; pad rows by 8 elements
// (kSmemPad) so that ldmatrix is conflict-free.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace hymba::kernels::cuda::mma {

constexpr int kSmemPad = 8;  // elements of padding per shared-memory row (16 bytes)

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// D = A * B + C (in place on c).
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}

// Lane addresses for ldmatrix_x4 (tile origin `base`, row stride `ld` elements, lane `l`):
//
// a_addr: the A fragment of the 16 x 16 row-major tile at base (matrices: rows 0-7 / 8-15
//   of columns 0-7, then of columns 8-15, matching a[0..3]).
__device__ __forceinline__ const __nv_bfloat16* a_addr(const __nv_bfloat16* base, int ld, int l) {
  return base + ((l & 7) + ((l >> 3) & 1) * 8) * ld + (l >> 4) * 8;
}
// b_addr_nk: B fragments of two adjacent n8 tiles when B is stored transposed, one row per n
//   (B(k, n) = base[n * ld + k]; e.g. K rows for S = Q K^T). Registers: {b[0], b[1]} of
//   n-tile 0 (rows n 0-7) in r[0], r[1]; of n-tile 1 (rows n 8-15) in r[2], r[3]. Non-trans.
__device__ __forceinline__ const __nv_bfloat16* b_addr_nk(const __nv_bfloat16* base, int ld, int l) {
  return base + ((l & 7) + (l >> 4) * 8) * ld + ((l >> 3) & 1) * 8;
}
// b_addr_kn: B fragments of two adjacent n8 tiles when B is stored row-major, one row per k
//   (B(k, n) = base[k * ld + n]; e.g. V rows for O = P V). Registers as for b_addr_nk; load
//   with ldmatrix_x4_trans.
__device__ __forceinline__ const __nv_bfloat16* b_addr_kn(const __nv_bfloat16* base, int ld, int l) {
  return base + ((l & 7) + ((l >> 3) & 1) * 8) * ld + (l >> 4) * 8;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (low 16 bits), .y = hi
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragment of the 16 x 16 tile whose two n8 halves are the accumulators c0 (columns
// 0-7) and c1 (columns 8-15), rounded to bf16.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16x2(c0[0], c0[1]);
  a[1] = pack_bf16x2(c0[2], c0[3]);
  a[2] = pack_bf16x2(c1[0], c1[1]);
  a[3] = pack_bf16x2(c1[2], c1[3]);
}

// Reductions over the 4 lanes of a group (one accumulator row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// cp.async: 16-byte global -> shared copies that bypass registers, so the next tile loads
// while the current one is computed. src_bytes < 16 zero-fills the rest (0: a zero chunk,
// for rows past the end; the source address must still be valid, e.g. the tensor's start).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most n of this thread's committed groups are still in flight.
template <int n> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
}

// 2^x on the special-function unit (ex2.approx.ftz.f32: maximum relative error 2^-22, subnormal
// inputs and results flushed to zero, 2^-inf = +0). Softmax exponents are <= 0 after the row
// max is subtracted, so the flush only drops probabilities below 2^-126. Not volatile: a
// pure function the compiler may schedule freely.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace hymba::kernels::cuda::mma
