// Attention backward with mma.sync (bf16 inputs, fp32 accumulation, fragments in registers):
// the flash-attention-2 backward, deterministic (no atomics). Contract: kernels/attention.h.
//   1. prep: per query row, Dsum_i = <dO_i, O_i> and lse_i * log2(e), into (B * Hq, Tp) arrays
//      with Tp = T rounded up to kRowPad. Past T they hold lse +inf and Dsum 0, so a padded
//      query row gets P = exp2(s - inf) = 0 and dS = 0 with no mask, and a tile of either
//      array is a whole number of 16-byte chunks for cp.async.
//   2. dK/dV: one block per (key tile of 64 keys, b * Hkv). Warp w owns keys 16w..16w+15;
//      their K and V rows stay in registers as A fragments for the whole kernel. The block
//      walks the query heads of its group and, for each, the query tiles that can see the key
//      tile, in a fixed order (Q, dO, lse, Dsum double-buffered with cp.async):
//        S^T = K Q^T;  P^T = exp2(S^T scale log2e - lse log2e);  dV += P^T dO;
//        dP^T = V dO^T;  dS^T = P^T (dP^T - Dsum);  dK += dS^T Q.
//      P^T and dS^T go from C fragments straight to A fragments (mma::c_to_a).
//   3. dQ: one block per (query tile of 64, b * Hq). Warp w owns query rows 16w..16w+15 (Q and
//      dO as A fragments); the block walks the key tiles of attention_key_tiles (K, V
//      double-buffered): S = Q K^T, P, dP = dO V^T, dS, dQ += dS K.
//   Recomputing S and dP in the dQ kernel costs two products a second time (seven per
//   visible block instead of five), the price of a dQ that is deterministic and needs no
//   fp32 atomics (nor a zeroed f32 buffer).
// Head dims are padded to 64 or 128 (zero columns); instantiations (dk, dv) = (64, 64),
// (64, 128), (128, 128). Shared memory per block, dK/dV / dQ: 55.0 / 54.0 KiB, 79.0 / 78.0 KiB
// (Hymba's dk = 64, dv = 128), 51.3 / 102.0 KiB. Registers (ptxas -v, sm_80 and sm_90, CUDA
// 13.0): 174 to 255 per thread, no spills, so two 4-warp blocks per SM.
// Rows past T: K, V, Q, dO rows are zero-filled (cp.async with 0 source bytes); padded keys
// are masked in the dQ kernel and only touch their own (never written) rows of dK / dV.
// Masks (attention_visible) are evaluated only on tiles attention_tile_visibility calls
// Partial (and, for dQ, on the last key tile when it runs past T); None tiles are skipped.
#include <cmath>
#include <cstdint>
#include <tuple>

#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/mma.cuh"

namespace hymba::kernels::cuda::attn {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kRowPad = 64;  // Tp granularity: a multiple of every query tile below
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTileRows = 16 * kWarps;  // rows owned by one block: 16 per warp (keys or queries)

// Padded head dims and tile sizes per instantiation. The register budget of the dK/dV kernel
// per lane: K and V fragments (DKP + DVP) / 4, dK and dV accumulators (DKP + DVP) / 2, and
// S^T, dP^T of one query tile BM / 2 each; BM shrinks as the head dims grow so nothing spills.
template <int DKP, int DVP> struct Cfg {
  static constexpr int kBM = DKP + DVP <= 192 ? 64 : 16;  // dK/dV kernel: queries per step
  static constexpr int kBN = 64;                           // dQ kernel: keys per step
};

struct BwdParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* dout;
  const float* lse2;  // (B * Hq, Tp): lse * log2(e), +inf past T
  const float* dsum;  // (B * Hq, Tp): <dO_i, O_i>, 0 past T
  bf16* dq;           // null when not requested
  bf16* dk;
  bf16* dv;
  int64_t T, Tp, window, num_meta;
  int64_t ntiles;  // per (b, head): key tiles (dK/dV kernel) or query tiles (dQ kernel)
  int Hq, Hkv, group, dk_dim, dv_dim;
  float scale, scale_log2;
};

