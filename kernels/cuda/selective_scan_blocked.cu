// The blocked CUDA selective scan (kernels/cuda/selective_scan_blocked.h): Mamba's design, a
// block per (b, d) channel and a parallel scan over time.
//
// A block of `threads` threads (32, 64 or 128) walks the sequence in time chunks of
// threads * kItems steps (kItems = 16 forward, 8 backward), chunk after chunk; thread k holds
// steps [k * kItems, (k + 1) * kItems) of the chunk in registers (inputs loaded once per
// chunk, as 16-byte vectors where aligned). The recurrence h_t = a_t h_{t-1} + b_t is the
// composition of the affine maps h -> a_t h + b_t, an associative operation on pairs,
// (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2). Per state n each thread composes its own
// items, the block scans those per-thread maps (warp shuffles, then the warps through shared
// memory), and each thread walks its items again from the state its prefix gives. The map of
// the whole chunk carries the state into the next chunk.
//
// The thread count is picked per call: the one whose chunk pads L the least (ties: more
// threads), among those whose chunk is a multiple of the save interval `chunk`, so that every
// time chunk starts right after a saved state. At the Hymba shape (L = 2176) the forward
// runs 32 threads and 5 chunks of 512 steps (2560 padded steps, instead of 2 chunks of 2048:
// 4096), the backward 32 threads and 9 chunks of 256 (2304).
//
// Backward, per time chunk in reverse and per state n:
//   - the gradient flowing into h_{t-1}, e_t = a_t (C_t dy_t + e_{t+1}), is another affine
//     recurrence (run backwards in time), with per-step maps e -> a_t e + a_t C_t dy_t that
//     need nothing from neighbouring steps; a reverse block scan gives each thread the e
//     entering its last item, and the chunk's map carries e into the previous chunk (the
//     sequential kernel's `dh` carry);
//   - a forward block scan recomputes the states from the saved state before the chunk;
//   - a walk forward over the items then has h_{t-1}, h_t and g_t = C_t dy_t + e_{t+1}
//     together, and accumulates every gradient term with the sequential kernel's arithmetic.
// Reductions: du, ddelta, dz per step in registers; dA[d, n], dD[d], ddelta_bias[d] per (b, d)
// in fixed order (warps in order, chunks in order, in double across chunks), then summed over
// b in order by a second kernel, so they are deterministic; dB, dC are summed over the
// channels with fp32 atomics (after a shared-memory transpose so that a warp's atomics hit
// consecutive addresses), so their last bits may vary from run to run.
//
// Shared-memory hazards: every buffer is written before one barrier and read after it; the
// comment at each buffer names the barrier that separates those reads from the next write.
#include "kernels/cuda/selective_scan_blocked.h"

#include <initializer_list>

