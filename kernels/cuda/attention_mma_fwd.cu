// Attention forward on tensor cores with mma.sync (bf16 in, fp32 accumulation), organised as
// flash-attention 2: the fragments and the online-softmax state live in registers, so the
// only shared-memory traffic is the K and V tiles (which every warp of the block reads).
//
// Block: one query tile and one (b, query head); 4 warps, each owning kMT m16 row tiles
// (16 kMT consecutive query rows) for the whole kernel. Every K / V B-fragment a warp loads
// with ldmatrix feeds the mmas of all its row tiles, so with kMT = 2 a fragment of 512 bytes
// feeds 4 mma m16n8k16 instead of 2: one row tile per warp left the kernel bound by
// shared-memory bandwidth and issue rather than by the tensor cores. Per padded head dims:
//   kMT = 2: 128 query rows per block, 32-key tiles (S: 32 registers), for dk x dv = 64 x 64,
//            128 x 64 and 64 x 128 (Hymba's; O alone takes 128 registers there).
//   kMT = 1: 64 query rows, 64-key tiles, for dk = dv = 128, where two row tiles would need
//            Q 64 + O 128 + S 32 registers of fragments alone.
// Q is staged in shared memory once and kept as A fragments in registers, except at 64 x 128,
// where it stays in shared memory and its fragments are reloaded per key tile (kQRegs in
// FwdTiling: 32 more registers made ptxas spill). ptxas -v, CUDA 13.0, sm_80 / sm_90: 64 x 64
// 198 / 203 registers, 128 x 64 244 / 243, 64 x 128 254 / 248, 128 x 128 224 / 228, no spills.
//
// Per block: the key tiles that attention_key_tiles names (meta range, then window range;
// tiles that attention_tile_visibility calls None for the block skipped) stream through two
// shared-memory stages with cp.async: tile n + 1 loads while tile n is computed. Per key tile
// and warp, unless the tile is invisible to all of the warp's rows (then the warp only takes
// part in the barriers):
//   S = Q K^T        (B fragments: ldmatrix on K rows, b_addr_nk)
//   mask             (only where the tile is partially visible to the warp's rows, or holds
//                     keys past T: each row's visible keys in the tile are its meta prefix
//                     plus one contiguous range, so the per-element test is three int32
//                     compares against bounds computed once per row and tile)
//   online softmax   (base 2 on the raw scores: the scale is > 0, so the row max is taken
//                     unscaled and p = 2^(s scale log2(e) - m scale log2(e)) is one FMA and
//                     one ex2.approx; row max and sum over the 4 lanes of a group; each lane
//                     keeps a partial row sum, reduced once at the end; O is rescaled only
//                     when some row's max moved: alpha = 1 exactly otherwise)
//   O += P V         (A: P straight from the S accumulators, c_to_a; B: ldmatrix.trans on
//                     V rows, b_addr_kn)
// Epilogue: O / l rounded to bf16, staged through shared memory for 16-byte stores; lse =
// (m scale log2(e) + log2 l) ln 2 in f32. Query rows past T are computed (zero Q rows) but
// never written.
//
// Head dims are padded at compile time to 64 or 128 (zero-filled columns: they add nothing
// to Q K^T, and V's padded columns only reach O columns that are not written). Rows past T
// are zero-filled too (a masked p is exactly 0, and 0 * a stale NaN would not be).
//
// Shared memory (bf16, rows padded by kSmemPad): two stages, each K (kBN x (kDk + 8)) then
// V (kBN x (kDv + 8)); Q (kBM x (kDk + 8)) after the two stages, or (kQRegs) from stage 1 on,
// whose first key tile is loaded only after every warp holds its Q fragments; the output
// staging (kBM x (kDv + 8)) from stage 0 on after the last key tile; then the K and V base
// pointers. dk x dv = 64 x 128: 44 KiB, 64 x 64: 27 KiB, 128 x 64: 47 KiB, 128 x 128: 68 KiB.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/mma.cuh"

