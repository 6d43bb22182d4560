// CUDA selective scan (kernels/selective_scan.h).
//
// Design: one thread per (b, d, n) state, running the recurrence sequentially over time in
// registers, in groups of G lanes (G = the power of two >= N, at most 32; a lane holds S =
// ceil(N / G) states) so that y = sum_n C h is a log2(G)-step shuffle sum inside a warp. At
// the Hymba shape that is B*D*N = 8*3200*16 = 409,600 independent threads, enough to fill a
// GPU without splitting time. This is the simple design (not Mamba's time-parallel block
// scan): every kernel could only be checked by reading when it was written, and a sequential
// recurrence leaves no cross-thread state to get wrong.
//
// A block holds kThreads / G consecutive channels d of one batch row b. chunk_states has the
// CPU layout (B, D, ceil(L/chunk), N), in fp32 (f64 for f64 inputs, bf16 inputs included):
// it only travels from this forward to this backward.
//
// Backward runs one launch per chunk, last chunk first. Each launch recomputes its chunk's
// states from the saved chunk-start state into a per-thread buffer (shared memory when it
// fits, else global scratch), then walks the chunk backwards carrying dh (kept in global
// memory between launches). Reductions, all deterministic (fixed order, no atomics):
//   dB, dC (sum over d): per step, a shuffle sum over the channels of a warp, then the warps
//     of the block in order through shared memory, into a per-block partial; a second kernel
//     per chunk adds the blocks' partials in block order;
//   dA, dD, ddelta_bias (sum over b): per (b, d) accumulators in f64, chunk after chunk by the
//     same thread; a final kernel adds them over b in order.
#include "kernels/selective_scan.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/selective_scan_blocked.h"
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

constexpr int kThreads = 128;             // per block; a multiple of 32
constexpr int kWarps = kThreads / 32;
constexpr int kMaxS = 4;                  // states per lane: N <= 32 * kMaxS
constexpr size_t kSmemLimit = 48 * 1024;  // without opting in to more dynamic shared memory

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }

template <typename A> __device__ __forceinline__ A softplus(A v) { return v > A(20) ? v : log1p_(exp_(v)); }
template <typename A> __device__ __forceinline__ A softplus_grad(A v) {
  return v > A(20) ? A(1) : A(1) / (A(1) + exp_(-v));
}
template <typename A> __device__ __forceinline__ A sigmoid(A v) { return A(1) / (A(1) + exp_(-v)); }