__global__ void attn_mma_bwd_prep_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ out,
                                         const float* __restrict__ lse, float* __restrict__ lse2,
                                         float* __restrict__ dsum, int64_t rows, int64_t T, int64_t Tp, int dv) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < rows; row += nwarps) {
    const int64_t bh = row / Tp, i = row - bh * Tp;
    if (i >= T) {  // warp-uniform
      if (lane == 0) {
        lse2[row] = INFINITY;
        dsum[row] = 0.f;
      }
      continue;
    }
    const int64_t src = bh * T + i;
    // dv is a multiple of 8, so every row starts 16-byte aligned within a contiguous tensor.
    const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(out + src * dv);
    const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(dout + src * dv);
    float s = 0.f;
    for (int x = lane; x < dv / 2; x += 32) {
      const float2 a = __bfloat1622float2(o2[x]), b = __bfloat1622float2(g2[x]);
      s = fmaf(a.x, b.x, s);
      s = fmaf(a.y, b.y, s);
    }
    s = warp_sum(s);
    if (lane == 0) {
      lse2[row] = lse[src] * kLog2e;
      dsum[row] = s;
    }
  }
}

// Stages rows [0, ROWS) x columns [0, DP) of a row-major (*, d) bf16 matrix whose tile starts
// at `src` into shared memory (row stride ld); rows >= n_valid and columns >= d are zero.
// `any` is a valid global address for the zero-filling copies (they read 0 bytes).
template <int ROWS, int DP>
__device__ __forceinline__ void cp_tile(bf16* dst, int ld, const bf16* src, const bf16* any, int n_valid, int d) {
  constexpr int kChunks = DP / 8;
  constexpr int kTotal = ROWS * kChunks;
#pragma unroll
  for (int i = 0; i < (kTotal + kThreads - 1) / kThreads; ++i) {
    const int idx = int(threadIdx.x) + i * kThreads;
    if (kTotal % kThreads == 0 || idx < kTotal) {
      const int r = idx / kChunks, c = (idx - r * kChunks) * 8;
      const bool ok = r < n_valid && c < d;
      mma::cp_async_16(dst + r * ld + c, ok ? src + int64_t(r) * d + c : any, ok ? 16 : 0);
    }
  }
}

// Two 16-column halves of an ldmatrix_x4 result as the b operands of two n8 tiles.
__device__ __forceinline__ void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&r)[4]) {
  const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
  mma::mma_bf16_16816(c0, a, b0);
  mma::mma_bf16_16816(c1, a, b1);
}

// ---- dK / dV ----

template <int DKP, int DVP> struct DkdvLayout {
  static constexpr int kBM = Cfg<DKP, DVP>::kBM;
  static constexpr int ldk = DKP + mma::kSmemPad, ldv = DVP + mma::kSmemPad;  // elements
  static constexpr int k_off = 0;                                             // bytes
  static constexpr int v_off = k_off + kTileRows * ldk * 2;
  static constexpr int stage_off = v_off + kTileRows * ldv * 2;
  // One stage: Q (kBM x ldk), dO (kBM x ldv), lse2 (kBM), dsum (kBM).
  static constexpr int s_q = 0, s_do = s_q + kBM * ldk * 2, s_lse = s_do + kBM * ldv * 2, s_ds = s_lse + kBM * 4;
  static constexpr int stage_bytes = s_ds + kBM * 4;
  static constexpr int bytes = stage_off + 2 * stage_bytes;
  static_assert(ldk * 2 % 16 == 0 && ldv * 2 % 16 == 0 && stage_bytes % 16 == 0 && v_off % 16 == 0,
                "cp.async and ldmatrix need 16-byte aligned rows");
  static_assert(kRowPad % kBM == 0, "a query tile must not run past Tp");
};