namespace hymba::kernels::cuda::attn {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kFwdWarps = 4;
constexpr int kFwdThreads = kFwdWarps * 32;

constexpr int cmax(int a, int b) { return a > b ? a : b; }

// The tiling of the kernel instantiated for padded head dims kDk, kDv.
template <int kDk, int kDv>
struct FwdTiling {
  static constexpr int kMT = kDk == 128 && kDv == 128 ? 1 : 2;  // m16 row tiles per warp
  static constexpr int kWarpRows = 16 * kMT;
  static constexpr int kBM = kFwdWarps * kWarpRows;  // query rows per block
  static constexpr int kBN = kMT == 2 ? 32 : 64;     // keys per tile
  static constexpr int kLdk = kDk + mma::kSmemPad, kLdv = kDv + mma::kSmemPad;
  static constexpr int kStage = kBN * (kLdk + kLdv);  // elements of one K + V stage
  // Q as register fragments for the whole kernel, or reloaded from shared memory per key
  // tile where registers run out (dk = 64 with dv = 128: 32 Q registers on top of O's 128
  // made ptxas spill). The reload adds 8 ldmatrix.x4 per warp and key tile to the 24 of K
  // and V, still 3 mmas per fragment load where one row tile per warp had 2.
  static constexpr bool kQRegs = !(kDk == 64 && kDv == 128);
  static constexpr int kSmemElems =
      kQRegs ? cmax(cmax(2 * kStage, kStage + kBM * kLdk), kBM * kLdv) : cmax(2 * kStage + kBM * kLdk, kBM * kLdv);
  // The tiles, then the block's K and V base pointers (2 x 8 bytes).
  static constexpr size_t kSmemBytes = size_t(kSmemElems) * sizeof(bf16) + 2 * sizeof(const bf16*);
  static_assert(kSmemElems * sizeof(bf16) % 16 == 0 && kStage * sizeof(bf16) % 16 == 0 &&
                    kBN * kLdk * sizeof(bf16) % 16 == 0,
                "cp.async and ldmatrix need 16-byte aligned tiles");
};

struct MmaFwdArgs {
  const bf16* q;  // (B, Hq, T, dk), contiguous, 16-byte aligned
  const bf16* k;  // (B, Hkv, T, dk)
  const bf16* v;  // (B, Hkv, T, dv)
  bf16* out;      // (B, Hq, T, dv)
  float* lse;     // (B, Hq, T)
  // Positions as int (T < 2^30, checked on the host) to save registers; window and num_meta
  // clamped to at most T, which leaves the mask unchanged (keys and distances are < T).
  int T, window, num_meta;
  int nqt, nbh;  // query tiles per head; B * Hq
  int Hq, Hkv, group, dk, dv;
  float scale_log2;  // softmax scale * log2(e), > 0
};

// The padded head dim a kernel is instantiated for.
int padded_dim(int d) { return d <= 64 ? 64 : 128; }

size_t fwd_smem_bytes(int dkp, int dvp) {
  if (dkp == 64) return dvp == 64 ? FwdTiling<64, 64>::kSmemBytes : FwdTiling<64, 128>::kSmemBytes;
  return dvp == 64 ? FwdTiling<128, 64>::kSmemBytes : FwdTiling<128, 128>::kSmemBytes;
}

// v clamped to [lo, hi].
__device__ __forceinline__ int clamp_int(int v, int lo, int hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// Starts the copy of rows [r0, r0 + kRows) of a row-major (T, d) bf16 matrix into a kRows x kD
// shared tile (row stride kD + kSmemPad); rows at or past T and columns at or past d are
// zero-filled. d is a multiple of 8, so each 16-byte chunk is wholly inside or outside.
template <int kRows, int kD>
__device__ __forceinline__ void load_rows_async(bf16* dst, const bf16* __restrict__ src, int r0, int T, int d) {
  constexpr int kChunks = kD / 8;
  static_assert(kRows * kChunks % kFwdThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kFwdThreads; ++i) {
    const int idx = threadIdx.x + i * kFwdThreads;
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = r0 + r < T && c < d;
    mma::cp_async_16(dst + r * (kD + mma::kSmemPad) + c, ok ? src + int64_t(r0 + r) * d + c : src, ok ? 16 : 0);
  }
}

template <int kDk, int kDv>
__global__ void __launch_bounds__(kFwdThreads) mma_fwd_kernel(const MmaFwdArgs a) {
  using namespace mma;
  using Tl = FwdTiling<kDk, kDv>;
  constexpr int kMT = Tl::kMT, kWarpRows = Tl::kWarpRows, kBM = Tl::kBM, kBN = Tl::kBN;
  constexpr int kLdk = Tl::kLdk, kLdv = Tl::kLdv, kStage = Tl::kStage;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* const sbase = reinterpret_cast<bf16*>(smem);  // stage s: K [kBN][kLdk], then V [kBN][kLdv]
  // Q [kBM][kLdk]: from stage 1 on until the second key tile (kQRegs), else after the stages.
  bf16* const sQ = sbase + (Tl::kQRegs ? kStage : 2 * kStage);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  // The late query tiles of every head see the most keys; launching them first shortens the
  // tail. Neighbouring blocks share a query tile index and, within a group, the kv head.
  const int qt = a.nqt - 1 - int(blockIdx.x) / a.nbh;
  const int64_t bh = int(blockIdx.x) % a.nbh;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / a.group;
  const int q0 = qt * kBM, q1 = min(a.T, q0 + kBM);
  // This warp's query rows [wq0, wq1); none at all in the last query tile's tail warps.
  const int wq0 = q0 + warp * kWarpRows, wq1 = min(a.T, wq0 + kWarpRows);
  const bool warp_has_rows = wq0 < a.T;
  // The K / V rows of this block's kv head. The key-tile loop reads the two base pointers
  // back from shared memory instead of holding them: with O at 128 registers, ptxas spilled a
  // 64-bit value to local memory in every variant that kept them in registers.
  const bf16* const kg = a.k + (b * a.Hkv + hk) * a.T * a.dk;
  const bf16* const vg = a.v + (b * a.Hkv + hk) * a.T * a.dv;
  const bf16** const sKV = reinterpret_cast<const bf16**>(sbase + Tl::kSmemElems);
  if (threadIdx.x == 0) sKV[0] = kg, sKV[1] = vg;  // read after the first __syncthreads

  const KeyTileRanges tr = attention_key_tiles(q0, q1, kBN, a.window, a.num_meta);
  const int m0 = int(tr.m0), w0 = int(tr.w0);
  const int n_meta = int(tr.m1 - tr.m0), n_tiles = n_meta + int(tr.w1 - tr.w0);
  auto tile_of = [&](int n) { return n < n_meta ? m0 + n : w0 + (n - n_meta); };
  auto visibility = [&](int kt) {
    return attention_tile_visibility(q0, q1, kt * kBN, min(a.T, kt * kBN + kBN), a.window, a.num_meta);
  };
  // The first position >= n of a tile with something visible (block-uniform).
  auto next_visible = [&](int n) {
    while (n < n_tiles && visibility(tile_of(n)) == TileVisibility::None) ++n;
    return n;
  };
  auto load_kv = [&](int kt, int stage, const bf16* kbase, const bf16* vbase) {
    load_rows_async<kBN, kDk>(sbase + stage * kStage, kbase, kt * kBN, a.T, a.dk);
    load_rows_async<kBN, kDv>(sbase + stage * kStage + kBN * kLdk, vbase, kt * kBN, a.T, a.dv);
  };

  // Q and the first key tile in one group; with kQRegs, Q goes to registers before stage 1
  // is reused.
  load_rows_async<kBM, kDk>(sQ, a.q + bh * a.T * a.dk, q0, a.T, a.dk);
  int n = next_visible(0);
  if (n < n_tiles) load_kv(tile_of(n), 0, kg, vg);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  // The A fragment of Q for row tile mt, dims [16 kk, 16 kk + 16), of this warp.
  auto load_q = [&](uint32_t(&f)[4], int mt, int kk) {
    ldmatrix_x4(f, a_addr(sQ + (warp * kWarpRows + mt * 16) * kLdk + kk * 16, kLdk, lane));
  };
  uint32_t qa[kMT][kDk / 16][4];  // unused (and optimised away) unless kQRegs
  if constexpr (Tl::kQRegs) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int kk = 0; kk < kDk / 16; ++kk) load_q(qa[mt][kk], mt, kk);
    __syncthreads();  // every warp holds its Q fragments: stage 1 may receive keys
  }