#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda::scan_blocked {
namespace {

// Consecutive steps per thread. The backward keeps six per-step arrays across the states and
// four more per state: at 16 steps it needs over 255 registers (ptxas spills), at 8 it takes
// about 164, and __launch_bounds__(128, 3) caps it at 170 (3 blocks of 128 threads per SM);
// the forward takes 128 (f32) and 156 (bf16) registers at 16 steps (sm_90, CUDA 13).
constexpr int kFwdItems = 16;
constexpr int kBwdItems = 8;
constexpr int kMaxThreads = 128;  // a multiple of 32
constexpr int kMaxWarps = kMaxThreads / 32;
// `chunk` must divide a time chunk of 128 threads (2048 steps forward, 1024 backward), so
// that 128 threads are always a candidate.
constexpr int64_t kMaxChunkT = kMaxThreads * kBwdItems;
// Dynamic shared memory is 12 N bytes plus the backward's exchange buffers (9 KiB at 128
// threads); this keeps it under the 48 KiB that needs no opt-in, with room to spare.
constexpr int64_t kMaxN = 1024;
constexpr unsigned kFull = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// The affine map h -> a h + b.
struct Pair {
  float a, b;
};
// x first, then y.
__device__ __forceinline__ Pair compose(Pair x, Pair y) { return {x.a * y.a, y.a * x.b + y.b}; }

// Exclusive scan of the threads' maps in thread order (thread 0 first). Returns the
// composition of the maps of the threads before this one (identity for thread 0) and, in
// *total, that of all threads. `tot` (kMaxWarps pairs) is written before the barrier inside
// and read after it, until the caller's next barrier.
__device__ __forceinline__ Pair block_scan_forward(Pair p, Pair* tot, Pair* total) {
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, nwarps = int(blockDim.x) >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float a = __shfl_up_sync(kFull, p.a, o), b = __shfl_up_sync(kFull, p.b, o);
    if (lane >= o) p = compose({a, b}, p);
  }
  Pair ex{__shfl_up_sync(kFull, p.a, 1), __shfl_up_sync(kFull, p.b, 1)};
  if (lane == 0) ex = {1.f, 0.f};
  if (lane == 31) tot[warp] = p;
  __syncthreads();
  Pair before{1.f, 0.f}, all{1.f, 0.f};
  for (int w = 0; w < nwarps; ++w) {
    if (w == warp) before = all;
    all = compose(all, tot[w]);
  }
  *total = all;
  return compose(before, ex);
}

// The same in reverse thread order (the last thread first): returns the composition of the
// maps of the threads after this one, later threads applied first.
__device__ __forceinline__ Pair block_scan_reverse(Pair p, Pair* tot, Pair* total) {
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, nwarps = int(blockDim.x) >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float a = __shfl_down_sync(kFull, p.a, o), b = __shfl_down_sync(kFull, p.b, o);
    if (lane + o < 32) p = compose({a, b}, p);
  }
  Pair ex{__shfl_down_sync(kFull, p.a, 1), __shfl_down_sync(kFull, p.b, 1)};
  if (lane == 31) ex = {1.f, 0.f};
  if (lane == 0) tot[warp] = p;
  __syncthreads();
  Pair after{1.f, 0.f}, all{1.f, 0.f};
  for (int w = nwarps - 1; w >= 0; --w) {
    if (w == warp) after = all;
    all = compose(all, tot[w]);
  }
  *total = all;
  return compose(after, ex);
}

__device__ __forceinline__ float softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ __forceinline__ float sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

