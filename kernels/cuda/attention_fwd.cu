// Attention forward on CUDA (flash-attention-2 organisation, see attention_common.cuh for the
// two product paths): one block per (query tile, b * Hq) loads its Q tile once, walks only the
// key tiles attention_key_tiles says it may see, and keeps the online-softmax state (row max
// m, row sum l, unnormalized output) in fp32 shared memory. The mask is evaluated only on
// Partial tiles.
//
// Shared memory (dynamic): Q, K (tile x dk), V (tile x dv) in the storage type, S (fp32), P
// (bf16, tensor-core path only; the FMA path overwrites S in place), O (fp32), m, l.
// Tensor cores, 64 x 64 tiles, dk = 64, dv = 128: 9216 + 9216 + 17408 + 17408 + 9216 + 33792
// + 2 * 256 = 96.8 KiB; dk = dv = 128: 113.3 KiB. FMA path, 32 x 32 tiles, dk = dv = 128:
// 70.5 KiB. Plans above the device's opt-in limit fall back to smaller tiles or to f32.
#include <algorithm>
#include <limits>
#include <tuple>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

using namespace attn;

struct FwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  int64_t T, nqt, window, num_meta;
  int Hq, Hkv, group, dk, dv;
  float scale;
  int bq, bk, dkp, dvp;  // tile sizes; head dims as padded for the products
  int ldq, ldk, ldv, lds, ldp, ldo;
  uint32_t off_q, off_k, off_v, off_s, off_p, off_o, off_m, off_l;
};

size_t plan_fwd(FwdArgs& a, bool tc, int bq, int bk) {
  const size_t e = tc ? sizeof(__nv_bfloat16) : sizeof(float);
  a.bq = bq;
  a.bk = bk;
  a.dkp = tc ? round_up(a.dk, 16) : a.dk;
  a.dvp = tc ? round_up(a.dv, 16) : a.dv;
  a.ldq = a.ldk = ld_elem(a.dkp, tc);
  a.ldv = ld_elem(a.dvp, tc);
  a.lds = ld_f32(bk, tc);
  a.ldp = tc ? ld_elem(bk, tc) : a.lds;
  a.ldo = ld_f32(a.dvp, tc);
  SmemPlan s;
  a.off_q = s.add(size_t(bq) * a.ldq * e);
  a.off_k = s.add(size_t(bk) * a.ldk * e);
  a.off_v = s.add(size_t(bk) * a.ldv * e);
  a.off_s = s.add(size_t(bq) * a.lds * sizeof(float));
  a.off_p = tc ? s.add(size_t(bq) * a.ldp * e) : a.off_s;
  a.off_o = s.add(size_t(bq) * a.ldo * sizeof(float));
  a.off_m = s.add(size_t(bq) * sizeof(float));
  a.off_l = s.add(size_t(bq) * sizeof(float));
  return s.bytes;
}

