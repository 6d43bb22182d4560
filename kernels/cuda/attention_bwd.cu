// Attention backward on CUDA (flash-attention-2 style, deterministic: no atomics).
//   1. delta_i = <dout_i, out_i> per query row (one warp per row).
//   2. dK, dV: one block per (key tile, b * Hkv) walks the Hq / Hkv query heads of its group
//      and, for each, the query tiles that can see the key tile, in a fixed order; it
//      recomputes P from q, k and the saved lse and accumulates dV += P^T dO and
//      dK += dS^T Q (dS = P * (dO V^T - delta)) in fp32 shared memory.
//   3. dQ: one block per (query tile, b * Hq) walks the key tiles the forward visits and
//      accumulates dQ += dS K. This recomputes QK^T and dO V^T a second time, the price of
//      a deterministic dQ without atomics.
// The two product paths (bf16 tensor cores, f32 FMA) are described in attention_common.cuh.
//
// Shared memory (dynamic), tensor cores, dk = 64, dv = 128:
//   dK/dV (32 queries x 64 keys): Q 4608 + dO 8704 + K 9216 + V 17408 + S 8704 + dP 8704
//     + P 4608 + dS 4608 + dK 17408 + dV 33792 + lse, delta 256 = 118.0 KiB;
//   dQ (64 x 64): Q 9216 + dO 17408 + K 9216 + V 17408 + S 17408 + dP 17408 + dS 9216
//     + dQ 17408 + 512 = 112.5 KiB.
// dk = dv = 128: 147.3 and 146.5 KiB (within the 163 KiB an sm_80 block may opt in to).
// The FMA path uses 32 x 32 tiles and aliases P onto S and dS onto dP.
#include <algorithm>
#include <tuple>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

using namespace attn;

struct BwdArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  const float* delta;
  void* dq;  // null when not needed
  void* dk;
  void* dv;
  int64_t T, nqt, nkt, window, num_meta;
  int Hq, Hkv, group, dk_dim, dv_dim;
  float scale;
  int bq, bk, dkp, dvp;
  int ldq, lddo, ldk, ldv, lds, ldp, ldacc_k, ldacc_v;
  // acc_k: dK (dK/dV kernel) or dQ (dQ kernel); acc_v: dV (dK/dV kernel only).
  uint32_t off_q, off_do, off_k, off_v, off_s, off_dp, off_p, off_ds, off_acc_k, off_acc_v, off_lse, off_delta;
};

// kind 0: the dK/dV kernel; kind 1: the dQ kernel (no P, no dV accumulator, dQ has bq rows).
size_t plan_bwd(BwdArgs& a, bool tc, int bq, int bk, int kind) {
  const size_t e = tc ? sizeof(__nv_bfloat16) : sizeof(float);
  const size_t f = sizeof(float);
  a.bq = bq;
  a.bk = bk;
  a.dkp = tc ? round_up(a.dk_dim, 16) : a.dk_dim;
  a.dvp = tc ? round_up(a.dv_dim, 16) : a.dv_dim;
  a.ldq = a.ldk = ld_elem(a.dkp, tc);
  a.lddo = a.ldv = ld_elem(a.dvp, tc);
  a.lds = ld_f32(bk, tc);
  a.ldp = tc ? ld_elem(bk, tc) : a.lds;
  a.ldacc_k = ld_f32(a.dkp, tc);
  a.ldacc_v = ld_f32(a.dvp, tc);
  SmemPlan s;
  a.off_q = s.add(size_t(bq) * a.ldq * e);
  a.off_do = s.add(size_t(bq) * a.lddo * e);
  a.off_k = s.add(size_t(bk) * a.ldk * e);
  a.off_v = s.add(size_t(bk) * a.ldv * e);
  a.off_s = s.add(size_t(bq) * a.lds * f);
  a.off_dp = s.add(size_t(bq) * a.lds * f);
  a.off_p = (tc && kind == 0) ? s.add(size_t(bq) * a.ldp * e) : a.off_s;
  a.off_ds = tc ? s.add(size_t(bq) * a.ldp * e) : a.off_dp;
  a.off_acc_k = s.add(size_t(kind == 0 ? bk : bq) * a.ldacc_k * f);
  a.off_acc_v = kind == 0 ? s.add(size_t(bk) * a.ldacc_v * f) : a.off_acc_k;
  a.off_lse = s.add(size_t(bq) * f);
  a.off_delta = s.add(size_t(bq) * f);
  return s.bytes;
}