// Items [s, s + kItems) of a row of length L into x (0 past L). `vec`: the row start is
// 16-byte aligned and L a multiple of the vector width, so a full group is whole vectors.
template <int kItems, typename T>
__device__ __forceinline__ void load_items(const T* __restrict__ row, int64_t L, int64_t s, bool vec,
                                           float (&x)[kItems]) {
  if (vec && s + kItems <= L) {
    constexpr int kN = Vec16<T>::kN;
    const Vec16<T>* p = reinterpret_cast<const Vec16<T>*>(row + s);
#pragma unroll
    for (int v = 0; v < kItems / kN; ++v) {
      const Vec16<T> w = p[v];
#pragma unroll
      for (int j = 0; j < kN; ++j) x[v * kN + j] = to_f32(w.v[j]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) x[i] = s + i < L ? to_f32(row[s + i]) : 0.f;
  }
}

// Items [s, s + kItems) of x into a row of length L (those past L dropped).
template <int kItems, typename T>
__device__ __forceinline__ void store_items(T* __restrict__ row, int64_t L, int64_t s, bool vec,
                                            const float (&x)[kItems]) {
  if (vec && s + kItems <= L) {
    constexpr int kN = Vec16<T>::kN;
    Vec16<T>* p = reinterpret_cast<Vec16<T>*>(row + s);
#pragma unroll
    for (int v = 0; v < kItems / kN; ++v) {
      Vec16<T> w;
#pragma unroll
      for (int j = 0; j < kN; ++j) w.v[j] = from_f32<T>(x[v * kN + j]);
      p[v] = w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i)
      if (s + i < L) row[s + i] = from_f32<T>(x[i]);
  }
}

template <typename T> struct Params {
  const T *u, *delta, *A, *B, *C, *D, *z, *bias, *dout;  // D, z, bias may be null
  T *out, *last;                                          // forward
  T *du, *ddelta, *dz;                                    // backward; dz null without z
  float* states;                                          // forward, (B, D, nc, N)
  const float* saved;                                     // backward: the forward's states
  float *dB, *dC;                                         // backward, (B, N, L) fp32, zeroed
  double *part_dA, *part_dD, *part_db;                    // backward, (B, D, N), (B, D), (B, D)
  int64_t Dn, L, N, chunk, nc;
  bool softplus;
  bool vec;  // every (B, D, L) and (B, N, L) row is 16-byte aligned (see load_items)
};

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) forward_kernel(Params<T> p) {
  constexpr int kItems = kFwdItems;
  // carry[n]: the state after the chunks done so far. Read by every thread before the scan
  // barrier of (chunk, n), written by thread 0 after it; the next reads follow the barrier
  // at the end of the chunk.
  extern __shared__ __align__(16) unsigned char smem[];
  float* carry = reinterpret_cast<float*>(smem);
  // Scan totals, alternating between two buffers scan after scan: a buffer is rewritten two
  // scans later, after the barrier of the scan in between, which every reader passes after
  // reading.
  __shared__ Pair tot[2][kMaxWarps];

  const int tid = int(threadIdx.x), nthreads = int(blockDim.x);
  const int64_t r = blockIdx.x, b = r / p.Dn, d = r % p.Dn, L = p.L, N = p.N, row = r * L;
  const int chunk = int(p.chunk);  // divides the time chunk (threads_for)
  const int64_t chunkT = int64_t(nthreads) * kItems;
  const float Dd = p.D ? to_f32(p.D[d]) : 0.f, bias = p.bias ? to_f32(p.bias[d]) : 0.f;
  for (int64_t n = tid; n < N; n += nthreads) carry[n] = 0.f;
  __syncthreads();
  int buf = 0;

  for (int64_t t0 = 0; t0 < L; t0 += chunkT) {
    const int w0 = tid * kItems;  // this thread's first step within the chunk
    const int64_t s = t0 + w0;
    const int64_t left = L - s;
    const int cnt = left <= 0 ? 0 : left >= kItems ? kItems : int(left);
    float u[kItems], dt[kItems], y[kItems];
    load_items(p.u + row, L, s, p.vec, u);
    load_items(p.delta + row, L, s, p.vec, dt);
    // Steps whose state is saved: ends of save intervals (t0 is a multiple of chunk) and L-1.
    unsigned save = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const float v = dt[i] + bias;
      dt[i] = i < cnt ? (p.softplus ? softplus(v) : v) : 0.f;  // 0 past L: the identity map
      y[i] = 0.f;
      if (i < cnt && ((w0 + i + 1) % chunk == 0 || s + i == L - 1)) save |= 1u << i;
    }
    const int64_t sidx0 = r * p.nc + t0 / chunk;  // chunk_states row of the chunk's first step

    for (int64_t n = 0; n < N; ++n) {
      const float A2 = to_f32(p.A[d * N + n]) * kLog2e;
      float Bv[kItems], a[kItems], bb[kItems];
      load_items(p.B + (b * N + n) * L, L, s, p.vec, Bv);
      Pair agg{1.f, 0.f};
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        a[i] = exp2f(dt[i] * A2);
        bb[i] = dt[i] * u[i] * Bv[i];
        agg = {agg.a * a[i], a[i] * agg.b + bb[i]};
      }
      const float h_in = carry[n];
      Pair total;
      const Pair pre = block_scan_forward(agg, tot[buf], &total);
      buf ^= 1;
      if (tid == 0) carry[n] = total.a * h_in + total.b;
      float Cv[kItems];
      load_items(p.C + (b * N + n) * L, L, s, p.vec, Cv);
      float h = pre.a * h_in + pre.b;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = a[i] * h + bb[i];
        y[i] += Cv[i] * h;
        if (save >> i & 1u) p.states[(sidx0 + (w0 + i) / chunk) * N + n] = h;
      }
    }

    float zz[kItems];
    if (p.z) load_items(p.z + row, L, s, p.vec, zz);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      float o = y[i] + Dd * u[i];
      if (p.z) o *= zz[i] * sigmoid(zz[i]);
      y[i] = o;
    }
    store_items(p.out + row, L, s, p.vec, y);
    __syncthreads();  // carry: the writes of this chunk before the reads of the next
  }
  __syncthreads();  // carry, when L == 0
  for (int64_t n = tid; n < N; n += nthreads) p.last[r * N + n] = from_f32<T>(carry[n]);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads, 3) backward_kernel(Params<T> p) {
  constexpr int kItems = kBwdItems;
  constexpr int kPad = kItems + 1;  // exchange row stride: no bank conflicts
  const int tid = int(threadIdx.x), nthreads = int(blockDim.x), lane = tid & 31, warp = tid >> 5,
            nwarps = nthreads >> 5;
  const int64_t r = blockIdx.x, b = r / p.Dn, d = r % p.Dn, L = p.L, N = p.N, row = r * L;
  const int chunk = int(p.chunk);
  const int64_t chunkT = int64_t(nthreads) * kItems;

  extern __shared__ __align__(16) unsigned char smem[];
  // dA_s[n]: this (b, d)'s dA, thread 0 only.
  double* dA_s = reinterpret_cast<double*>(smem);
  // ecarry[n]: e entering the current chunk from the later ones. Read by every thread before
  // barrier S1 of (chunk, n), written by thread 0 after it; read next in the previous chunk,
  // after S2 and S3 of this one.
  float* ecarry = reinterpret_cast<float*>(dA_s + N);
  // dB, dC terms of one state, thread-major (row stride kPad): written after S2, read after
  // S3; rewritten after S1 and S2 of the next state.
  float* xB = ecarry + N;
  float* xC = xB + nthreads * kPad;
  // Scan totals (rtot: S1, ftot: S2); the other barriers of a state separate their reads from
  // the next writes.
  __shared__ Pair rtot[kMaxWarps], ftot[kMaxWarps];
  // Warp partials: red[0] of dA (written before S3, read by thread 0 after it; rewritten
  // after S1, S2 of the next state), red[1], red[2] of dD and ddelta_bias (barrier S4 at the
  // end of a chunk; rewritten a chunk later).
  __shared__ float red[3][kMaxWarps];

  const float Dd = p.D ? to_f32(p.D[d]) : 0.f, bias = p.bias ? to_f32(p.bias[d]) : 0.f;
  for (int64_t n = tid; n < N; n += nthreads) {
    dA_s[n] = 0.0;
    ecarry[n] = 0.f;
  }
  __syncthreads();
  double dD_acc = 0.0, db_acc = 0.0;  // thread 0's

  const int64_t nchunks = (L + chunkT - 1) / chunkT;
  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = c * chunkT;
    const int w0 = tid * kItems;
    const int64_t s = t0 + w0;
    const int64_t left = L - s;
    const int cnt = left <= 0 ? 0 : left >= kItems ? kItems : int(left);
    // Per step, over the states: ddt (the A exp(dt A) h_{t-1} part of d out/d dt), dub
    // (sum_n g B), y (sum_n C h, for dz). dy is the output gradient through the gate.
    float u[kItems], dt[kItems], dy[kItems], y[kItems], ddt[kItems], dub[kItems];
    load_items(p.u + row, L, s, p.vec, u);
    load_items(p.delta + row, L, s, p.vec, dt);
    load_items(p.dout + row, L, s, p.vec, dy);
    if (p.z) {
      float zz[kItems];
      load_items(p.z + row, L, s, p.vec, zz);
#pragma unroll
      for (int i = 0; i < kItems; ++i) dy[i] *= zz[i] * sigmoid(zz[i]);
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const float v = dt[i] + bias;
      dt[i] = i < cnt ? (p.softplus ? softplus(v) : v) : 0.f;  // past L: u = dy = dt = 0
      y[i] = ddt[i] = dub[i] = 0.f;
    }
    // The saved state before the chunk: t0 is a multiple of chunk.
    const float* h_saved = c > 0 ? p.saved + (r * p.nc + t0 / chunk - 1) * N : nullptr;

    for (int64_t n = 0; n < N; ++n) {
      const float An = to_f32(p.A[d * N + n]), A2 = An * kLog2e;
      float a[kItems], Cv[kItems], g[kItems];
      load_items(p.C + (b * N + n) * L, L, s, p.vec, Cv);
      Pair ragg{1.f, 0.f};
#pragma unroll
      for (int i = 0; i < kItems; ++i) a[i] = exp2f(dt[i] * A2);
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) ragg = {ragg.a * a[i], a[i] * (ragg.b + Cv[i] * dy[i])};
      const float e_in = ecarry[n];
      Pair rtotal;
      const Pair rpre = block_scan_reverse(ragg, rtot, &rtotal);  // S1
      if (tid == 0) ecarry[n] = rtotal.a * e_in + rtotal.b;
      // g = dL/dh_t: this step's output term plus what flows back from step t + 1.
      float e = rpre.a * e_in + rpre.b;
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        g[i] = Cv[i] * dy[i] + e;
        e = a[i] * g[i];
      }

      float Bv[kItems];
      load_items(p.B + (b * N + n) * L, L, s, p.vec, Bv);
      Pair fagg{1.f, 0.f};
