// Private to kernels/cuda/attention_*.cu: input checks, shared-memory planning and the tile
// building blocks (loads, block matrix products, the backward's probability pass) the
// forward, dK/dV and dQ kernels are made of.
//
// Every kernel stages its tiles in shared memory and computes each block product into
// shared memory, so one kernel body serves two paths that differ only in the product:
//   kTC = true:  bf16 tiles, nvcuda::wmma 16x16x16 bf16 fragments with fp32 accumulation;
//                head dims zero-padded to multiples of 16, tile sizes multiples of 16.
//   kTC = false: fp32 tiles, one fp32 FMA dot product per output element (any head dim).
// Accumulators (the output, dK, dV, dQ) live in fp32 shared memory, because a wmma
// accumulator fragment's element-to-row mapping is opaque and the online softmax must
// rescale whole rows. Every padded element (rows past T, columns past the head dim) is
// written as zero: shared memory starts as garbage and 0 * NaN would leak into the sums.
#pragma once

#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda::attn {

constexpr int kThreads = 128;  // 4 warps per block in every attention kernel
constexpr int kWarps = kThreads / 32;

// Shared-memory element type of the q/k/v/dout tiles and of the probabilities fed to a
// product; it is also the global storage type the kernels read (bf16 or f32).
template <bool kTC>
using Elem = std::conditional_t<kTC, __nv_bfloat16, float>;

// ---- host side: checks and planning ----

struct Dims {
  int64_t B, Hq, Hkv, T;
  int dk, dv, group;
};

inline void check_attn_tensor(const char* op, const char* what, const Tensor& t) {
  attn_check::float_check(
      op, what, t,
      [](DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16 || d == DType::F64; },
      "a float dtype");
  check_cuda_tensor(op, what, t);
}

inline Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  const attn_check::QkvDims c = attn_check::check_qkv(op, q, k, v, p, check_attn_tensor);
  HYMBA_CHECK(c.dk > 0 && c.dv > 0 && c.dk <= (1 << 20) && c.dv <= (1 << 20), op, ": unsupported head dim: q ",
              shape_str(q.shape()), ", v ", shape_str(v.shape()));
  return {c.B, c.Hq, c.Hkv, c.T, int(c.dk), int(c.dv), int(c.Hq / c.Hkv)};
}

inline float scale_of(const AttentionParams& p, int dk) { return float(attn_check::scale_of(p, dk)); }

using attn_check::stat_dtype;

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
// Leading dimensions, in elements. Tensor-core tiles: a multiple of 8 bf16 / 4 floats (16 bytes,
// as wmma requires), padded off a multiple of 32 banks. FMA tiles: odd, so a warp reading one
// column of a row-major tile hits 32 different banks.
inline int ld_elem(int n, bool tc) { return tc ? n + 8 : n + 1; }
inline int ld_f32(int n, bool tc) { return tc ? n + 4 : n + 1; }

// Bump allocator over one block's dynamic shared memory; every buffer starts 128-byte aligned
// (wmma needs 32), given the kernels declare the extern array __align__(128).
struct SmemPlan {
  size_t bytes = 0;
  uint32_t add(size_t n) {
    const size_t o = bytes;
    bytes = (bytes + n + 127) / 128 * 128;
    return uint32_t(o);
  }
};

// The most dynamic shared memory one block of the current device may opt in to.
inline size_t smem_limit() {
  int dev = 0, v = 0;
  HYMBA_CUDA_CHECK(cudaGetDevice(&dev));
  HYMBA_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return size_t(v);
}

// Kernels above the default 48 KiB of dynamic shared memory must opt in per function.
template <typename Kernel>
inline void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    HYMBA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                     "attention: ", bytes, " bytes of shared memory");
}

// ---- device side: tile building blocks (all threads of the block call each one) ----

// dst[r][c] = src[r][c] for r < n_valid, c < d; zero elsewhere in [0, rows) x [0, cols).
// src points at the tile's first row of a row-major (*, d) matrix.
template <typename E>
__device__ __forceinline__ void load_tile(E* dst, int ld, const E* __restrict__ src, int n_valid, int d, int rows,
                                          int cols) {
  if constexpr (sizeof(E) == 2) {
    // 16-byte copies of 8 bf16 when rows of src and dst allow them: d, cols and ld multiples
    // of 8 (then a chunk starting below d ends within it) and src 16-byte aligned (dst rows
    // are: 128-byte aligned buffers, ld * 2 a multiple of 16). The condition is block-uniform.
    if (d % 8 == 0 && cols % 8 == 0 && ld % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
      const int chunks = cols / 8;
      for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
        const int r = idx / chunks, c = (idx - r * chunks) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < n_valid && c < d) val = *reinterpret_cast<const uint4*>(src + int64_t(r) * d + c);
        *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
      }
      return;
    }
  }
  for (int idx = threadIdx.x; idx < rows * cols; idx += blockDim.x) {
    const int r = idx / cols, c = idx - r * cols;
    dst[r * ld + c] = (r < n_valid && c < d) ? src[int64_t(r) * d + c] : from_f32<E>(0.f);
  }
}