// Pointers into one block's shared memory, per the plan.
template <bool kTC>
struct Smem {
  using E = Elem<kTC>;
  E *q, *dout, *k, *v, *p, *ds;
  float *s, *dp, *acc_k, *acc_v, *lse, *delta;
  __device__ Smem(unsigned char* base, const BwdArgs& a)
      : q(reinterpret_cast<E*>(base + a.off_q)),
        dout(reinterpret_cast<E*>(base + a.off_do)),
        k(reinterpret_cast<E*>(base + a.off_k)),
        v(reinterpret_cast<E*>(base + a.off_v)),
        p(reinterpret_cast<E*>(base + a.off_p)),
        ds(reinterpret_cast<E*>(base + a.off_ds)),
        s(reinterpret_cast<float*>(base + a.off_s)),
        dp(reinterpret_cast<float*>(base + a.off_dp)),
        acc_k(reinterpret_cast<float*>(base + a.off_acc_k)),
        acc_v(reinterpret_cast<float*>(base + a.off_acc_v)),
        lse(reinterpret_cast<float*>(base + a.off_lse)),
        delta(reinterpret_cast<float*>(base + a.off_delta)) {}
};

template <typename T>
__global__ void attn_delta_kernel(const T* __restrict__ dout, const T* __restrict__ out, float* __restrict__ delta,
                                  int64_t rows, int dv) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < rows; row += nwarps) {
    float s = 0.f;
    for (int x = lane; x < dv; x += 32) s += to_f32(dout[row * dv + x]) * to_f32(out[row * dv + x]);
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

// Loads the query-side tiles of (bh, query tile q0) into shared memory: q, dout, lse, delta.
template <bool kTC>
__device__ __forceinline__ void load_query_side(const Smem<kTC>& sm, const BwdArgs& a, int64_t bh, int64_t q0,
                                                int nq) {
  using E = Elem<kTC>;
  load_tile(sm.q, a.ldq, static_cast<const E*>(a.q) + (bh * a.T + q0) * a.dk_dim, nq, a.dk_dim, a.bq, a.dkp);
  load_tile(sm.dout, a.lddo, static_cast<const E*>(a.dout) + (bh * a.T + q0) * a.dv_dim, nq, a.dv_dim, a.bq, a.dvp);
  for (int r = threadIdx.x; r < a.bq; r += blockDim.x) {
    sm.lse[r] = r < nq ? a.lse[bh * a.T + q0 + r] : 0.f;
    sm.delta[r] = r < nq ? a.delta[bh * a.T + q0 + r] : 0.f;
  }
}

// S = Q K^T and dP = dO V^T for the tiles in shared memory.
template <bool kTC>
__device__ __forceinline__ void scores_and_dprobs(const Smem<kTC>& sm, const BwdArgs& a) {
  block_mm<kTC, false, true>(sm.s, a.lds, sm.q, a.ldq, sm.k, a.ldk, a.bq, a.bk, a.dkp, false);
  block_mm<kTC, false, true>(sm.dp, a.lds, sm.dout, a.lddo, sm.v, a.ldv, a.bq, a.bk, a.dvp, false);
}

template <bool kTC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(const BwdArgs a) {
  using E = Elem<kTC>;
  extern __shared__ __align__(128) unsigned char smem[];
  const Smem<kTC> sm(smem, a);
  const int bq = a.bq, bk = a.bk;
  const int64_t kt = int64_t(blockIdx.x) % a.nkt, bkv = int64_t(blockIdx.x) / a.nkt;
  const int64_t b = bkv / a.Hkv, hk = bkv % a.Hkv;
  const int64_t k0 = kt * bk, k1 = min(a.T, k0 + bk);
  const int nk = int(k1 - k0);
  const bool need_dk = a.dk != nullptr, need_dv = a.dv != nullptr;

  load_tile(sm.k, a.ldk, static_cast<const E*>(a.k) + (bkv * a.T + k0) * a.dk_dim, nk, a.dk_dim, bk, a.dkp);
  load_tile(sm.v, a.ldv, static_cast<const E*>(a.v) + (bkv * a.T + k0) * a.dv_dim, nk, a.dv_dim, bk, a.dvp);
  zero_f32(sm.acc_k, a.ldacc_k, bk, a.dkp);
  zero_f32(sm.acc_v, a.ldacc_v, bk, a.dvp);

  // Query tiles that may see keys [k0, k1): from the one holding k0 (causality) to the last
  // one within the window of key k1 - 1 (all of them when the tile holds a meta key).
  const int64_t qt_first = k0 / bq;
  const int64_t qt_last = (a.window < 0 || k0 < a.num_meta) ? a.nqt - 1 : min(a.nqt - 1, (k1 - 1 + a.window) / bq);
  for (int hh = 0; hh < a.group; ++hh) {
    const int64_t bh = b * a.Hq + hk * a.group + hh;
    for (int64_t qt = qt_first; qt <= qt_last; ++qt) {
      const int64_t q0 = qt * bq, q1 = min(a.T, q0 + bq);
      const int nq = int(q1 - q0);
      const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, a.window, a.num_meta);
      if (vis == TileVisibility::None) continue;  // uniform over the block
      __syncthreads();                            // the previous tile's readers are done
      load_query_side(sm, a, bh, q0, nq);
      __syncthreads();
      scores_and_dprobs(sm, a);
      __syncthreads();
      probs_and_dscores<kTC>(sm.s, sm.dp, a.lds, sm.p, sm.ds, a.ldp, sm.lse, sm.delta, bq, bk, nq, nk, q0, k0, vis,
                             a.window, a.num_meta, a.scale, need_dv, need_dk);
      __syncthreads();
      // dV += P^T dO; dK += dS^T Q (scale applied at the end).
      if (need_dv) block_mm<kTC, true, false>(sm.acc_v, a.ldacc_v, sm.p, a.ldp, sm.dout, a.lddo, bk, a.dvp, bq, true);
      if (need_dk) block_mm<kTC, true, false>(sm.acc_k, a.ldacc_k, sm.ds, a.ldp, sm.q, a.ldq, bk, a.dkp, bq, true);
    }
  }
  __syncthreads();
  if (need_dk) {
    E* g = static_cast<E*>(a.dk) + (bkv * a.T + k0) * a.dk_dim;
    for (int idx = threadIdx.x; idx < nk * a.dk_dim; idx += blockDim.x) {
      const int r = idx / a.dk_dim, x = idx - r * a.dk_dim;
      g[int64_t(r) * a.dk_dim + x] = from_f32<E>(sm.acc_k[r * a.ldacc_k + x] * a.scale);
    }
  }
  if (need_dv) {
    E* g = static_cast<E*>(a.dv) + (bkv * a.T + k0) * a.dv_dim;
    for (int idx = threadIdx.x; idx < nk * a.dv_dim; idx += blockDim.x) {
      const int r = idx / a.dv_dim, x = idx - r * a.dv_dim;
      g[int64_t(r) * a.dv_dim + x] = from_f32<E>(sm.acc_v[r * a.ldacc_v + x]);
    }
  }
}