#pragma unroll
      for (int i = 0; i < kItems; ++i) fagg = {fagg.a * a[i], a[i] * fagg.b + dt[i] * u[i] * Bv[i]};
      const float h_in = h_saved ? h_saved[n] : 0.f;
      Pair ftotal;
      const Pair fpre = block_scan_forward(fagg, ftot, &ftotal);  // S2
      float h = fpre.a * h_in + fpre.b, dA_t = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float ah = a[i] * h, dtu = dt[i] * u[i];  // ah = exp(dt A) h_{t-1}
        h = ah + dtu * Bv[i];
        dA_t += g[i] * dt[i] * ah;
        ddt[i] += g[i] * An * ah;
        dub[i] += g[i] * Bv[i];
        y[i] += Cv[i] * h;
        xB[tid * kPad + i] = g[i] * dtu;
        xC[tid * kPad + i] = dy[i] * h;
      }
      dA_t = warp_sum(dA_t);
      if (lane == 0) red[0][warp] = dA_t;
      __syncthreads();  // S3
      if (tid == 0) {
        float sum = 0.f;
        for (int w = 0; w < nwarps; ++w) sum += red[0][w];
        dA_s[n] += double(sum);
      }
      // Step q of the chunk is item q % kItems of thread q / kItems; a warp's atomics cover
      // 32 consecutive steps.
      float* dBrow = p.dB + (b * N + n) * L + t0;
      float* dCrow = p.dC + (b * N + n) * L + t0;
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const int q = j * nthreads + tid;
        if (t0 + q < L) {
          const int at = (q / kItems) * kPad + q % kItems;
          atomicAdd(dBrow + q, xB[at]);
          atomicAdd(dCrow + q, xC[at]);
        }
      }
    }

    float zz[kItems], dout[kItems];
    if (p.z) {
      load_items(p.z + row, L, s, p.vec, zz);
      load_items(p.dout + row, L, s, p.vec, dout);
    }
    float dD_t = 0.f, db_t = 0.f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      // d out/d dt = sum_n g (A exp(dt A) h_{t-1} + B u); softplus'(v) = sigmoid(v) =
      // 1 - exp(-softplus(v)), taken from dt (an expm1, exact for small dt as well).
      const float dd = ddt[i] + u[i] * dub[i];
      const float dv = i < cnt ? (p.softplus ? dd * -expm1f(-dt[i]) : dd) : 0.f;
      dD_t += dy[i] * u[i];
      db_t += dv;
      if (p.z) {
        const float sz = sigmoid(zz[i]);
        zz[i] = dout[i] * (y[i] + Dd * u[i]) * sz * (1.f + zz[i] * (1.f - sz));
      }
      dub[i] = dy[i] * Dd + dt[i] * dub[i];  // du
      ddt[i] = dv;
    }
    store_items(p.du + row, L, s, p.vec, dub);
    store_items(p.ddelta + row, L, s, p.vec, ddt);
    if (p.z) store_items(p.dz + row, L, s, p.vec, zz);
    dD_t = warp_sum(dD_t);
    db_t = warp_sum(db_t);
    if (lane == 0) {
      red[1][warp] = dD_t;
      red[2][warp] = db_t;
    }
    __syncthreads();  // S4
    if (tid == 0) {
      float sD = 0.f, sb = 0.f;
      for (int w = 0; w < nwarps; ++w) {
        sD += red[1][w];
        sb += red[2][w];
      }
      dD_acc += double(sD);
      db_acc += double(sb);
    }
  }
  __syncthreads();  // dA_s
  for (int64_t n = tid; n < N; n += nthreads) p.part_dA[r * N + n] = dA_s[n];
  if (tid == 0) {
    p.part_dD[r] = dD_acc;
    p.part_db[r] = db_acc;
  }
}