template <bool kTC>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(const FwdArgs a) {
  using E = Elem<kTC>;
  extern __shared__ __align__(128) unsigned char smem[];
  E* sQ = reinterpret_cast<E*>(smem + a.off_q);
  E* sK = reinterpret_cast<E*>(smem + a.off_k);
  E* sV = reinterpret_cast<E*>(smem + a.off_v);
  float* sS = reinterpret_cast<float*>(smem + a.off_s);
  E* sP = reinterpret_cast<E*>(smem + a.off_p);
  float* sO = reinterpret_cast<float*>(smem + a.off_o);
  float* sM = reinterpret_cast<float*>(smem + a.off_m);
  float* sL = reinterpret_cast<float*>(smem + a.off_l);
  const int bq = a.bq, bk = a.bk;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Late query tiles see the most keys; scheduling them first shortens the tail.
  const int64_t qt = a.nqt - 1 - int64_t(blockIdx.x) % a.nqt;
  const int64_t bh = int64_t(blockIdx.x) / a.nqt;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / a.group;
  const int64_t q0 = qt * bq, q1 = min(a.T, q0 + bq);
  const int nq = int(q1 - q0);
  const E* kg = static_cast<const E*>(a.k) + (b * a.Hkv + hk) * a.T * a.dk;
  const E* vg = static_cast<const E*>(a.v) + (b * a.Hkv + hk) * a.T * a.dv;

  load_tile(sQ, a.ldq, static_cast<const E*>(a.q) + (bh * a.T + q0) * a.dk, nq, a.dk, bq, a.dkp);
  zero_f32(sO, a.ldo, bq, a.dvp);
  for (int r = threadIdx.x; r < bq; r += blockDim.x) {
    sM[r] = -INFINITY;
    sL[r] = 0.f;
  }

  const KeyTileRanges tr = attention_key_tiles(q0, q1, bk, a.window, a.num_meta);
  for (int range = 0; range < 2; ++range) {
    const int64_t t0 = range == 0 ? tr.m0 : tr.w0, t1 = range == 0 ? tr.m1 : tr.w1;
    for (int64_t kt = t0; kt < t1; ++kt) {
      const int64_t k0 = kt * bk, k1 = min(a.T, k0 + bk);
      const int nk = int(k1 - k0);
      const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, a.window, a.num_meta);
      if (vis == TileVisibility::None) continue;  // uniform over the block
      __syncthreads();                            // the previous tile's readers of sK, sV, sP are done
      load_tile(sK, a.ldk, kg + k0 * a.dk, nk, a.dk, bk, a.dkp);
      load_tile(sV, a.ldv, vg + k0 * a.dv, nk, a.dv, bk, a.dvp);
      __syncthreads();
      block_mm<kTC, false, true>(sS, a.lds, sQ, a.ldq, sK, a.ldk, bq, bk, a.dkp, false);  // S = Q K^T
      __syncthreads();
      // Online softmax, one warp per row: new max, rescale of l and of the output row, P.
      for (int r = warp; r < bq; r += kWarps) {
        const bool row_ok = r < nq;
        float rmax = -INFINITY;
        for (int c = lane; c < bk; c += 32) {
          const bool ok = row_ok && c < nk &&
                          (vis == TileVisibility::All || attention_visible(q0 + r, k0 + c, a.window, a.num_meta));
          if (ok) rmax = fmaxf(rmax, sS[r * a.lds + c] * a.scale);
        }
        rmax = warp_max(rmax);
        const float m_old = sM[r], m_new = fmaxf(m_old, rmax);
        if (m_new == -INFINITY) {  // nothing visible to this row yet: P row = 0, state unchanged
          for (int c = lane; c < bk; c += 32) sP[r * a.ldp + c] = from_f32<E>(0.f);
          continue;
        }
        const float alpha = expf(m_old - m_new);  // 0 on the row's first visible tile
        float sum = 0.f;
        for (int c = lane; c < bk; c += 32) {
          const bool ok = row_ok && c < nk &&
                          (vis == TileVisibility::All || attention_visible(q0 + r, k0 + c, a.window, a.num_meta));
          const float p = ok ? expf(sS[r * a.lds + c] * a.scale - m_new) : 0.f;
          sum += p;
          sP[r * a.ldp + c] = from_f32<E>(p);
        }
        sum = warp_sum(sum);
        if (alpha != 1.f)
          for (int x = lane; x < a.dvp; x += 32) sO[r * a.ldo + x] *= alpha;
        // Every lane read sM[r] and sL[r] above; the shuffles of warp_sum order execution but
        // not shared memory (racecheck flagged the pair on an H100): the warp barrier does.
        __syncwarp();
        if (lane == 0) {
          sM[r] = m_new;
          sL[r] = sL[r] * alpha + sum;
        }
      }
      __syncthreads();
      block_mm<kTC, false, false>(sO, a.ldo, sP, a.ldp, sV, a.ldv, bq, a.dvp, bk, true);  // O += P V
    }
  }
  __syncthreads();
  // The diagonal key is always visible, so l > 0 on every real row.
  E* og = static_cast<E*>(a.out) + (bh * a.T + q0) * a.dv;
  for (int idx = threadIdx.x; idx < nq * a.dv; idx += blockDim.x) {
    const int r = idx / a.dv, x = idx - r * a.dv;
    og[int64_t(r) * a.dv + x] = from_f32<E>(sO[r * a.ldo + x] / sL[r]);
  }
  for (int r = threadIdx.x; r < nq; r += blockDim.x) a.lse[bh * a.T + q0 + r] = sM[r] + logf(sL[r]);
}

