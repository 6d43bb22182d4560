// Attention forward on tensor cores with mma.sync (bf16 in, fp32 accumulation), organised as
// flash-attention 2: the fragments and the online-softmax state live in registers, so the
// only shared-memory traffic is the K and V tiles (which every warp of the block reads).
//
// Block: one query tile of kBM = 64 rows and one (b, query head); 4 warps, each owning 16
// query rows for the whole kernel. 64 rows rather than 128 (8 warps) because (a) 4 warps with
// one 16-row slice each keep the register budget comfortable at dk = dv = 128 (Q fragments
// 32, O accumulators 64, S 32 registers per thread), (b) at the Hymba shape the grid is
// already large (34 query tiles x 200 heads), and (c) finer query tiles waste less on the
// partially visible tiles at a sliding window's edges.
//
// Per block: Q is staged in shared memory once and kept as A fragments (kDk / 16 of them).
// The key tiles that attention_key_tiles names (meta range, then window range; tiles that
// attention_tile_visibility calls None skipped) stream through two shared-memory stages with
// cp.async: tile n + 1 loads while tile n is computed. Per key tile and warp:
//   S = Q K^T        (B fragments: ldmatrix on K rows, b_addr_nk)
//   mask             (only on Partial tiles and the tile holding the last key)
//   online softmax   (base-2: scale * log2(e) folded into S; row max and sum over the 4 lanes
//                     of a group; each lane keeps a partial row sum, reduced once at the end)
//   O += P V         (A: P straight from the S accumulators, c_to_a; B: ldmatrix.trans on
//                     V rows, b_addr_kn)
// Epilogue: O / l rounded to bf16, staged through shared memory for 16-byte stores; lse =
// (m + log2 l) ln 2 in f32. Query rows past T are computed (zero Q rows) but never written.
//
// Head dims are padded at compile time to 64 or 128 (zero-filled columns: they add nothing
// to Q K^T, and V's padded columns only reach O columns that are not written). Rows past T
// are zero-filled too (a masked p is exactly 0, and 0 * a stale NaN would not be).
//
// Shared memory: two stages of K (64 x (kDk + 8)) and V (64 x (kDv + 8)) bf16; Q borrows
// K's second stage before the first key tile arrives there, the output staging borrows V's
// first stage after the last. dk = 64, dv = 128: 52 KiB; dk = dv = 128: 68 KiB.
#include <cmath>
#include <cstdint>
#include <tuple>

#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/mma.cuh"

namespace hymba::kernels::cuda::attn {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kBM = 64;                   // query rows per block
constexpr int kBN = 64;                   // keys per tile
constexpr int kFwdWarps = kBM / 16;       // one 16-row mma slice per warp
constexpr int kFwdThreads = kFwdWarps * 32;
static_assert(kBM == kBN, "Q and the output staging reuse one K / V stage of kBN rows");

struct MmaFwdArgs {
  const bf16* q;  // (B, Hq, T, dk), contiguous, 16-byte aligned
  const bf16* k;  // (B, Hkv, T, dk)
  const bf16* v;  // (B, Hkv, T, dv)
  bf16* out;      // (B, Hq, T, dv)
  float* lse;     // (B, Hq, T)
  int64_t T, window, num_meta;
  int64_t nqt, nbh;  // query tiles per head; B * Hq
  int Hq, Hkv, group, dk, dv;
  float scale_log2;  // softmax scale * log2(e)
};

// The padded head dim a kernel is instantiated for.
int padded_dim(int d) { return d <= 64 ? 64 : 128; }

size_t fwd_smem_bytes(int dkp, int dvp) {
  return size_t(2) * kBN * ((dkp + mma::kSmemPad) + (dvp + mma::kSmemPad)) * sizeof(bf16);
}

// Starts the copy of rows [r0, r0 + kBN) of a row-major (T, d) bf16 matrix into a kBN x kD
// shared tile (row stride kD + kSmemPad); rows at or past T and columns at or past d are
// zero-filled. d is a multiple of 8, so each 16-byte chunk is wholly inside or outside.
template <int kD>
__device__ __forceinline__ void load_rows_async(bf16* dst, const bf16* __restrict__ src, int64_t r0, int64_t T,
                                                int d) {
  constexpr int kChunks = kD / 8;
  static_assert(kBN * kChunks % kFwdThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = 0; i < kBN * kChunks / kFwdThreads; ++i) {
    const int idx = threadIdx.x + i * kFwdThreads;
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = r0 + r < T && c < d;
    mma::cp_async_16(dst + r * (kD + mma::kSmemPad) + c, ok ? src + (r0 + r) * d + c : src, ok ? 16 : 0);
  }
}

template <int kDk, int kDv>
__global__ void __launch_bounds__(kFwdThreads) mma_fwd_kernel(const MmaFwdArgs a) {
  using namespace mma;
  constexpr int kLdk = kDk + kSmemPad, kLdv = kDv + kSmemPad;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);  // [2][kBN][kLdk]
  bf16* sV = sK + 2 * kBN * kLdk;            // [2][kBN][kLdv]
  bf16* sQ = sK + kBN * kLdk;                // K's stage 1, until the second key tile

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  // The late query tiles of every head see the most keys; launching them first shortens the
  // tail. Neighbouring blocks share a query tile index and, within a group, the kv head.
  const int64_t qt = a.nqt - 1 - int64_t(blockIdx.x) / a.nbh;
  const int64_t bh = int64_t(blockIdx.x) % a.nbh;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / a.group;
  const int64_t q0 = qt * kBM, q1 = min(a.T, q0 + kBM);
  const bf16* kg = a.k + (b * a.Hkv + hk) * a.T * a.dk;
  const bf16* vg = a.v + (b * a.Hkv + hk) * a.T * a.dv;