  // Lane state for its 2 kMT rows: row tile mt, half r holds query row wq0 + 16 mt + g + 8 r.
  float o[kMT][kDv / 8][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float m_run[kMT][2], l_run[kMT][2];  // running max of the raw scores; this lane's part of the row sum
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) m_run[mt][0] = m_run[mt][1] = -INFINITY, l_run[mt][0] = l_run[mt][1] = 0.f;
  const float sl = a.scale_log2;

  int stage = 0;
  while (n < n_tiles) {
    // Here tile n sits complete in `stage` and every warp is done with the other stage.
    const int kt = tile_of(n);
    const int nn = next_visible(n + 1);
    if (nn < n_tiles) load_kv(tile_of(nn), stage ^ 1, sKV[0], sKV[1]);
    cp_async_commit();

    const int k0 = kt * kBN;
    const int nk = min(a.T, k0 + kBN) - k0;
    // Warp-uniform: the block sees this tile, but the warp's own rows may not.
    const TileVisibility wvis = warp_has_rows
                                    ? attention_tile_visibility(wq0, wq1, k0, k0 + nk, a.window, a.num_meta)
                                    : TileVisibility::None;
    if (wvis != TileVisibility::None) {
      const bf16* cK = sbase + stage * kStage;
      const bf16* cV = cK + kBN * kLdk;

      // S = Q K^T: kBN / 8 n8 tiles of keys per row tile; each K fragment serves every row tile.
      float s[kMT][kBN / 8][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kDk / 16; ++kk) {
        uint32_t qf[kMT][4];
        if constexpr (!Tl::kQRegs) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) load_q(qf[mt], mt, kk);
        }
#pragma unroll
        for (int j = 0; j < kBN / 16; ++j) {
          uint32_t r[4];
          ldmatrix_x4(r, b_addr_nk(cK + j * 16 * kLdk + kk * 16, kLdk, lane));
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const uint32_t(&qfrag)[4] = Tl::kQRegs ? qa[mt][kk] : qf[mt];
            mma_bf16_16816(s[mt][2 * j], qfrag, b0);
            mma_bf16_16816(s[mt][2 * j + 1], qfrag, b1);
          }
        }
      }

      // Mask. Columns past T are zero rows of K, not keys: they need the mask even on an All
      // tile. Key column c of the tile is visible from row i iff c <= hi (causal, and < nk)
      // and (c >= lo (the window) or c < me (the meta prefix)); element e of n8 tile j is
      // row half e / 2, column j * 8 + 2t + e % 2.
      if (nk < kBN || wvis == TileVisibility::Partial) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int i = wq0 + mt * 16 + g + 8 * rh;
            const int hi = clamp_int(min(i - k0, nk - 1), -1, kBN - 1);
            const int lo = a.window < 0 ? 0 : clamp_int(i - a.window - k0, 0, kBN);
            const int me = clamp_int(min(min(a.num_meta, i + 1) - k0, nk), 0, kBN);