// dA[d, n], dD[d], ddelta_bias[d]: the per-(b, d) sums added over b in order.
template <typename T>
__global__ void reduce_params_kernel(const double* __restrict__ part_dA, const double* __restrict__ part_dD,
                                     const double* __restrict__ part_db, T* __restrict__ dA, T* __restrict__ dD,
                                     T* __restrict__ db, int64_t Bn, int64_t Dn, int64_t N) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < Dn * N;
       idx += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t b = 0; b < Bn; ++b) s += part_dA[b * Dn * N + idx];
    dA[idx] = from_f32<T>(float(s));
    if (idx % N == 0) {
      const int64_t d = idx / N;
      double sD = 0, sb = 0;
      for (int64_t b = 0; b < Bn; ++b) {
        sD += part_dD[b * Dn + d];
        sb += part_db[b * Dn + d];
      }
      if (dD) dD[d] = from_f32<T>(float(sD));
      if (db) db[d] = from_f32<T>(float(sb));
    }
  }
}

template <typename F> void dispatch_f32_bf16(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: HYMBA_FAIL(op, ": the blocked scan takes f32 or bf16, got ", dtype_name(t));
  }
}

// The thread count whose time chunk (threads * items, a multiple of `chunk`) pads L the
// least; ties go to more threads (fewer chunks, fewer barriers).
int threads_for(int64_t L, int64_t chunk, int items) {
  int best = 0;
  int64_t best_len = 0;
  for (int t : {kMaxThreads, kMaxThreads / 2, kMaxThreads / 4}) {
    const int64_t ct = int64_t(t) * items;
    if (ct % chunk != 0) continue;
    const int64_t padded = ceil_div(L, ct) * ct;
    if (best == 0 || padded < best_len) {
      best = t;
      best_len = padded;
    }
  }
  HYMBA_CHECK(best > 0, "selective_scan (blocked): no time chunk is a multiple of chunk ", chunk);
  return best;
}

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
template <typename T> const T* cptr(const Tensor& t) { return t.defined() ? ptr_of<const T>(t) : nullptr; }
template <typename T> T* mptr(const Tensor& t) { return t.defined() ? ptr_of<T>(t) : nullptr; }