  const KeyTileRanges tr = attention_key_tiles(q0, q1, kBN, a.window, a.num_meta);
  const int64_t n_meta = tr.m1 - tr.m0, n_tiles = n_meta + (tr.w1 - tr.w0);
  auto tile_of = [&](int64_t n) { return n < n_meta ? tr.m0 + n : tr.w0 + (n - n_meta); };
  auto visibility = [&](int64_t kt) {
    return attention_tile_visibility(q0, q1, kt * kBN, min(a.T, kt * kBN + kBN), a.window, a.num_meta);
  };
  // The first position >= n of a tile with something visible (block-uniform).
  auto next_visible = [&](int64_t n) {
    while (n < n_tiles && visibility(tile_of(n)) == TileVisibility::None) ++n;
    return n;
  };
  auto load_kv = [&](int64_t kt, int stage) {
    load_rows_async<kDk>(sK + stage * kBN * kLdk, kg, kt * kBN, a.T, a.dk);
    load_rows_async<kDv>(sV + stage * kBN * kLdv, vg, kt * kBN, a.T, a.dv);
  };

  // Q and the first key tile in one group; Q goes to registers before stage 1 is reused.
  load_rows_async<kDk>(sQ, a.q + bh * a.T * a.dk, q0, a.T, a.dk);
  int64_t n = next_visible(0);
  if (n < n_tiles) load_kv(tile_of(n), 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[kDk / 16][4];
#pragma unroll
  for (int kk = 0; kk < kDk / 16; ++kk) ldmatrix_x4(qa[kk], a_addr(sQ + warp * 16 * kLdk + kk * 16, kLdk, lane));
  __syncthreads();  // every warp holds its Q fragments: stage 1 may receive keys

  // Lane state for its two rows (g and g + 8 of the warp's slice), index r = 0, 1.
  float o[kDv / 8][4];
#pragma unroll
  for (int j = 0; j < kDv / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of scaled scores (base 2)
  float l_run[2] = {0.f, 0.f};              // this lane's part of the row sum
  const int64_t row0 = q0 + warp * 16 + g, row1 = row0 + 8;

  int stage = 0;
  while (n < n_tiles) {
    // Here tile n sits complete in `stage` and every warp is done with the other stage.
    const int64_t kt = tile_of(n);
    const int64_t nn = next_visible(n + 1);
    if (nn < n_tiles) load_kv(tile_of(nn), stage ^ 1);
    cp_async_commit();

    const int64_t k0 = kt * kBN;
    const int nk = int(min(a.T, k0 + kBN) - k0);
    // Columns past T are zero rows of K, not keys: they need the mask even on an All tile.
    const bool masked = nk < kBN || visibility(kt) == TileVisibility::Partial;
    const bf16* cK = sK + stage * kBN * kLdk;
    const bf16* cV = sV + stage * kBN * kLdv;

    // S = Q K^T: 8 n8 tiles of keys.
    float s[kBN / 8][4];
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int j = 0; j < kBN / 16; ++j) {
#pragma unroll
      for (int kk = 0; kk < kDk / 16; ++kk) {
        uint32_t r[4];
        ldmatrix_x4(r, b_addr_nk(cK + j * 16 * kLdk + kk * 16, kLdk, lane));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma_bf16_16816(s[2 * j], qa[kk], b0);
        mma_bf16_16816(s[2 * j + 1], qa[kk], b1);
      }
    }

    // Scale into base 2, mask, row max. Element e of n8 tile j: row r = e / 2, key column
    // j * 8 + 2t + e % 2.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[j][e] * a.scale_log2;
        if (masked) {
          const int c = j * 8 + 2 * t + (e & 1);
          if (c >= nk || !attention_visible((e & 2) ? row1 : row0, k0 + c, a.window, a.num_meta)) x = -INFINITY;
        }
        s[j][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float base[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m_run[r], quad_max(mx[r]));
      // A row that has seen no key yet keeps p = exp2(-inf) = 0 and alpha = 0 (its l and O
      // are still 0) instead of exp2(-inf - -inf) = NaN.
      base[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(m_run[r] - base[r]);
      m_run[r] = m_new;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[j][e] - base[e >> 1]);
        s[j][e] = p;
        rs[e >> 1] += p;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + rs[r];
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }

    // O += P V: key step kk is the A fragment of S's n8 tiles 2kk and 2kk + 1.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pa[4];
      c_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int j = 0; j < kDv / 16; ++j) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, b_addr_kn(cV + kk * 16 * kLdv + j * 16, kLdv, lane));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma_bf16_16816(o[2 * j], pa, b0);
        mma_bf16_16816(o[2 * j + 1], pa, b1);
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
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_run[r]);
    inv[r] = l > 0.f ? 1.f / l : 0.f;
    const int64_t qrow = r == 0 ? row0 : row1;
    if (t == 0 && qrow < a.T) a.lse[bh * a.T + qrow] = m_run[r] * 0.6931471805599453f + logf(l);
  }
  __syncthreads();  // every warp is done reading the K / V stages
  bf16* sO = sV;    // [kBM][kLdv]