#pragma unroll
            for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int c = j * 8 + 2 * t + e;
                if (!(c <= hi && (c >= lo || c < me))) s[mt][j][2 * rh + e] = -INFINITY;
              }
            }
          }
        }
      }

      // Online softmax on the raw scores.
      float alpha[kMT][2], base[kMT][2];
      bool rescale = false;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) {
          mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
          mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
        }
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
          const float m_old = m_run[mt][rh], m_new = fmaxf(m_old, quad_max(mx[rh]));
          // A row that has seen no key yet keeps p = 2^-inf = 0 (base 0 instead of -inf, which
          // would give -inf - -inf = NaN). alpha = 1 exactly when the max did not move; a row
          // seeing its first keys gets alpha = 0, its O and l being still 0.
          base[mt][rh] = m_new == -INFINITY ? 0.f : m_new * sl;
          alpha[mt][rh] = m_new == m_old ? 1.f : exp2_approx(fmaf(m_old, sl, -base[mt][rh]));
          rescale = rescale || (m_new != m_old && m_old != -INFINITY);
          m_run[mt][rh] = m_new;
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        float rs[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float p = exp2_approx(fmaf(s[mt][j][e], sl, -base[mt][e >> 1]));
            s[mt][j][e] = p;
            rs[e >> 1] += p;
          }
        }
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) l_run[mt][rh] = l_run[mt][rh] * alpha[mt][rh] + rs[rh];
      }
      // Once a row's max settles it rarely moves, so most tiles skip the 4 kMT kDv / 8 multiplies.
      if (rescale) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int j = 0; j < kDv / 8; ++j) {
            o[mt][j][0] *= alpha[mt][0];
            o[mt][j][1] *= alpha[mt][0];
            o[mt][j][2] *= alpha[mt][1];
            o[mt][j][3] *= alpha[mt][1];
          }
      }

      // O += P V: key step kk is the A fragment of S's n8 tiles 2kk and 2kk + 1; each V
      // fragment serves every row tile.
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t pa[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) c_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
        for (int j = 0; j < kDv / 16; ++j) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, b_addr_kn(cV + kk * 16 * kLdv + j * 16, kLdv, lane));
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16_16816(o[mt][2 * j], pa[mt], b0);
            mma_bf16_16816(o[mt][2 * j + 1], pa[mt], b1);
          }
        }
      }
    }

    if (nn >= n_tiles) break;
    cp_async_wait<0>();
    __syncthreads();  // tile nn visible to all; every warp done with `stage`
    n = nn;
    stage ^= 1;
  }

  // Epilogue. Every real row saw its diagonal key, so l >= 1 there; rows past T may have
  // l = 0 and are not written.
  float inv[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const float l = quad_sum(l_run[mt][rh]);
      inv[mt][rh] = l > 0.f ? 1.f / l : 0.f;
      const int qrow = wq0 + mt * 16 + g + 8 * rh;
      if (t == 0 && qrow < a.T) a.lse[bh * a.T + qrow] = m_run[mt][rh] * sl * 0.6931471805599453f + logf(l);
    }
  __syncthreads();  // every warp is done reading the K / V stages
  bf16* sO = sbase;  // [kBM][kLdv]
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      const int c = j * 8 + 2 * t, r0 = warp * kWarpRows + mt * 16 + g;
      *reinterpret_cast<uint32_t*>(sO + r0 * kLdv + c) = pack_bf16x2(o[mt][j][0] * inv[mt][0], o[mt][j][1] * inv[mt][0]);
      *reinterpret_cast<uint32_t*>(sO + (r0 + 8) * kLdv + c) =
          pack_bf16x2(o[mt][j][2] * inv[mt][1], o[mt][j][3] * inv[mt][1]);
    }
  __syncwarp();  // each warp stores the rows it staged
  constexpr int kChunks = kDv / 8;