// Whether every row of the (B, X, L) tensors at these pointers starts 16-byte aligned.
template <typename T> bool rows_aligned(int64_t L, std::initializer_list<const void*> ptrs) {
  if (L % Vec16<T>::kN != 0) return false;
  for (const void* q : ptrs)
    if (q && !aligned16(q)) return false;
  return true;
}

unsigned channel_blocks(int64_t Bn, int64_t Dn) {
  HYMBA_CHECK(Bn * Dn <= int64_t(INT32_MAX), "selective_scan (blocked): ", Bn, " x ", Dn,
              " channels exceed the grid limit");
  return unsigned(Bn * Dn);
}

// The inputs, contiguous (copied only where they are not); they must outlive the launches.
struct Inputs {
  Tensor u, delta, A, B, C, D, z, bias;
  Inputs(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_, const Tensor& C_,
         const Tensor& D_, const Tensor& z_, const Tensor& bias_)
      : u(contig(u_)), delta(contig(delta_)), A(contig(A_)), B(contig(B_)), C(contig(C_)), D(contig(D_)),
        z(contig(z_)), bias(contig(bias_)) {}
  template <typename T> Params<T> params(int64_t Dn, int64_t L, int64_t N, int64_t chunk, bool softplus) const {
    Params<T> p{};
    p.u = ptr_of<const T>(u);
    p.delta = ptr_of<const T>(delta);
    p.A = ptr_of<const T>(A);
    p.B = ptr_of<const T>(B);
    p.C = ptr_of<const T>(C);
    p.D = cptr<T>(D);
    p.z = cptr<T>(z);
    p.bias = cptr<T>(bias);
    p.Dn = Dn;
    p.L = L;
    p.N = N;
    p.chunk = chunk;
    p.nc = ceil_div(L, chunk);
    p.softplus = softplus;
    return p;
  }
};

}  // namespace