#pragma unroll
  for (int j = 0; j < kDv / 8; ++j) {
    const int c = j * 8 + 2 * t;
    *reinterpret_cast<uint32_t*>(sO + (warp * 16 + g) * kLdv + c) = pack_bf16x2(o[j][0] * inv[0], o[j][1] * inv[0]);
    *reinterpret_cast<uint32_t*>(sO + (warp * 16 + g + 8) * kLdv + c) =
        pack_bf16x2(o[j][2] * inv[1], o[j][3] * inv[1]);
  }
  __syncwarp();  // each warp stores the 16 rows it staged
  constexpr int kChunks = kDv / 8;
#pragma unroll
  for (int i = 0; i < 16 * kChunks / 32; ++i) {
    const int idx = lane + i * 32;
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int64_t qrow = q0 + warp * 16 + r;
    if (qrow < a.T && c < a.dv)
      *reinterpret_cast<uint4*>(a.out + (bh * a.T + qrow) * a.dv + c) =
          *reinterpret_cast<const uint4*>(sO + (warp * 16 + r) * kLdv + c);
  }
}

template <int kDk, int kDv>
void launch(const MmaFwdArgs& a, const Dims& d) {
  const size_t smem = fwd_smem_bytes(kDk, kDv);
  const int64_t blocks = a.nqt * a.nbh;
  HYMBA_CHECK(blocks < (int64_t(1) << 31), "attention (mma): too many blocks (", blocks, ")");
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
  a.T = d.T;
  a.window = p.window;
  a.num_meta = p.num_meta;
  a.nqt = ceil_div(d.T, kBM);
  a.nbh = d.B * d.Hq;
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