#pragma unroll
  for (int i = 0; i < kWarpRows * kChunks / 32; ++i) {
    const int idx = lane + i * 32;
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int qrow = wq0 + r;
    if (qrow < a.T && c < a.dv)
      *reinterpret_cast<uint4*>(a.out + (bh * a.T + qrow) * a.dv + c) =
          *reinterpret_cast<const uint4*>(sO + (warp * kWarpRows + r) * kLdv + c);
  }
}

template <int kDk, int kDv>
void launch(MmaFwdArgs a, const Dims& d) {
  using Tl = FwdTiling<kDk, kDv>;
  const size_t smem = Tl::kSmemBytes;
  const int64_t nqt = ceil_div(d.T, Tl::kBM), blocks = nqt * a.nbh;
  HYMBA_CHECK(blocks < (int64_t(1) << 31), "attention (mma): too many blocks (", blocks, ")");
  a.nqt = int(nqt);
  allow_smem(mma_fwd_kernel<kDk, kDv>, smem);
  mma_fwd_kernel<kDk, kDv><<<unsigned(blocks), kFwdThreads, smem, stream()>>>(a);
  HYMBA_CUDA_CHECK_LAUNCH("attention forward (mma) B=", d.B, " Hq=", d.Hq, " T=", d.T, " dk=", d.dk, " dv=", d.dv);
}