bool supports(DType dt, int64_t N, int64_t chunk) {
  return (dt == DType::F32 || dt == DType::BF16) && N >= 1 && N <= kMaxN && chunk >= 1 && kMaxChunkT % chunk == 0;
}

std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                                           const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                                           const Tensor& z_in, const Tensor& bias_in, bool delta_softplus,
                                           int64_t chunk) {
  const char* op = "selective_scan (blocked)";
  const int64_t Bn = u_in.size(0), Dn = u_in.size(1), L = u_in.size(2), N = A_in.size(1);
  HYMBA_CHECK(supports(u_in.dtype(), N, chunk), op, ": called for u ", u_in.meta_str(), ", N ", N, ", chunk ", chunk,
              ", which it does not support");
  const int64_t nc = ceil_div(L, chunk);
  const TensorOptions opts(u_in.dtype(), u_in.device());
  Tensor out = empty({Bn, Dn, L}, opts);
  Tensor last = empty({Bn, Dn, N}, opts);
  Tensor states = empty({Bn, Dn, nc, N}, TensorOptions(DType::F32, u_in.device()));
  if (Bn * Dn == 0) return {out, last, states};
  const Inputs in(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  const int threads = threads_for(L, chunk, kFwdItems);
  dispatch_f32_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    Params<T> p = in.params<T>(Dn, L, N, chunk, delta_softplus);
    p.out = ptr_of<T>(out);
    p.last = ptr_of<T>(last);
    p.states = ptr_of<float>(states);
    p.vec = rows_aligned<T>(L, {p.u, p.delta, p.B, p.C, p.z, p.out});
    const size_t smem = size_t(N) * sizeof(float);
    forward_kernel<T><<<channel_blocks(Bn, Dn), threads, smem, stream()>>>(p);
    HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()), ", ", threads, " threads");
  });
  return {out, last, states};
}

