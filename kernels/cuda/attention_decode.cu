// Attention of new queries against a KV cache on CUDA (generation): one block per
// (b, query head, query). Each warp walks a strided subset of the cache slots with its own
// online softmax (lane-parallel dot products, the output row spread over the lanes); the
// warps' partial states are merged at the end. fp32 math for every storage dtype.
// Shared memory (dynamic): q row (dk) + one output row per warp (4 * dv) + 8 floats, in
// floats: 2.1 KiB for dk = 64, dv = 128.
#include <cmath>

#include "kernels/cuda/attention_common.cuh"

namespace hymba::kernels::cuda {
namespace {

using namespace attn;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    attn_decode_kernel(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,
                       const int64_t* __restrict__ qpos, const int64_t* __restrict__ kpos, T* __restrict__ out,
                       int64_t Hq, int64_t Hkv, int64_t group, int64_t Tq, int64_t S, int dk, int dv, float scale,
                       int64_t window, int64_t num_meta) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* sq = reinterpret_cast<float*>(smem);
  float* sacc = sq + dk;            // kWarps rows of dv
  float* sm = sacc + kWarps * dv;   // per-warp running max
  float* sl = sm + kWarps;          // per-warp running sum
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t w = blockIdx.x;  // ((b * Hq + h) * Tq + t), the query's row in q and out
  const int64_t t = w % Tq, bh = w / Tq, b = bh / Hq, hk = (bh % Hq) / group;
  const int64_t i = qpos[b * Tq + t];
  const T* kp = kc + (b * Hkv + hk) * S * dk;
  const T* vp = vc + (b * Hkv + hk) * S * dv;
  for (int x = threadIdx.x; x < dk; x += blockDim.x) sq[x] = to_f32(q[w * dk + x]) * scale;
  float* acc = sacc + warp * dv;  // this warp's row; lane x owns elements x, x + 32, ...
  for (int x = lane; x < dv; x += 32) acc[x] = 0.f;
  __syncthreads();

  float m = -INFINITY, l = 0.f;
  for (int64_t c = warp; c < S; c += kWarps) {
    const int64_t j = kpos[b * S + c];
    if (j < 0 || !attention_visible(i, j, window, num_meta)) continue;  // uniform over the warp
    const T* kr = kp + c * dk;
    float s = 0.f;
    for (int x = lane; x < dk; x += 32) s += sq[x] * to_f32(kr[x]);
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);  // 0 on the warp's first visible slot
    const float e = expf(s - m_new);
    l = l * alpha + e;
    const T* vr = vp + c * dv;
    for (int x = lane; x < dv; x += 32) acc[x] = acc[x] * alpha + e * to_f32(vr[x]);
    m = m_new;
  }
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
  __syncthreads();
  float M = -INFINITY;
  for (int u = 0; u < kWarps; ++u) M = fmaxf(M, sm[u]);
  float L = 0.f;
  for (int u = 0; u < kWarps; ++u)
    if (sm[u] != -INFINITY) L += sl[u] * expf(sm[u] - M);
  for (int x = threadIdx.x; x < dv; x += blockDim.x) {
    float o = 0.f;
    for (int u = 0; u < kWarps; ++u)
      if (sm[u] != -INFINITY) o += sacc[u * dv + x] * expf(sm[u] - M);
    // A query that sees no key has no defined output; NaN makes that visible downstream.
    out[w * dv + x] = from_f32<T>(M == -INFINITY ? NAN : o / L);
  }
}

}  // namespace

Tensor attention_decode(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& qpos_in,
                        const Tensor& kpos_in, const AttentionParams& p) {
  const char* op = "attention_decode";
  const attn_check::DecodeDims dd = attn_check::check_decode_qkv(op, q_in, k_in, v_in, check_attn_tensor);
  const int64_t B = dd.B, Hq = dd.Hq, Tq = dd.Tq, dk = dd.dk, Hkv = dd.Hkv, S = dd.S, dv = dd.dv;
  HYMBA_CHECK(qpos_in.defined() && qpos_in.shape() == Shape({B, Tq}) &&
                  (qpos_in.dtype() == DType::I64 || qpos_in.dtype() == DType::I32) &&
                  qpos_in.device() == q_in.device(),
              op, ": q_pos ", qpos_in.defined() ? qpos_in.meta_str() : std::string("undefined"),
              " must be i64 or i32 of shape ", shape_str({B, Tq}), " on ", q_in.device().str());
  HYMBA_CHECK(kpos_in.defined() && kpos_in.shape() == Shape({B, S}) &&
                  (kpos_in.dtype() == DType::I64 || kpos_in.dtype() == DType::I32) &&
                  kpos_in.device() == q_in.device(),
              op, ": k_pos ", kpos_in.defined() ? kpos_in.meta_str() : std::string("undefined"),
              " must be i64 or i32 of shape ", shape_str({B, S}), " on ", q_in.device().str());
  HYMBA_CHECK(p.num_meta >= 0, op, ": num_meta must be >= 0, got ", p.num_meta);
  HYMBA_CHECK(std::isfinite(p.scale), op, ": scale must be finite, got ", p.scale);
  ::hymba::cuda::DeviceGuard guard(q_in.device().index);
  Tensor out = empty({B, Hq, Tq, dv}, TensorOptions(q_in.dtype(), q_in.device()));
  if (out.numel() == 0) return out;
  const size_t smem = size_t(dk + kWarps * dv + 2 * kWarps) * sizeof(float);
  HYMBA_CHECK(smem <= smem_limit(), op, ": head dims dk=", dk, " dv=", dv, " need ", smem,
              " bytes of shared memory per block, more than this GPU allows");
  HYMBA_CHECK(B * Hq * Tq < (int64_t(1) << 31), op, ": too many queries (", B * Hq * Tq, ")");
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  Tensor qpos = qpos_in.to(DType::I64).contiguous(), kpos = kpos_in.to(DType::I64).contiguous();
  const float scale = scale_of(p, int(dk));
  dispatch_cuda_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    allow_smem(attn_decode_kernel<T>, smem);
    attn_decode_kernel<T><<<unsigned(B * Hq * Tq), kThreads, smem, stream()>>>(
        static_cast<const T*>(q.data_ptr()), static_cast<const T*>(k.data_ptr()),
        static_cast<const T*>(v.data_ptr()), qpos.data<int64_t>(), kpos.data<int64_t>(),
        static_cast<T*>(out.data_ptr()), Hq, Hkv, Hq / Hkv, Tq, S, int(dk), int(dv), scale, p.window, p.num_meta);
    HYMBA_CUDA_CHECK_LAUNCH(op, " B=", B, " Hq=", Hq, " Tq=", Tq, " S=", S, " dk=", dk, " dv=", dv);
  });
  return out;
}

}  // namespace hymba::kernels::cuda