template <bool kTC>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(const BwdArgs a) {
  using E = Elem<kTC>;
  extern __shared__ __align__(128) unsigned char smem[];
  const Smem<kTC> sm(smem, a);
  const int bq = a.bq, bk = a.bk;
  const int64_t qt = a.nqt - 1 - int64_t(blockIdx.x) % a.nqt;  // heavy (late) tiles first
  const int64_t bh = int64_t(blockIdx.x) / a.nqt;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / a.group;
  const int64_t q0 = qt * bq, q1 = min(a.T, q0 + bq);
  const int nq = int(q1 - q0);
  const E* kg = static_cast<const E*>(a.k) + (b * a.Hkv + hk) * a.T * a.dk_dim;
  const E* vg = static_cast<const E*>(a.v) + (b * a.Hkv + hk) * a.T * a.dv_dim;

  load_query_side(sm, a, bh, q0, nq);
  zero_f32(sm.acc_k, a.ldacc_k, bq, a.dkp);

  const KeyTileRanges tr = attention_key_tiles(q0, q1, bk, a.window, a.num_meta);
  for (int range = 0; range < 2; ++range) {
    const int64_t t0 = range == 0 ? tr.m0 : tr.w0, t1 = range == 0 ? tr.m1 : tr.w1;
    for (int64_t kt = t0; kt < t1; ++kt) {
      const int64_t k0 = kt * bk, k1 = min(a.T, k0 + bk);
      const int nk = int(k1 - k0);
      const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, a.window, a.num_meta);
      if (vis == TileVisibility::None) continue;
      __syncthreads();
      load_tile(sm.k, a.ldk, kg + k0 * a.dk_dim, nk, a.dk_dim, bk, a.dkp);
      load_tile(sm.v, a.ldv, vg + k0 * a.dv_dim, nk, a.dv_dim, bk, a.dvp);
      __syncthreads();
      scores_and_dprobs(sm, a);
      __syncthreads();
      probs_and_dscores<kTC>(sm.s, sm.dp, a.lds, sm.p, sm.ds, a.ldp, sm.lse, sm.delta, bq, bk, nq, nk, q0, k0, vis,
                             a.window, a.num_meta, a.scale, false, true);
      __syncthreads();
      block_mm<kTC, false, false>(sm.acc_k, a.ldacc_k, sm.ds, a.ldp, sm.k, a.ldk, bq, a.dkp, bk, true);  // dQ += dS K
    }
  }
  __syncthreads();
  E* g = static_cast<E*>(a.dq) + (bh * a.T + q0) * a.dk_dim;
  for (int idx = threadIdx.x; idx < nq * a.dk_dim; idx += blockDim.x) {
    const int r = idx / a.dk_dim, x = idx - r * a.dk_dim;
    g[int64_t(r) * a.dk_dim + x] = from_f32<E>(sm.acc_k[r * a.ldacc_k + x] * a.scale);
  }
}