__device__ __forceinline__ void zero_f32(float* dst, int ld, int rows, int cols) {
  for (int idx = threadIdx.x; idx < rows * cols; idx += blockDim.x) {
    const int r = idx / cols, c = idx - r * cols;
    dst[r * ld + c] = 0.f;
  }
}

// C (M x N, fp32, row-major, ldc) = (accumulate ? C : 0) + A B, where
//   A(m, k) = kAT ? A[k * lda + m] : A[m * lda + k],  B(k, n) = kBT ? B[n * ldb + k] : B[k * ldb + n].
// Tensor-core path: M, N, K multiples of 16; one warp per 16 x 16 output block.
// FMA path: one thread per output element, K summed in order.
// Synchronize before (inputs written) and after (C read by others).
template <bool kTC, bool kAT, bool kBT>
__device__ __forceinline__ void block_mm(float* C, int ldc, const Elem<kTC>* A, int lda, const Elem<kTC>* B, int ldb,
                                         int M, int N, int K, bool accumulate) {
  if constexpr (kTC) {
    using namespace nvcuda;
    using ALayout = std::conditional_t<kAT, wmma::col_major, wmma::row_major>;
    using BLayout = std::conditional_t<kBT, wmma::col_major, wmma::row_major>;
    const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += nwarps) {
      const int mi = (t / tn) * 16, ni = (t % tn) * 16;
      float* cp = C + mi * ldc + ni;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (accumulate)
        wmma::load_matrix_sync(acc, cp, ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.f);
      for (int kk = 0; kk < K; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, ALayout> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> b;
        wmma::load_matrix_sync(a, kAT ? A + kk * lda + mi : A + mi * lda + kk, lda);
        wmma::load_matrix_sync(b, kBT ? B + ni * ldb + kk : B + kk * ldb + ni, ldb);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(cp, acc, ldc, wmma::mem_row_major);
    }
  } else {
    for (int idx = threadIdx.x; idx < M * N; idx += blockDim.x) {
      const int m = idx / N, n = idx - m * N;
      float s = accumulate ? C[m * ldc + n] : 0.f;
      for (int k = 0; k < K; ++k)
        s = fmaf(kAT ? A[k * lda + m] : A[m * lda + k], kBT ? B[n * ldb + k] : B[k * ldb + n], s);
      C[m * ldc + n] = s;
    }
  }
}

// The backward's probability pass over one (query tile, key tile) block:
//   p = exp(s * scale - lse_r) where visible, else 0;  ds = p * (dp - delta_r).
// S and dP are fp32 (lds); P and dS are written as Elem (ldp). On the FMA path P may alias S
// and dS alias dP: each element is read and then written by the same thread.
template <bool kTC>
__device__ __forceinline__ void probs_and_dscores(const float* sS, const float* sDP, int lds, Elem<kTC>* sP,
                                                  Elem<kTC>* sDS, int ldp, const float* sLse, const float* sDelta,
                                                  int bq, int bk, int nq, int nk, int64_t q0, int64_t k0,
                                                  TileVisibility vis, int64_t window, int64_t num_meta, float scale,
                                                  bool write_p, bool write_ds) {
  for (int idx = threadIdx.x; idx < bq * bk; idx += blockDim.x) {
    const int r = idx / bk, c = idx - r * bk;
    const bool ok = r < nq && c < nk &&
                    (vis == TileVisibility::All || attention_visible(q0 + r, k0 + c, window, num_meta));
    const float p = ok ? expf(sS[r * lds + c] * scale - sLse[r]) : 0.f;
    const float ds = ok ? p * (sDP[r * lds + c] - sDelta[r]) : 0.f;
    if (write_p) sP[r * ldp + c] = from_f32<Elem<kTC>>(p);
    if (write_ds) sDS[r * ldp + c] = from_f32<Elem<kTC>>(ds);
  }
}

}  // namespace hymba::kernels::cuda::attn