template <int DKP, int DVP>
__global__ void __launch_bounds__(kThreads) attn_mma_bwd_dkdv_kernel(const BwdParams p) {
  using L = DkdvLayout<DKP, DVP>;
  constexpr int BM = L::kBM, BN = kTileRows;
  constexpr int kKS = DKP / 16, kVS = DVP / 16;  // k-steps over the head dims
  constexpr int kQN = BM / 8;                    // n8 tiles over the queries of a step
  extern __shared__ __align__(128) unsigned char smem[];
  const bf16* sK = reinterpret_cast<const bf16*>(smem + L::k_off);
  const bf16* sV = reinterpret_cast<const bf16*>(smem + L::v_off);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Tile-major block order: the first key tiles (the ones every later query sees, under a
  // causal mask or a meta prefix) of every head start first, so the long blocks do not trail.
  const int64_t nbkv = int64_t(gridDim.x) / p.ntiles;
  const int64_t kt = int64_t(blockIdx.x) / nbkv, bkv = int64_t(blockIdx.x) % nbkv;
  const int64_t b = bkv / p.Hkv, hk = bkv % p.Hkv;
  const int64_t k0 = kt * BN, k1 = min(p.T, k0 + BN);
  const bool need_dk = p.dk != nullptr, need_dv = p.dv != nullptr;

  cp_tile<BN, DKP>(reinterpret_cast<bf16*>(smem + L::k_off), L::ldk, p.k + (bkv * p.T + k0) * p.dk_dim, p.k,
                   int(k1 - k0), p.dk_dim);
  cp_tile<BN, DVP>(reinterpret_cast<bf16*>(smem + L::v_off), L::ldv, p.v + (bkv * p.T + k0) * p.dv_dim, p.v,
                   int(k1 - k0), p.dv_dim);
  mma::cp_async_commit();

  // Query tiles that may see keys [k0, k1): from the one holding k0 (causality) to the one
  // holding the last query within the window of key k1 - 1 (all of them when the tile holds
  // a meta key). Steps s = (head of the group) * nq_range + (tile - qt_first), in order.
  const int nqt = int((p.T + BM - 1) / BM);
  const int qt_first = int(k0 / BM);
  const int qt_last =
      (p.window < 0 || k0 < p.num_meta) ? nqt - 1 : int(min(int64_t(nqt - 1), (k1 - 1 + p.window) / BM));
  const int nq_range = qt_last - qt_first + 1;
  const int n_steps = p.group * nq_range;
  auto q0_of = [&](int s) { return int64_t(qt_first + s % nq_range) * BM; };
  auto vis_of = [&](int64_t q0) {
    return attention_tile_visibility(q0, min(p.T, q0 + BM), k0, k1, p.window, p.num_meta);
  };
  auto next_step = [&](int s) {  // the first step >= s whose tile is not None
    while (s < n_steps && vis_of(q0_of(s)) == TileVisibility::None) ++s;
    return s;
  };
  auto load_stage = [&](int s, int buf) {
    const int64_t bh = b * p.Hq + hk * p.group + s / nq_range, q0 = q0_of(s);
    const int nq = int(min(int64_t(BM), p.T - q0));
    unsigned char* st = smem + L::stage_off + buf * L::stage_bytes;
    cp_tile<BM, DKP>(reinterpret_cast<bf16*>(st + L::s_q), L::ldk, p.q + (bh * p.T + q0) * p.dk_dim, p.q, nq,
                     p.dk_dim);
    cp_tile<BM, DVP>(reinterpret_cast<bf16*>(st + L::s_do), L::ldv, p.dout + (bh * p.T + q0) * p.dv_dim, p.dout,
                     nq, p.dv_dim);
    // lse2 and dsum: BM / 4 chunks each; q0 + BM <= Tp, and (bh * Tp + q0) * 4 is a multiple of 16.
    for (int idx = int(threadIdx.x); idx < BM / 2; idx += kThreads) {
      const int which = idx / (BM / 4), c = (idx - which * (BM / 4)) * 4;
      mma::cp_async_16(st + (which ? L::s_ds : L::s_lse) + c * 4, (which ? p.dsum : p.lse2) + bh * p.Tp + q0 + c);
    }
  };

  int s = next_step(0);
  if (s < n_steps) load_stage(s, 0);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();  // K and V have landed (the first stage may still be in flight)
  __syncthreads();

  uint32_t kf[kKS][4], vf[kVS][4];
#pragma unroll
  for (int kk = 0; kk < kKS; ++kk)
    mma::ldmatrix_x4(kf[kk], mma::a_addr(sK + warp * 16 * L::ldk + kk * 16, L::ldk, lane));
#pragma unroll
  for (int kk = 0; kk < kVS; ++kk)
    mma::ldmatrix_x4(vf[kk], mma::a_addr(sV + warp * 16 * L::ldv + kk * 16, L::ldv, lane));

  float dk_acc[DKP / 8][4], dv_acc[DVP / 8][4];
#pragma unroll
  for (int n = 0; n < DKP / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = 0.f;
#pragma unroll
  for (int n = 0; n < DVP / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dv_acc[n][e] = 0.f;

  const int64_t key_lo = k0 + warp * 16 + g;  // the key of c[0], c[1]; c[2], c[3] hold key_lo + 8
  int buf = 0;
  while (s < n_steps) {
    const int nxt = next_step(s + 1);
    if (nxt < n_steps) load_stage(nxt, buf ^ 1);  // buf ^ 1 was last read before the previous barrier
    mma::cp_async_commit();
    mma::cp_async_wait<1>();  // this thread's copies of step s are done
    __syncthreads();          // and everyone's

    const unsigned char* st = smem + L::stage_off + buf * L::stage_bytes;
    const bf16* sQ = reinterpret_cast<const bf16*>(st + L::s_q);
    const bf16* sdO = reinterpret_cast<const bf16*>(st + L::s_do);
    const float* sL = reinterpret_cast<const float*>(st + L::s_lse);
    const float* sD = reinterpret_cast<const float*>(st + L::s_ds);
    const int64_t q0 = q0_of(s);
    const bool partial = vis_of(q0) == TileVisibility::Partial;

    // S^T (16 keys x BM queries) = K Q^T: B(d, query) = Q[query][d], one smem row per n.
    float sp[kQN][4];
#pragma unroll
    for (int n = 0; n < kQN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) sp[n][e] = 0.f;
#pragma unroll
    for (int n = 0; n < kQN; n += 2)
#pragma unroll
      for (int kk = 0; kk < kKS; ++kk) {
        uint32_t r[4];
        mma::ldmatrix_x4(r, mma::b_addr_nk(sQ + n * 8 * L::ldk + kk * 16, L::ldk, lane));
        mma_pair(sp[n], sp[n + 1], kf[kk], r);
      }
    // P^T, in place. Element e of n-tile n: key key_lo + 8 (e >> 1), query column n * 8 + 2t + (e & 1).
#pragma unroll
    for (int n = 0; n < kQN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + 2 * t + (e & 1);
        float pv = exp2f(fmaf(sp[n][e], p.scale_log2, -sL[col]));
        if (partial && !attention_visible(q0 + col, key_lo + 8 * (e >> 1), p.window, p.num_meta)) pv = 0.f;
        sp[n][e] = pv;
      }

    if (need_dv) {  // dV += P^T dO: B(query, c) = dO[query][c], one smem row per k (trans)
#pragma unroll
      for (int kc = 0; kc < BM / 16; ++kc) {
        uint32_t a[4];
        mma::c_to_a(a, sp[2 * kc], sp[2 * kc + 1]);
#pragma unroll
        for (int n = 0; n < DVP / 8; n += 2) {
          uint32_t r[4];
          mma::ldmatrix_x4_trans(r, mma::b_addr_kn(sdO + kc * 16 * L::ldv + n * 8, L::ldv, lane));
          mma_pair(dv_acc[n], dv_acc[n + 1], a, r);
        }
      }
    }
    if (need_dk) {
      // dP^T (16 keys x BM queries) = V dO^T: B(c, query) = dO[query][c], one smem row per n.
      float dp[kQN][4];
#pragma unroll
      for (int n = 0; n < kQN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = 0.f;
#pragma unroll
      for (int n = 0; n < kQN; n += 2)
#pragma unroll
        for (int kk = 0; kk < kVS; ++kk) {
          uint32_t r[4];
          mma::ldmatrix_x4(r, mma::b_addr_nk(sdO + n * 8 * L::ldv + kk * 16, L::ldv, lane));
          mma_pair(dp[n], dp[n + 1], vf[kk], r);
        }
      // dS^T = P^T (dP^T - Dsum[query]), in place.
#pragma unroll
      for (int n = 0; n < kQN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = sp[n][e] * (dp[n][e] - sD[n * 8 + 2 * t + (e & 1)]);
      // dK += dS^T Q: B(query, d) = Q[query][d], one smem row per k (trans).
#pragma unroll
      for (int kc = 0; kc < BM / 16; ++kc) {
        uint32_t a[4];
        mma::c_to_a(a, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
        for (int n = 0; n < DKP / 8; n += 2) {
          uint32_t r[4];
          mma::ldmatrix_x4_trans(r, mma::b_addr_kn(sQ + kc * 16 * L::ldk + n * 8, L::ldk, lane));
          mma_pair(dk_acc[n], dk_acc[n + 1], a, r);
        }
      }
    }
    __syncthreads();  // buf is refilled by the next iteration's prefetch
    buf ^= 1;
    s = nxt;
  }

  // Rows key_lo, key_lo + 8; columns n * 8 + 2t, + 1 (a whole n8 tile is inside or past the
  // head dim, a multiple of 8).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = key_lo + 8 * h;
    if (row >= p.T) continue;
    if (need_dk) {
      bf16* dst = p.dk + (bkv * p.T + row) * p.dk_dim;
#pragma unroll
      for (int n = 0; n < DKP / 8; ++n)
        if (n * 8 < p.dk_dim)
          *reinterpret_cast<__nv_bfloat162*>(dst + n * 8 + 2 * t) =
              __floats2bfloat162_rn(dk_acc[n][2 * h] * p.scale, dk_acc[n][2 * h + 1] * p.scale);
    }
    if (need_dv) {
      bf16* dst = p.dv + (bkv * p.T + row) * p.dv_dim;
#pragma unroll
      for (int n = 0; n < DVP / 8; ++n)
        if (n * 8 < p.dv_dim)
          *reinterpret_cast<__nv_bfloat162*>(dst + n * 8 + 2 * t) =
              __floats2bfloat162_rn(dv_acc[n][2 * h], dv_acc[n][2 * h + 1]);
    }
  }
}

// ---- dQ ----

template <int DKP, int DVP> struct DqLayout {
  static constexpr int kBN = Cfg<DKP, DVP>::kBN;
  static constexpr int ldk = DKP + mma::kSmemPad, ldv = DVP + mma::kSmemPad;
  static constexpr int q_off = 0;
  static constexpr int do_off = q_off + kTileRows * ldk * 2;
  static constexpr int stage_off = do_off + kTileRows * ldv * 2;
  static constexpr int s_k = 0, s_v = kBN * ldk * 2;  // one stage: K (kBN x ldk), V (kBN x ldv)
  static constexpr int stage_bytes = s_v + kBN * ldv * 2;
  static constexpr int bytes = stage_off + 2 * stage_bytes;
  static_assert(ldk * 2 % 16 == 0 && ldv * 2 % 16 == 0 && do_off % 16 == 0 && s_v % 16 == 0,
                "cp.async and ldmatrix need 16-byte aligned rows");
  static_assert(kRowPad % kTileRows == 0, "a query tile must not run past Tp");
};

template <int DKP, int DVP>
__global__ void __launch_bounds__(kThreads) attn_mma_bwd_dq_kernel(const BwdParams p) {
  using L = DqLayout<DKP, DVP>;
  constexpr int BM = kTileRows, BN = L::kBN;
  constexpr int kKS = DKP / 16, kVS = DVP / 16;
  constexpr int kKN = BN / 8;  // n8 tiles over the keys of a step
  extern __shared__ __align__(128) unsigned char smem[];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Late (heavy) query tiles first; heads vary fastest, so the heads of a group, which read
  // the same K and V, run side by side.
  const int64_t nbh = int64_t(gridDim.x) / p.ntiles;
  const int64_t qt = p.ntiles - 1 - int64_t(blockIdx.x) / nbh, bh = int64_t(blockIdx.x) % nbh;
  const int64_t b = bh / p.Hq, hk = (bh % p.Hq) / p.group;
  const int64_t q0 = qt * BM, q1 = min(p.T, q0 + BM);
  const bf16* kg = p.k + (b * p.Hkv + hk) * p.T * p.dk_dim;
  const bf16* vg = p.v + (b * p.Hkv + hk) * p.T * p.dv_dim;

  cp_tile<BM, DKP>(reinterpret_cast<bf16*>(smem + L::q_off), L::ldk, p.q + (bh * p.T + q0) * p.dk_dim, p.q,
                   int(q1 - q0), p.dk_dim);
  cp_tile<BM, DVP>(reinterpret_cast<bf16*>(smem + L::do_off), L::ldv, p.dout + (bh * p.T + q0) * p.dv_dim, p.dout,
                   int(q1 - q0), p.dv_dim);
  mma::cp_async_commit();

  // Steps: the meta tiles [m0, m1), then the window tiles [w0, w1).
  const KeyTileRanges tr = attention_key_tiles(q0, q1, BN, p.window, p.num_meta);
  const int n_meta = int(tr.m1 - tr.m0), n_steps = n_meta + int(tr.w1 - tr.w0);
  const int m0 = int(tr.m0), w0 = int(tr.w0);
  auto k0_of = [&](int s) { return int64_t(s < n_meta ? m0 + s : w0 + (s - n_meta)) * BN; };
  auto vis_of = [&](int64_t k0) {
    return attention_tile_visibility(q0, q1, k0, min(p.T, k0 + BN), p.window, p.num_meta);
  };
  auto next_step = [&](int s) {
    while (s < n_steps && vis_of(k0_of(s)) == TileVisibility::None) ++s;
    return s;
  };
  auto load_stage = [&](int s, int buf) {
    const int64_t k0 = k0_of(s);
    const int nk = int(min(int64_t(BN), p.T - k0));
    unsigned char* st = smem + L::stage_off + buf * L::stage_bytes;
    cp_tile<BN, DKP>(reinterpret_cast<bf16*>(st + L::s_k), L::ldk, kg + k0 * p.dk_dim, p.k, nk, p.dk_dim);
    cp_tile<BN, DVP>(reinterpret_cast<bf16*>(st + L::s_v), L::ldv, vg + k0 * p.dv_dim, p.v, nk, p.dv_dim);
  };

  int s = next_step(0);
  if (s < n_steps) load_stage(s, 0);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();  // Q and dO have landed
  __syncthreads();

  uint32_t qf[kKS][4], df[kVS][4];
  {
    const bf16* sQ = reinterpret_cast<const bf16*>(smem + L::q_off);
    const bf16* sdO = reinterpret_cast<const bf16*>(smem + L::do_off);
#pragma unroll
    for (int kk = 0; kk < kKS; ++kk)
      mma::ldmatrix_x4(qf[kk], mma::a_addr(sQ + warp * 16 * L::ldk + kk * 16, L::ldk, lane));
#pragma unroll
    for (int kk = 0; kk < kVS; ++kk)
      mma::ldmatrix_x4(df[kk], mma::a_addr(sdO + warp * 16 * L::ldv + kk * 16, L::ldv, lane));
  }
  // This lane's two rows: row_lo (c[0], c[1]) and row_lo + 8 (c[2], c[3]); both < Tp.
  const int64_t row_lo = q0 + warp * 16 + g;
  const float lse_r[2] = {p.lse2[bh * p.Tp + row_lo], p.lse2[bh * p.Tp + row_lo + 8]};
  const float dsum_r[2] = {p.dsum[bh * p.Tp + row_lo], p.dsum[bh * p.Tp + row_lo + 8]};

  float dq_acc[DKP / 8][4];
#pragma unroll
  for (int n = 0; n < DKP / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq_acc[n][e] = 0.f;

  int buf = 0;
  while (s < n_steps) {
    const int nxt = next_step(s + 1);
    if (nxt < n_steps) load_stage(nxt, buf ^ 1);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();
    __syncthreads();

    const unsigned char* st = smem + L::stage_off + buf * L::stage_bytes;
    const bf16* sK = reinterpret_cast<const bf16*>(st + L::s_k);
    const bf16* sV = reinterpret_cast<const bf16*>(st + L::s_v);
    const int64_t k0 = k0_of(s);
    // Keys past T are zero rows: masked here, since they share the rows of real keys.
    const bool masked = vis_of(k0) == TileVisibility::Partial || k0 + BN > p.T;

    // S (16 queries x BN keys) = Q K^T: B(d, key) = K[key][d], one smem row per n.
    float sp[kKN][4];
#pragma unroll
    for (int n = 0; n < kKN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) sp[n][e] = 0.f;
#pragma unroll
    for (int n = 0; n < kKN; n += 2)
#pragma unroll
      for (int kk = 0; kk < kKS; ++kk) {
        uint32_t r[4];
        mma::ldmatrix_x4(r, mma::b_addr_nk(sK + n * 8 * L::ldk + kk * 16, L::ldk, lane));
        mma_pair(sp[n], sp[n + 1], qf[kk], r);
      }
    // P in place. Element e of n-tile n: row row_lo + 8 (e >> 1), key k0 + n * 8 + 2t + (e & 1).
#pragma unroll
    for (int n = 0; n < kKN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float pv = exp2f(fmaf(sp[n][e], p.scale_log2, -lse_r[e >> 1]));
        if (masked) {
          const int64_t key = k0 + n * 8 + 2 * t + (e & 1);
          if (key >= p.T || !attention_visible(row_lo + 8 * (e >> 1), key, p.window, p.num_meta)) pv = 0.f;
        }
        sp[n][e] = pv;
      }
    // dP (16 x BN) = dO V^T: B(c, key) = V[key][c], one smem row per n.
    float dp[kKN][4];
#pragma unroll
    for (int n = 0; n < kKN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[n][e] = 0.f;
#pragma unroll
    for (int n = 0; n < kKN; n += 2)
#pragma unroll
      for (int kk = 0; kk < kVS; ++kk) {
        uint32_t r[4];
        mma::ldmatrix_x4(r, mma::b_addr_nk(sV + n * 8 * L::ldv + kk * 16, L::ldv, lane));
        mma_pair(dp[n], dp[n + 1], df[kk], r);
      }
    // dS = P (dP - Dsum[row]), in place.
#pragma unroll
    for (int n = 0; n < kKN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[n][e] = sp[n][e] * (dp[n][e] - dsum_r[e >> 1]);
    // dQ += dS K: B(key, d) = K[key][d], one smem row per k (trans).
#pragma unroll
    for (int kc = 0; kc < BN / 16; ++kc) {
      uint32_t a[4];
      mma::c_to_a(a, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
      for (int n = 0; n < DKP / 8; n += 2) {
        uint32_t r[4];
        mma::ldmatrix_x4_trans(r, mma::b_addr_kn(sK + kc * 16 * L::ldk + n * 8, L::ldk, lane));
        mma_pair(dq_acc[n], dq_acc[n + 1], a, r);
      }
    }
    __syncthreads();
    buf ^= 1;
    s = nxt;
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row_lo + 8 * h;
    if (row >= p.T) continue;
    bf16* dst = p.dq + (bh * p.T + row) * p.dk_dim;
#pragma unroll
    for (int n = 0; n < DKP / 8; ++n)
      if (n * 8 < p.dk_dim)
        *reinterpret_cast<__nv_bfloat162*>(dst + n * 8 + 2 * t) =
            __floats2bfloat162_rn(dq_acc[n][2 * h] * p.scale, dq_acc[n][2 * h + 1] * p.scale);
  }
}

// ---- host ----

template <typename Kernel>
void launch_checked(Kernel kernel, int64_t blocks, int smem_bytes, const BwdParams& p, const char* what,
                    const Dims& d) {
  HYMBA_CHECK(blocks > 0 && blocks < (int64_t(1) << 31), "attention_backward (mma): ", blocks, " blocks for ", what);
  HYMBA_CHECK(size_t(smem_bytes) <= smem_limit(), "attention_backward (mma): ", what, " needs ", smem_bytes,
              " bytes of shared memory, this GPU allows ", smem_limit());
  allow_smem(kernel, size_t(smem_bytes));
  kernel<<<unsigned(blocks), kThreads, smem_bytes, stream()>>>(p);
  HYMBA_CUDA_CHECK_LAUNCH("attention backward (mma) ", what, " B=", d.B, " Hq=", d.Hq, " Hkv=", d.Hkv, " T=", d.T,
                          " dk=", d.dk, " dv=", d.dv);
}

template <int DKP, int DVP>
void launch_bwd(BwdParams p, const Dims& d, bool need_dkdv, bool need_dq) {
  if (need_dkdv) {
    p.ntiles = ceil_div(d.T, kTileRows);
    launch_checked(attn_mma_bwd_dkdv_kernel<DKP, DVP>, p.ntiles * d.B * d.Hkv, DkdvLayout<DKP, DVP>::bytes, p,
                   "dK/dV", d);
  }
  if (need_dq) {
    p.ntiles = ceil_div(d.T, kTileRows);
    launch_checked(attn_mma_bwd_dq_kernel<DKP, DVP>, p.ntiles * d.B * d.Hq, DqLayout<DKP, DVP>::bytes, p, "dQ", d);
  }
}

// A contiguous tensor whose data starts 16-byte aligned (cp.async and the vector accesses
// need it; a contiguous view may start at any element).
Tensor aligned_contiguous(const Tensor& t) {
  Tensor c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}

}  // namespace

bool mma_backward_supports(DType dt, const Dims& d) {
  return dt == DType::BF16 && d.dk % 8 == 0 && d.dv % 8 == 0 && d.dk <= 128 && d.dv <= 128;
}

std::tuple<Tensor, Tensor, Tensor> mma_backward(const Tensor& dout_in, const Tensor& q_in, const Tensor& k_in,
                                                const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
                                                const Dims& d, const AttentionParams& p, bool need_dq,
                                                bool need_dk, bool need_dv) {
  HYMBA_CHECK(mma_backward_supports(q_in.dtype(), d), "attention_backward (mma): unsupported dtype ",
              dtype_name(q_in.dtype()), " or head dims dk=", d.dk, " dv=", d.dv);
  // Tile and step counters are 32-bit inside the kernels.
  HYMBA_CHECK(d.T < (int64_t(1) << 30) && d.group * ceil_div(d.T, 16) < (int64_t(1) << 31),
              "attention_backward (mma): sequence too long: T=", d.T, ", ", d.group, " query heads per kv head");
  const Tensor q = aligned_contiguous(q_in), k = aligned_contiguous(k_in), v = aligned_contiguous(v_in);
  const Tensor dout = aligned_contiguous(dout_in), out = aligned_contiguous(out_in);
  const Tensor lse = lse_in.contiguous();
  const TensorOptions f32(DType::F32, q_in.device()), bf(DType::BF16, q_in.device());

  const int64_t Tp = ceil_div(d.T, kRowPad) * kRowPad, rows = d.B * d.Hq * Tp;
  Tensor lse2 = empty({rows}, f32), dsum = empty({rows}, f32);
  attn_mma_bwd_prep_kernel<<<grid_for(rows * 32, 256), 256, 0, stream()>>>(
      static_cast<const bf16*>(dout.data_ptr()), static_cast<const bf16*>(out.data_ptr()), lse.data<float>(),
      lse2.data<float>(), dsum.data<float>(), rows, d.T, Tp, d.dv);
  HYMBA_CUDA_CHECK_LAUNCH("attention backward (mma) prep, ", rows, " rows of ", d.dv);

  Tensor dq, dk, dv;
  if (need_dq) dq = empty(q_in.shape(), bf);
  if (need_dk) dk = empty(k_in.shape(), bf);
  if (need_dv) dv = empty(v_in.shape(), bf);
  BwdParams a{};
  a.q = static_cast<const bf16*>(q.data_ptr());
  a.k = static_cast<const bf16*>(k.data_ptr());
  a.v = static_cast<const bf16*>(v.data_ptr());
  a.dout = static_cast<const bf16*>(dout.data_ptr());
  a.lse2 = lse2.data<float>();
  a.dsum = dsum.data<float>();
  a.dq = need_dq ? static_cast<bf16*>(dq.data_ptr()) : nullptr;
  a.dk = need_dk ? static_cast<bf16*>(dk.data_ptr()) : nullptr;
  a.dv = need_dv ? static_cast<bf16*>(dv.data_ptr()) : nullptr;
  a.T = d.T;
  a.Tp = Tp;
  a.window = p.window;
  a.num_meta = p.num_meta;
  a.Hq = int(d.Hq);
  a.Hkv = int(d.Hkv);
  a.group = d.group;
  a.dk_dim = d.dk;
  a.dv_dim = d.dv;
  a.scale = scale_of(p, d.dk);
  a.scale_log2 = a.scale * kLog2e;

  // Head dims padded to 64 or 128 (zero columns): three instantiations of each kernel.
  const bool need_dkdv = need_dk || need_dv;
  if (d.dk <= 64 && d.dv <= 64)
    launch_bwd<64, 64>(a, d, need_dkdv, need_dq);
  else if (d.dk <= 64)
    launch_bwd<64, 128>(a, d, need_dkdv, need_dq);
  else
    launch_bwd<128, 128>(a, d, need_dkdv, need_dq);
  return {dq, dk, dv};
}

}  // namespace hymba::kernels::cuda::attn