// Sum over the G lanes of a group (G a power of two <= 32, groups aligned in the warp). The
// xor butterfly leaves the same bits in every lane. Call from all 32 lanes.
template <typename A> __device__ __forceinline__ A group_sum(A v, int G) {
  for (int o = G >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the groups of a warp, lane by lane (lane l gets the sum of lane l % G of every group).
template <typename A> __device__ __forceinline__ A rows_sum(A v, int G) {
  for (int o = G; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// How threads map onto (b, d, n).
struct Geometry {
  int G = 1;            // lanes per channel
  int S = 1;            // states per lane
  int rows = 0;         // channels per block
  int64_t dblocks = 0;  // blocks per batch row
};

Geometry geometry(int64_t D, int64_t N) {
  Geometry g;
  while (g.G < N && g.G < 32) g.G *= 2;
  g.S = int(ceil_div(N, g.G));
  g.rows = kThreads / g.G;
  g.dblocks = ceil_div(D, g.rows);
  return g;
}

template <typename T> struct ScanArgs {
  using Acc = acc_t<T>;
  const T *u, *delta, *A, *B, *C, *D, *z, *bias;
  int64_t Bn, Dn, L, N, chunk, nc;
  Geometry g;
  bool softplus;
};

// Where this thread sits: row r = b * D + d (clamped to a real channel for loads when the
// block runs past D; such a thread stores nothing and contributes zeros).
struct ThreadPos {
  int lane;
  int64_t b, blk, d, r;
  bool active;
};

__device__ __forceinline__ ThreadPos thread_pos(int64_t Dn, const Geometry& g) {
  ThreadPos p;
  p.lane = int(threadIdx.x) % g.G;
  p.b = int64_t(blockIdx.x) / g.dblocks;
  p.blk = int64_t(blockIdx.x) % g.dblocks;
  const int64_t d = p.blk * g.rows + int(threadIdx.x) / g.G;
  p.active = d < Dn;
  p.d = p.active ? d : Dn - 1;
  p.r = p.b * Dn + p.d;
  return p;
}

template <typename T>
__device__ __forceinline__ acc_t<T> delta_at(const ScanArgs<T>& a, int64_t idx, acc_t<T> bias, acc_t<T>* v_out) {
  using Acc = acc_t<T>;
  const Acc v = load_acc(a.delta[idx]) + bias;
  *v_out = v;
  return a.softplus ? softplus(v) : v;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) scan_forward_kernel(ScanArgs<T> a, T* __restrict__ out,
                                                                T* __restrict__ last, acc_t<T>* __restrict__ states) {
  using Acc = acc_t<T>;
  const Geometry& g = a.g;
  const ThreadPos p = thread_pos(a.Dn, g);
  const int64_t L = a.L, N = a.N, row = p.r * L;
  const T* Bb = a.B + p.b * N * L;
  const T* Cb = a.C + p.b * N * L;
  const Acc Dd = a.D ? load_acc(a.D[p.d]) : Acc(0), bd = a.bias ? load_acc(a.bias[p.d]) : Acc(0);
  Acc An[kMaxS], h[kMaxS];
  bool valid[kMaxS];
#pragma unroll
  for (int s = 0; s < kMaxS; ++s) {
    const int64_t n = p.lane + int64_t(s) * g.G;
    valid[s] = s < g.S && n < N;
    An[s] = valid[s] ? load_acc(a.A[p.d * N + n]) : Acc(0);
    h[s] = 0;
  }
  for (int64_t t = 0; t < L; ++t) {
    Acc v;
    const Acc dt = delta_at(a, row + t, bd, &v);
    const Acc ut = load_acc(a.u[row + t]), dtu = dt * ut;
    Acc yp = 0;
#pragma unroll
    for (int s = 0; s < kMaxS; ++s) {
      if (s < g.S) {
        const int64_t n = p.lane + int64_t(s) * g.G;
        const Acc Bv = valid[s] ? load_acc(Bb[n * L + t]) : Acc(0);
        const Acc Cv = valid[s] ? load_acc(Cb[n * L + t]) : Acc(0);
        h[s] = exp_(dt * An[s]) * h[s] + dtu * Bv;
        yp += Cv * h[s];
      }
    }
    Acc y = group_sum(yp, g.G) + Dd * ut;
    if (a.z) {
      const Acc zt = load_acc(a.z[row + t]);
      y *= zt * sigmoid(zt);
    }
    if (p.active && p.lane == 0) out[row + t] = store_acc<T>(y);
    if ((t + 1) % a.chunk == 0 || t == L - 1) {
#pragma unroll
      for (int s = 0; s < kMaxS; ++s)
        if (valid[s] && p.active) states[(p.r * a.nc + t / a.chunk) * N + p.lane + int64_t(s) * g.G] = h[s];
    }
  }
#pragma unroll
  for (int s = 0; s < kMaxS; ++s)
    if (valid[s] && p.active) last[p.r * N + p.lane + int64_t(s) * g.G] = store_acc<T>(h[s]);
}

// One generation step: the forward's inner loop once, the state read from and written back
// to `state` (B, D, N) in the tensor's dtype.
template <typename T>
__global__ void __launch_bounds__(kThreads) scan_step_kernel(ScanArgs<T> a, T* __restrict__ state,
                                                             T* __restrict__ out) {
  using Acc = acc_t<T>;
  const Geometry& g = a.g;
  const ThreadPos p = thread_pos(a.Dn, g);
  const int64_t N = a.N;
  const Acc Dd = a.D ? load_acc(a.D[p.d]) : Acc(0), bd = a.bias ? load_acc(a.bias[p.d]) : Acc(0);
  Acc v;
  const Acc dt = delta_at(a, p.r, bd, &v);
  const Acc ut = load_acc(a.u[p.r]), dtu = dt * ut;
  Acc yp = 0;
#pragma unroll
  for (int s = 0; s < kMaxS; ++s) {
    const int64_t n = p.lane + int64_t(s) * g.G;
    // Only active threads touch the state: a clamped thread would race with its owner.
    if (s < g.S && n < N && p.active) {
      const Acc h = exp_(dt * load_acc(a.A[p.d * N + n])) * load_acc(state[p.r * N + n]) +
                    dtu * load_acc(a.B[p.b * N + n]);
      yp += load_acc(a.C[p.b * N + n]) * h;
      state[p.r * N + n] = store_acc<T>(h);
    }
  }
  Acc y = group_sum(yp, g.G) + Dd * ut;
  if (a.z) {
    const Acc zt = load_acc(a.z[p.r]);
    y *= zt * sigmoid(zt);
  }
  if (p.active && p.lane == 0) out[p.r] = store_acc<T>(y);
}

template <typename T> struct BackwardBuffers {
  using Acc = acc_t<T>;
  const T* dout;
  const Acc* states;  // (B, D, nc, N) from the forward
  T *du, *ddelta, *dz;
  Acc* carry;            // (B, D, N): dh at the start of the chunk after this one
  Acc* hscratch;         // global per-thread state buffer, when shared memory is too small
  Acc *part_dB, *part_dC;  // (B, dblocks, N, cap): per-block sums over the block's channels
  double *row_dA, *row_dD, *row_db;  // (B, D, N), (B, D), (B, D)
  int64_t cap;           // steps per chunk buffer: min(chunk, L)
};

// Backward over chunk c. Dynamic shared memory: the dB/dC exchange buffer, 2 (double
// buffered by step parity) x kWarps x 2 x S*G, then (when it fits) the state buffer.
template <typename T>
__global__ void __launch_bounds__(kThreads) scan_backward_chunk_kernel(ScanArgs<T> a, BackwardBuffers<T> w,
                                                                       int64_t c, bool states_in_smem) {
  using Acc = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Geometry& g = a.g;
  const ThreadPos p = thread_pos(a.Dn, g);
  const int64_t L = a.L, N = a.N, row = p.r * L, SG = int64_t(g.S) * g.G;
  const int tid = int(threadIdx.x), warp = tid >> 5, wlane = tid & 31;
  Acc* xchg = reinterpret_cast<Acc*>(smem_raw);
  // Thread tid's state after step i, slot s, is hbuf[(i * S + s) * kThreads + tid]; only this
  // thread reads it back, so it needs no synchronization.
  Acc* hbuf = states_in_smem ? xchg + 2 * kWarps * 2 * SG
                             : w.hscratch + int64_t(blockIdx.x) * w.cap * g.S * kThreads;

  const T* Bb = a.B + p.b * N * L;
  const T* Cb = a.C + p.b * N * L;
  const Acc Dd = a.D ? load_acc(a.D[p.d]) : Acc(0), bd = a.bias ? load_acc(a.bias[p.d]) : Acc(0);
  const int64_t t0 = c * a.chunk, len = (t0 + a.chunk < L ? t0 + a.chunk : L) - t0;
  const bool last_chunk = c == a.nc - 1;

  Acc An[kMaxS], h0[kMaxS], dh[kMaxS], dA_c[kMaxS];
  bool valid[kMaxS];
#pragma unroll
  for (int s = 0; s < kMaxS; ++s) {
    const int64_t n = p.lane + int64_t(s) * g.G;
    valid[s] = s < g.S && n < N && p.active;
    An[s] = valid[s] ? load_acc(a.A[p.d * N + n]) : Acc(0);
    h0[s] = (valid[s] && c > 0) ? w.states[(p.r * a.nc + c - 1) * N + n] : Acc(0);
    dh[s] = (valid[s] && !last_chunk) ? w.carry[p.r * N + n] : Acc(0);
    dA_c[s] = 0;
  }

  // Recompute the chunk's states (the same arithmetic as the forward).
  {
    Acc h[kMaxS];
#pragma unroll
    for (int s = 0; s < kMaxS; ++s) h[s] = h0[s];
    for (int64_t i = 0; i < len; ++i) {
      const int64_t t = t0 + i;
      Acc v;
      const Acc dt = delta_at(a, row + t, bd, &v);
      const Acc dtu = dt * load_acc(a.u[row + t]);
#pragma unroll
      for (int s = 0; s < kMaxS; ++s) {
        if (s < g.S) {
          const int64_t n = p.lane + int64_t(s) * g.G;
          const Acc Bv = valid[s] ? load_acc(Bb[n * L + t]) : Acc(0);
          h[s] = exp_(dt * An[s]) * h[s] + dtu * Bv;
          hbuf[(i * g.S + s) * kThreads + tid] = h[s];
        }
      }
    }
  }

  Acc dD_c = 0, db_c = 0;
  Acc* part_dB = w.part_dB + (p.b * g.dblocks + p.blk) * N * w.cap;
  Acc* part_dC = w.part_dC + (p.b * g.dblocks + p.blk) * N * w.cap;
  for (int64_t i = len - 1; i >= 0; --i) {
    const int64_t t = t0 + i;
    Acc v;
    const Acc dt = delta_at(a, row + t, bd, &v);
    const Acc ut = load_acc(a.u[row + t]), dtu = dt * ut;
    Acc Bv[kMaxS], Cv[kMaxS], hc[kMaxS], hp[kMaxS];
#pragma unroll
    for (int s = 0; s < kMaxS; ++s) {
      Bv[s] = Cv[s] = hc[s] = hp[s] = 0;
      if (s < g.S) {
        const int64_t n = p.lane + int64_t(s) * g.G;
        Bv[s] = valid[s] ? load_acc(Bb[n * L + t]) : Acc(0);
        Cv[s] = valid[s] ? load_acc(Cb[n * L + t]) : Acc(0);
        hc[s] = hbuf[(i * g.S + s) * kThreads + tid];
        hp[s] = i > 0 ? hbuf[((i - 1) * g.S + s) * kThreads + tid] : h0[s];
      }
    }
    Acc dy = p.active ? load_acc(w.dout[row + t]) : Acc(0);
    if (a.z) {
      Acc yp = 0;
#pragma unroll
      for (int s = 0; s < kMaxS; ++s) yp += Cv[s] * hc[s];
      const Acc y = group_sum(yp, g.G) + Dd * ut;
      const Acc zt = load_acc(a.z[row + t]), sz = sigmoid(zt);
      if (p.active && p.lane == 0) w.dz[row + t] = store_acc<T>(dy * y * sz * (Acc(1) + zt * (Acc(1) - sz)));
      dy *= zt * sz;
    }
    dD_c += dy * ut;
    Acc ddt_p = 0, dub_p = 0, cB[kMaxS], cC[kMaxS];
#pragma unroll
    for (int s = 0; s < kMaxS; ++s) {
      const Acc ea = exp_(dt * An[s]);
      const Acc gn = dh[s] + dy * Cv[s];  // total gradient of h_t
      const Acc ahp = ea * hp[s];
      ddt_p += gn * (An[s] * ahp + Bv[s] * ut);
      dA_c[s] += gn * dt * ahp;
      dub_p += gn * Bv[s];
      dh[s] = gn * ea;
      cB[s] = valid[s] ? gn * dtu : Acc(0);
      cC[s] = valid[s] ? dy * hc[s] : Acc(0);
    }
    const Acc ddt = group_sum(ddt_p, g.G), dub = group_sum(dub_p, g.G);
    const Acc dv = a.softplus ? ddt * softplus_grad(v) : ddt;
    if (p.active && p.lane == 0) {
      w.du[row + t] = store_acc<T>(dy * Dd + dt * dub);
      w.ddelta[row + t] = store_acc<T>(dv);
    }
    db_c += dv;

    // dB, dC over the block's channels: warp shuffles, then the warps in order.
    const int par = int(i & 1);
#pragma unroll
    for (int s = 0; s < kMaxS; ++s) {
      if (s < g.S) {
        const Acc sb = rows_sum(cB[s], g.G), sc = rows_sum(cC[s], g.G);
        if (wlane < g.G) {
          xchg[((par * kWarps + warp) * 2 + 0) * SG + s * g.G + wlane] = sb;
          xchg[((par * kWarps + warp) * 2 + 1) * SG + s * g.G + wlane] = sc;
        }
      }
    }
    // The buffer of parity par is rewritten two steps later, after the next step's barrier,
    // which every reader of this step passes only after reading.
    __syncthreads();
    for (int64_t j = tid; j < 2 * N; j += kThreads) {
      const int which = int(j / N);
      const int64_t n = j % N;
      Acc sum = 0;
      for (int wp = 0; wp < kWarps; ++wp) sum += xchg[((par * kWarps + wp) * 2 + which) * SG + n];
      (which == 0 ? part_dB : part_dC)[n * w.cap + i] = sum;
    }
  }

#pragma unroll
  for (int s = 0; s < kMaxS; ++s) {
    if (valid[s]) {
      const int64_t n = p.lane + int64_t(s) * g.G;
      w.carry[p.r * N + n] = dh[s];
      w.row_dA[p.r * N + n] += double(dA_c[s]);
    }
  }
  if (p.active && p.lane == 0) {
    w.row_dD[p.r] += double(dD_c);
    w.row_db[p.r] += double(db_c);
  }
}

// dB[b, n, t0 + i] = sum over the blocks of b, in block order, of their partials.
template <typename T>
__global__ void scan_reduce_dBdC_kernel(const acc_t<T>* __restrict__ part_dB, const acc_t<T>* __restrict__ part_dC,
                                        T* __restrict__ dB, T* __restrict__ dC, int64_t Bn, int64_t N, int64_t L,
                                        int64_t dblocks, int64_t cap, int64_t t0, int64_t len) {
  using Acc = acc_t<T>;
  const int64_t total = Bn * N * len;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % len, bn = idx / len, b = bn / N, n = bn % N;
    Acc sB = 0, sC = 0;
    for (int64_t k = 0; k < dblocks; ++k) {
      const int64_t at = ((b * dblocks + k) * N + n) * cap + i;
      sB += part_dB[at];
      sC += part_dC[at];
    }
    dB[bn * L + t0 + i] = store_acc<T>(sB);
    dC[bn * L + t0 + i] = store_acc<T>(sC);
  }
}


using scan_check::ScanDims;
using scan_check::expect_like;
using scan_check::expect_shape;

bool cuda_scan_dtype(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

// The shared checks, with bf16 allowed and N bounded by the thread mapping.
ScanDims check_inputs(const char* op, bool seq, const Tensor& u, const Tensor& delta, const Tensor& A,
                      const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias) {
  if (u.defined()) check_cuda_tensor(op, "u", u);
  const ScanDims dm = scan_check::check_inputs(op, seq, u, delta, A, B, C, D, z, delta_bias, cuda_scan_dtype,
                                               "on CUDA, expected f32, f64 or bf16");
  HYMBA_CHECK(dm.N >= 1 && dm.N <= 32 * kMaxS, op, ": the CUDA scan supports state sizes N in [1, ", 32 * kMaxS,
              "], got A ", shape_str(A.shape()));
  return dm;
}

using scan_detail::ptr_or_null;

DType acc_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// The inputs, made contiguous; they must outlive the launches that read them.
struct Inputs : scan_detail::ContiguousInputs {
  using ContiguousInputs::ContiguousInputs;
  template <typename T> ScanArgs<T> args(const ScanDims& dm, int64_t chunk, int64_t nc, bool softplus) const {
    ScanArgs<T> a;
    a.u = ptr_of<const T>(u);
    a.delta = ptr_of<const T>(delta);
    a.A = ptr_of<const T>(A);
    a.B = ptr_of<const T>(B);
    a.C = ptr_of<const T>(C);
    a.D = ptr_or_null<const T>(D);
    a.z = ptr_or_null<const T>(z);
    a.bias = ptr_or_null<const T>(bias);
    a.Bn = dm.B;
    a.Dn = dm.D;
    a.L = dm.L;
    a.N = dm.N;
    a.chunk = chunk;
    a.nc = nc;
    a.g = geometry(dm.D, dm.N);
    a.softplus = softplus;
    return a;
  }
};

unsigned blocks_for(const ScanDims& dm, const Geometry& g) {
  const int64_t n = dm.B * g.dblocks;
  HYMBA_CHECK(n <= int64_t(INT32_MAX), "selective_scan: ", dm.B, " x ", dm.D, " channels need too many blocks");
  return unsigned(n);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> selective_scan_forward(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                                                          const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                                                          const Tensor& z_in, const Tensor& bias_in,
                                                          bool delta_softplus, int64_t chunk) {
  const char* op = "selective_scan";
  const ScanDims dm = check_inputs(op, true, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  HYMBA_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  ::hymba::cuda::DeviceGuard guard(u_in.device().index);
  if (scan_impl() == ScanImpl::Blocked && scan_blocked::supports(u_in.dtype(), dm.N, chunk))
    return scan_blocked::forward(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus, chunk);
  const int64_t nc = ceil_div(dm.L, chunk);
  const TensorOptions opts(u_in.dtype(), u_in.device());
  Tensor out = empty({dm.B, dm.D, dm.L}, opts);
  Tensor last = empty({dm.B, dm.D, dm.N}, opts);
  Tensor states = empty({dm.B, dm.D, nc, dm.N}, TensorOptions(acc_dtype(u_in.dtype()), u_in.device()));
  if (dm.B * dm.D == 0) return {out, last, states};
  const Inputs in(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  dispatch_f32_f64_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const ScanArgs<T> a = in.args<T>(dm, chunk, nc, delta_softplus);
    scan_forward_kernel<T><<<blocks_for(dm, a.g), kThreads, 0, stream()>>>(a, ptr_of<T>(out), ptr_of<T>(last),
                                                                           ptr_of<acc_t<T>>(states));
    HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()));
  });
  return {out, last, states};
}

SelectiveScanGrads selective_scan_backward(const Tensor& dout_in, const Tensor& u_in, const Tensor& delta_in,
                                           const Tensor& A_in, const Tensor& B_in, const Tensor& C_in,
                                           const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                                           bool delta_softplus, const Tensor& states_in, int64_t chunk) {
  const char* op = "selective_scan_backward";
  const ScanDims dm = check_inputs(op, true, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  const int64_t nc = scan_check::check_backward(op, dm, dout_in, states_in, chunk, u_in, A_in);
  HYMBA_CHECK(states_in.dtype() == acc_dtype(u_in.dtype()) && states_in.device() == u_in.device(), op,
              ": chunk_states ", states_in.meta_str(), " is not what the CUDA forward saves for u ", u_in.meta_str());
  ::hymba::cuda::DeviceGuard guard(u_in.device().index);
  if (scan_impl() == ScanImpl::Blocked && scan_blocked::supports(u_in.dtype(), dm.N, chunk))
    return scan_blocked::backward(dout_in, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus,
                                  states_in, chunk);

  const TensorOptions opts(u_in.dtype(), u_in.device());
  const int64_t Bn = dm.B, Dn = dm.D, L = dm.L, N = dm.N;
  SelectiveScanGrads gr;
  gr.du = empty({Bn, Dn, L}, opts);
  gr.ddelta = empty({Bn, Dn, L}, opts);
  gr.dA = empty({Dn, N}, opts);
  gr.dB = empty({Bn, N, L}, opts);
  gr.dC = empty({Bn, N, L}, opts);
  if (D_in.defined()) gr.dD = empty({Dn}, opts);
  if (z_in.defined()) gr.dz = empty({Bn, Dn, L}, opts);
  if (bias_in.defined()) gr.ddelta_bias = empty({Dn}, opts);

  const Inputs in(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  const Tensor dout = dout_in.contiguous(), states = states_in.contiguous();
  const TensorOptions f64(DType::F64, u_in.device());
  // Zero-initialized: every chunk adds to them, and with L = 0 or B = 0 they are the result.
  Tensor row_dA = zeros({Bn, Dn, N}, f64), row_dD = zeros({Bn, Dn}, f64), row_db = zeros({Bn, Dn}, f64);

  dispatch_f32_f64_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    const ScanArgs<T> a = in.args<T>(dm, chunk, nc, delta_softplus);
    const Geometry& g = a.g;
    if (Bn * Dn > 0 && L > 0) {
      const int64_t cap = std::min(chunk, L);
      const TensorOptions acc_opts(acc_dtype(u_in.dtype()), u_in.device());
      const unsigned nblocks = blocks_for(dm, g);
      const size_t xchg_bytes = size_t(2 * kWarps * 2) * size_t(g.S * g.G) * sizeof(Acc);
      const size_t hbuf_bytes = size_t(cap) * size_t(g.S) * kThreads * sizeof(Acc);
      const bool in_smem = xchg_bytes + hbuf_bytes <= kSmemLimit;
      Tensor hscratch, carry = empty({Bn, Dn, N}, acc_opts);
      if (!in_smem) hscratch = empty({int64_t(nblocks) * cap * g.S * kThreads}, acc_opts);
      Tensor part_dB = empty({Bn, g.dblocks, N, cap}, acc_opts), part_dC = empty({Bn, g.dblocks, N, cap}, acc_opts);
      BackwardBuffers<T> w;
      w.dout = ptr_of<const T>(dout);
      w.states = ptr_of<const Acc>(states);
      w.du = ptr_of<T>(gr.du);
      w.ddelta = ptr_of<T>(gr.ddelta);
      w.dz = ptr_or_null<T>(gr.dz);
      w.carry = ptr_of<Acc>(carry);
      w.hscratch = in_smem ? nullptr : ptr_of<Acc>(hscratch);
      w.part_dB = ptr_of<Acc>(part_dB);
      w.part_dC = ptr_of<Acc>(part_dC);
      w.row_dA = ptr_of<double>(row_dA);
      w.row_dD = ptr_of<double>(row_dD);
      w.row_db = ptr_of<double>(row_db);
      w.cap = cap;
      const size_t smem = xchg_bytes + (in_smem ? hbuf_bytes : 0);
      for (int64_t c = nc - 1; c >= 0; --c) {
        scan_backward_chunk_kernel<T><<<nblocks, kThreads, smem, stream()>>>(a, w, c, in_smem);
        HYMBA_CUDA_CHECK_LAUNCH(op, " chunk ", c, " of ", nc, ", u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()));
        const int64_t t0 = c * chunk, len = std::min(L, t0 + chunk) - t0;
        scan_reduce_dBdC_kernel<T><<<grid_for(Bn * N * len, 256), 256, 0, stream()>>>(
            w.part_dB, w.part_dC, ptr_of<T>(gr.dB), ptr_of<T>(gr.dC), Bn, N, L, g.dblocks, cap, t0, len);
        HYMBA_CUDA_CHECK_LAUNCH(op, " dB/dC reduction, chunk ", c);
      }
    }
    if (Dn == 0) {  // no channels: dB and dC are empty sums
      gr.dB.zero_();
      gr.dC.zero_();
    }
  });
  scan_detail::reduce_param_grads(row_dA, row_dD, row_db, gr, op);
  return gr;
}

Tensor selective_scan_step(const Tensor& state, const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                           const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                           const Tensor& bias_in, bool delta_softplus) {
  const char* op = "selective_scan_step";
  const ScanDims dm = check_inputs(op, false, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  HYMBA_CHECK(state.defined(), op, ": state is undefined");
  expect_shape(op, "state", state, {dm.B, dm.D, dm.N}, u_in, A_in);
  expect_like(op, "state", state, u_in);
  HYMBA_CHECK(state.is_contiguous(), op, ": state must be contiguous, got strides ", shape_str(state.strides()));
  ::hymba::cuda::DeviceGuard guard(u_in.device().index);
  Tensor out = empty({dm.B, dm.D}, TensorOptions(u_in.dtype(), u_in.device()));
  if (dm.B * dm.D == 0) return out;
  const Inputs in(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  dispatch_f32_f64_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const ScanArgs<T> a = in.args<T>(dm, 1, 1, delta_softplus);
    scan_step_kernel<T><<<blocks_for(dm, a.g), kThreads, 0, stream()>>>(a, ptr_of<T>(state), ptr_of<T>(out));
    HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()));
  });
  return out;
}

}  // namespace hymba::kernels::cuda

namespace hymba::kernels::cuda::scan_detail {
namespace {

// dA[d, n], dD[d], ddelta_bias[d]: the per-(b, d) sums added over b in order.
template <typename T>
__global__ void reduce_params_kernel(const double* __restrict__ row_dA, const double* __restrict__ row_dD,
                                          const double* __restrict__ row_db, T* __restrict__ dA, T* __restrict__ dD,
                                          T* __restrict__ db, int64_t Bn, int64_t Dn, int64_t N) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < Dn * N;
       idx += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t b = 0; b < Bn; ++b) s += row_dA[b * Dn * N + idx];
    dA[idx] = store_acc<T>(acc_t<T>(s));
    if (idx % N == 0) {
      const int64_t d = idx / N;
      double sD = 0, sb = 0;
      for (int64_t b = 0; b < Bn; ++b) {
        sD += row_dD[b * Dn + d];
        sb += row_db[b * Dn + d];
      }
      if (dD) dD[d] = store_acc<T>(acc_t<T>(sD));
      if (db) db[d] = store_acc<T>(acc_t<T>(sb));
    }
  }
}

}  // namespace

void reduce_param_grads(const Tensor& part_dA, const Tensor& part_dD, const Tensor& part_db, SelectiveScanGrads& gr,
                        const char* op) {
  const int64_t Dn = gr.dA.size(0), N = gr.dA.size(1), Bn = part_dA.size(0);
  if (Dn * N == 0) return;
  dispatch_f32_f64_bf16(gr.dA.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    reduce_params_kernel<T><<<grid_for(Dn * N, 256), 256, 0, stream()>>>(
        ptr_of<const double>(part_dA), ptr_of<const double>(part_dD), ptr_of<const double>(part_db),
        ptr_of<T>(gr.dA), ptr_or_null<T>(gr.dD), ptr_or_null<T>(gr.ddelta_bias), Bn, Dn, N);
    HYMBA_CUDA_CHECK_LAUNCH(op, " parameter gradient reduction");
  });
}

}  // namespace hymba::kernels::cuda::scan_detail