// Runs the forward on contiguous q, k, v of storage type Elem<kTC> into out (same dtype) and
// lse (f32), with the tile plan already in a.
template <bool kTC>
void launch_fwd(FwdArgs a, size_t smem, const Dims& d) {
  a.nqt = ceil_div(d.T, a.bq);
  const int64_t blocks = a.nqt * d.B * d.Hq;
  HYMBA_CHECK(blocks < (int64_t(1) << 31), "attention: too many blocks (", blocks, ")");
  allow_smem(attn_fwd_kernel<kTC>, smem);
  attn_fwd_kernel<kTC><<<unsigned(blocks), kThreads, smem, stream()>>>(a);
  HYMBA_CUDA_CHECK_LAUNCH("attention forward (", kTC ? "bf16 tensor cores" : "f32", ") B=", d.B, " Hq=", d.Hq,
                          " T=", d.T, " dk=", d.dk, " dv=", d.dv);
}

}  // namespace

std::tuple<Tensor, Tensor> attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                             const AttentionParams& p) {
  const Dims d = check_qkv("attention", q_in, k_in, v_in, p);
  const DType dt = q_in.dtype();
  ::hymba::cuda::DeviceGuard guard(q_in.device().index);
  if (d.B * d.Hq * d.T == 0)
    return {empty({d.B, d.Hq, d.T, d.dv}, TensorOptions(dt, q_in.device())),
            empty({d.B, d.Hq, d.T}, TensorOptions(stat_dtype(dt), q_in.device()))};
  if (attention_impl() == AttentionImpl::Mma && mma_forward_supports(dt, d)) return mma_forward(q_in, k_in, v_in, d, p);

  FwdArgs a{};
  a.T = d.T;
  a.window = p.window;
  a.num_meta = p.num_meta;
  a.Hq = int(d.Hq);
  a.Hkv = int(d.Hkv);
  a.group = d.group;
  a.dk = d.dk;
  a.dv = d.dv;
  a.scale = scale_of(p, d.dk);
  const size_t limit = smem_limit();

  // bf16 on tensor cores when the padded head dims fit the planned tiles.
  if (dt == DType::BF16 && round_up(d.dk, 16) <= 128 && round_up(d.dv, 16) <= 128) {
    for (int t : {64, 32}) {
      const size_t smem = plan_fwd(a, true, t, t);
      if (smem > limit) continue;
      Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
      Tensor out = empty({d.B, d.Hq, d.T, d.dv}, TensorOptions(dt, q_in.device()));
      Tensor lse = empty({d.B, d.Hq, d.T}, TensorOptions(DType::F32, q_in.device()));
      a.q = q.data_ptr();
      a.k = k.data_ptr();
      a.v = v.data_ptr();
      a.out = out.data_ptr();
      a.lse = lse.data<float>();
      launch_fwd<true>(a, smem, d);
      return {out, lse};
    }
  }

  // f32 FMA path; other dtypes go through f32 copies. The largest tile that fits a modest
  // budget (several blocks per SM), else the largest that fits at all.
  size_t smem = 0;
  int tile = 0;
  for (int t : {64, 32, 16}) {
    smem = plan_fwd(a, false, t, t);
    if (smem <= std::min<size_t>(limit, 96 * 1024)) {
      tile = t;
      break;
    }
  }
  if (tile == 0) {
    smem = plan_fwd(a, false, 16, 16);
    HYMBA_CHECK(smem <= limit, "attention: head dims dk=", d.dk, " dv=", d.dv, " need ", smem,
                " bytes of shared memory per block, more than this GPU's ", limit);
  }
  Tensor q = q_in.to(DType::F32).contiguous(), k = k_in.to(DType::F32).contiguous(),
         v = v_in.to(DType::F32).contiguous();
  Tensor out = empty({d.B, d.Hq, d.T, d.dv}, TensorOptions(DType::F32, q_in.device()));
  Tensor lse = empty({d.B, d.Hq, d.T}, TensorOptions(DType::F32, q_in.device()));
  a.q = q.data<float>();
  a.k = k.data<float>();
  a.v = v.data<float>();
  a.out = out.data<float>();
  a.lse = lse.data<float>();
  launch_fwd<false>(a, smem, d);
  return {out.to(dt), lse.to(stat_dtype(dt))};
}

}  // namespace hymba::kernels::cuda