// Contiguous, with a 16-byte aligned start (cp.async copies 16-byte chunks).
Tensor aligned_contiguous(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 != 0) c = t.clone();
  return c;
}

}  // namespace

bool mma_forward_supports(DType dt, const Dims& d) {
  return dt == DType::BF16 && d.dk % 8 == 0 && d.dv % 8 == 0 && d.dk <= 128 && d.dv <= 128 &&
         fwd_smem_bytes(padded_dim(d.dk), padded_dim(d.dv)) <= smem_limit();
}

std::tuple<Tensor, Tensor> mma_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Dims& d,
                                       const AttentionParams& p) {
  HYMBA_CHECK(mma_forward_supports(q_in.dtype(), d), "attention (mma): unsupported problem dk=", d.dk, " dv=", d.dv,
              " ", dtype_name(q_in.dtype()));
  const Tensor q = aligned_contiguous(q_in), k = aligned_contiguous(k_in), v = aligned_contiguous(v_in);
  Tensor out = empty({d.B, d.Hq, d.T, d.dv}, TensorOptions(DType::BF16, q_in.device()));
  Tensor lse = empty({d.B, d.Hq, d.T}, TensorOptions(DType::F32, q_in.device()));
  if (d.B * d.Hq * d.T == 0) return {out, lse};

  MmaFwdArgs a{};
  a.q = static_cast<const bf16*>(q.data_ptr());
  a.k = static_cast<const bf16*>(k.data_ptr());
  a.v = static_cast<const bf16*>(v.data_ptr());
  a.out = static_cast<bf16*>(out.data_ptr());
  a.lse = lse.data<float>();
  HYMBA_CHECK(d.T < (int64_t(1) << 30) && d.B * d.Hq < (int64_t(1) << 31), "attention (mma): T=", d.T,
              " B*Hq=", d.B * d.Hq, " too large");
  a.T = int(d.T);
  a.window = int(p.window < 0 ? -1 : std::min(p.window, d.T));
  a.num_meta = int(std::min(p.num_meta, d.T));
  a.nbh = int(d.B * d.Hq);
  a.Hq = int(d.Hq);
  a.Hkv = int(d.Hkv);
  a.group = d.group;
  a.dk = d.dk;
  a.dv = d.dv;
  a.scale_log2 = float(attn_check::scale_of(p, d.dk) * 1.4426950408889634);

  const int dkp = padded_dim(d.dk), dvp = padded_dim(d.dv);
  if (dkp == 64 && dvp == 64) launch<64, 64>(a, d);
  else if (dkp == 64) launch<64, 128>(a, d);
  else if (dvp == 64) launch<128, 64>(a, d);
  else launch<128, 128>(a, d);
  return {out, lse};
}

}  // namespace hymba::kernels::cuda::attn