// Tile plans of both kernels for one path, or false when either exceeds the limit.
struct BwdPlan {
  BwdArgs kv, q;
  size_t smem_kv = 0, smem_q = 0;
};

bool plan_path(BwdPlan& pl, const BwdArgs& base, bool tc, size_t limit) {
  // (queries, keys) per tile, best first. The dK/dV kernel holds two key-side accumulators,
  // so it takes fewer queries per step.
  static constexpr int kTc[][4] = {{32, 64, 64, 64}, {32, 32, 32, 32}, {16, 32, 32, 16}};
  static constexpr int kFma[][4] = {{32, 32, 32, 32}, {16, 16, 16, 16}};
  const size_t soft = tc ? limit : std::min<size_t>(limit, 112 * 1024);
  const int n = tc ? 3 : 2;
  for (int i = 0; i < n; ++i) {
    const int* t = tc ? kTc[i] : kFma[i];
    pl.kv = pl.q = base;
    pl.smem_kv = plan_bwd(pl.kv, tc, t[0], t[1], 0);
    pl.smem_q = plan_bwd(pl.q, tc, t[2], t[3], 1);
    if (pl.smem_kv <= soft && pl.smem_q <= soft) return true;
  }
  return !tc && pl.smem_kv <= limit && pl.smem_q <= limit;
}