SelectiveScanGrads backward(const Tensor& dout_in, const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                            const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                            const Tensor& bias_in, bool delta_softplus, const Tensor& states_in, int64_t chunk) {
  const char* op = "selective_scan_backward (blocked)";
  const int64_t Bn = u_in.size(0), Dn = u_in.size(1), L = u_in.size(2), N = A_in.size(1);
  HYMBA_CHECK(supports(u_in.dtype(), N, chunk), op, ": called for u ", u_in.meta_str(), ", N ", N, ", chunk ", chunk,
              ", which it does not support");
  const TensorOptions opts(u_in.dtype(), u_in.device());
  SelectiveScanGrads gr;
  gr.du = empty({Bn, Dn, L}, opts);
  gr.ddelta = empty({Bn, Dn, L}, opts);
  gr.dA = empty({Dn, N}, opts);
  if (D_in.defined()) gr.dD = empty({Dn}, opts);
  if (z_in.defined()) gr.dz = empty({Bn, Dn, L}, opts);
  if (bias_in.defined()) gr.ddelta_bias = empty({Dn}, opts);
  // dB, dC are atomic sums: fp32 and zeroed (the outputs themselves for f32 inputs).
  const TensorOptions f32(DType::F32, u_in.device()), f64(DType::F64, u_in.device());
  Tensor dB = zeros({Bn, N, L}, f32), dC = zeros({Bn, N, L}, f32);
  // Per (b, d): written by every block, read only when B * D > 0.
  Tensor part_dA = empty({Bn, Dn, N}, f64), part_dD = empty({Bn, Dn}, f64), part_db = empty({Bn, Dn}, f64);

  const Inputs in(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  const Tensor dout = dout_in.contiguous(), states = states_in.contiguous();
  const int threads = threads_for(L, chunk, kBwdItems);
  dispatch_f32_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (Bn * Dn > 0) {
      Params<T> p = in.params<T>(Dn, L, N, chunk, delta_softplus);
      p.dout = ptr_of<const T>(dout);
      p.saved = ptr_of<const float>(states);
      p.du = ptr_of<T>(gr.du);
      p.ddelta = ptr_of<T>(gr.ddelta);
      p.dz = mptr<T>(gr.dz);
      p.dB = ptr_of<float>(dB);
      p.dC = ptr_of<float>(dC);
      p.part_dA = ptr_of<double>(part_dA);
      p.part_dD = ptr_of<double>(part_dD);
      p.part_db = ptr_of<double>(part_db);
      p.vec = rows_aligned<T>(L, {p.u, p.delta, p.B, p.C, p.z, p.dout, p.du, p.ddelta, p.dz});
      // dA_s, ecarry, xB, xC (backward_kernel).
      const size_t smem =
          size_t(N) * (sizeof(double) + sizeof(float)) + size_t(2 * threads * (kBwdItems + 1)) * sizeof(float);
      backward_kernel<T><<<channel_blocks(Bn, Dn), threads, smem, stream()>>>(p);
      HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()), ", ", threads,
                              " threads");
    }
    if (Dn * N > 0) {
      reduce_params_kernel<T><<<grid_for(Dn * N, 256), 256, 0, stream()>>>(
          ptr_of<const double>(part_dA), ptr_of<const double>(part_dD), ptr_of<const double>(part_db),
          ptr_of<T>(gr.dA), mptr<T>(gr.dD), mptr<T>(gr.ddelta_bias), Bn, Dn, N);
      HYMBA_CUDA_CHECK_LAUNCH(op, " parameter gradient reduction");
    }
  });
  gr.dB = u_in.dtype() == DType::F32 ? dB : dB.to(u_in.dtype());
  gr.dC = u_in.dtype() == DType::F32 ? dC : dC.to(u_in.dtype());
  return gr;
}

}  // namespace hymba::kernels::cuda::scan_blocked