template <bool kTC>
void launch_bwd(BwdPlan& pl, const Dims& d, bool need_dkdv, bool need_dq) {
  const char* path = kTC ? "bf16 tensor cores" : "f32";
  if (need_dkdv) {
    BwdArgs& a = pl.kv;
    a.nqt = ceil_div(d.T, a.bq);
    a.nkt = ceil_div(d.T, a.bk);
    const int64_t blocks = a.nkt * d.B * d.Hkv;
    HYMBA_CHECK(blocks < (int64_t(1) << 31), "attention_backward: too many blocks (", blocks, ")");
    allow_smem(attn_bwd_dkdv_kernel<kTC>, pl.smem_kv);
    attn_bwd_dkdv_kernel<kTC><<<unsigned(blocks), kThreads, pl.smem_kv, stream()>>>(a);
    HYMBA_CUDA_CHECK_LAUNCH("attention backward dK/dV (", path, ") B=", d.B, " Hkv=", d.Hkv, " T=", d.T, " dk=", d.dk,
                            " dv=", d.dv);
  }
  if (need_dq) {
    BwdArgs& a = pl.q;
    a.nqt = ceil_div(d.T, a.bq);
    a.nkt = ceil_div(d.T, a.bk);
    const int64_t blocks = a.nqt * d.B * d.Hq;
    HYMBA_CHECK(blocks < (int64_t(1) << 31), "attention_backward: too many blocks (", blocks, ")");
    allow_smem(attn_bwd_dq_kernel<kTC>, pl.smem_q);
    attn_bwd_dq_kernel<kTC><<<unsigned(blocks), kThreads, pl.smem_q, stream()>>>(a);
    HYMBA_CUDA_CHECK_LAUNCH("attention backward dQ (", path, ") B=", d.B, " Hq=", d.Hq, " T=", d.T, " dk=", d.dk,
                            " dv=", d.dv);
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout_in, const Tensor& q_in, const Tensor& k_in,
                                                      const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
                                                      const AttentionParams& p, bool need_dq, bool need_dk,
                                                      bool need_dv) {
  const char* op = "attention_backward";
  const Dims d = check_qkv(op, q_in, k_in, v_in, p);
  const attn_check::QkvDims cd{d.B, d.Hq, d.Hkv, d.T, d.dk, d.dv};
  attn_check::check_dout_out(op, dout_in, out_in, q_in, cd);
  check_same_device(op, out_in, q_in);
  attn_check::check_lse(op, lse_in, q_in, cd, lse_in.defined() && lse_in.device() == q_in.device());
  const DType dt = q_in.dtype();
  ::hymba::cuda::DeviceGuard guard(q_in.device().index);
  TensorOptions opt(dt, q_in.device());
  Tensor dq, dk, dv;
  if (!need_dq && !need_dk && !need_dv) return {dq, dk, dv};
  if (d.B * d.Hq * d.T == 0) {
    if (need_dq) dq = zeros(q_in.shape(), opt);
    if (need_dk) dk = zeros(k_in.shape(), opt);
    if (need_dv) dv = zeros(v_in.shape(), opt);
    return {dq, dk, dv};
  }
  if (attention_impl() == AttentionImpl::Mma && mma_backward_supports(dt, d))
    return mma_backward(dout_in, q_in, k_in, v_in, out_in, lse_in, d, p, need_dq, need_dk, need_dv);

  BwdArgs base{};
  base.T = d.T;
  base.window = p.window;
  base.num_meta = p.num_meta;
  base.Hq = int(d.Hq);
  base.Hkv = int(d.Hkv);
  base.group = d.group;
  base.dk_dim = d.dk;
  base.dv_dim = d.dv;
  base.scale = scale_of(p, d.dk);
  const size_t limit = smem_limit();
  BwdPlan pl;
  const bool tc = dt == DType::BF16 && round_up(d.dk, 16) <= 128 && round_up(d.dv, 16) <= 128 &&
                  plan_path(pl, base, true, limit);
  if (!tc)
    HYMBA_CHECK(plan_path(pl, base, false, limit), op, ": head dims dk=", d.dk, " dv=", d.dv,
                " need more shared memory per block than this GPU's ", limit, " bytes");
  // The tensor-core path reads bf16 as is; the FMA path reads f32 (other dtypes are copied).
  const DType work = tc ? DType::BF16 : DType::F32;
  TensorOptions wopt(work, q_in.device());
  Tensor q = q_in.to(work).contiguous(), k = k_in.to(work).contiguous(), v = v_in.to(work).contiguous();
  Tensor dout = dout_in.to(work).contiguous(), out = out_in.to(work).contiguous();
  Tensor lse = lse_in.to(DType::F32).contiguous();
  Tensor delta = empty({d.B * d.Hq * d.T}, TensorOptions(DType::F32, q_in.device()));
  const int64_t rows = d.B * d.Hq * d.T;
  if (tc)
    attn_delta_kernel<__nv_bfloat16><<<grid_for(rows * 32, 256), 256, 0, stream()>>>(
        static_cast<const __nv_bfloat16*>(dout.data_ptr()), static_cast<const __nv_bfloat16*>(out.data_ptr()),
        delta.data<float>(), rows, d.dv);
  else
    attn_delta_kernel<float><<<grid_for(rows * 32, 256), 256, 0, stream()>>>(dout.data<float>(), out.data<float>(),
                                                                              delta.data<float>(), rows, d.dv);
  HYMBA_CUDA_CHECK_LAUNCH("attention backward delta, ", rows, " rows of ", d.dv);

  Tensor gq, gk, gv;  // in the work dtype
  if (need_dq) gq = empty(q.shape(), wopt);
  if (need_dk) gk = empty(k.shape(), wopt);
  if (need_dv) gv = empty(v.shape(), wopt);
  for (BwdArgs* a : {&pl.kv, &pl.q}) {
    a->q = q.data_ptr();
    a->k = k.data_ptr();
    a->v = v.data_ptr();
    a->dout = dout.data_ptr();
    a->lse = lse.data<float>();
    a->delta = delta.data<float>();
    a->dq = need_dq ? gq.data_ptr() : nullptr;
    a->dk = need_dk ? gk.data_ptr() : nullptr;
    a->dv = need_dv ? gv.data_ptr() : nullptr;
  }
  if (tc)
    launch_bwd<true>(pl, d, need_dk || need_dv, need_dq);
  else
    launch_bwd<false>(pl, d, need_dk || need_dv, need_dq);
  if (need_dq) dq = gq.to(dt);
  if (need_dk) dk = gk.to(dt);
  if (need_dv) dv = gv.to(dt);
  return {dq, dk, dv};
}

}  // namespace hymba::kernels::cuda
