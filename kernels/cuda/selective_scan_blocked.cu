// The blocked CUDA selective scan (kernels/cuda/selective_scan_blocked.h): Mamba's design (a
// parallel scan over time) with kR = 4 warps per block whose channels share their B and C
// loads and their dB, dC atomics.
//
// A block holds consecutive channels of one batch row b: one per warp, or two per warp on
// half-warps (kSeg = 16 lanes per channel, the default shapes of both passes: FwdShape,
// backward_kernel). Channels past D, in the block that holds the tail of D, walk identity maps
// and read and write nothing. The block walks the sequence in time chunks of kSeg * kItems
// steps (by default 16 x 16 = 256 forward and 16 x 8 = 128 backward), chunk after chunk; lane
// k of a channel's segment holds steps [k * kItems, (k + 1) * kItems) of the chunk in
// registers. The recurrence h_t = a_t h_{t-1} + b_t is the composition of the affine maps
// h -> a_t h + b_t, an associative operation on pairs, (a1, b1) then (a2, b2) = (a1 a2,
// a2 b1 + b2). Per state n each lane composes its own items, the segment scans those per-lane
// maps with shuffles, and each lane walks its items again from the state its prefix gives. The
// map of the whole chunk carries the state into the next chunk.
//
// B[b, n, chunk] and C[b, n, chunk] are the same for the block's channels: the block copies
// them into shared tiles FwdShape::kGroup or kBwdGroup states at a time (TileBuf: cp.async,
// one state group ahead, where rows are aligned), and every warp reads its lanes' items from
// there.
// Block barriers are only where a tile group starts (and, backward, where the dB, dC sums are
// taken); between them each warp runs its states on its own, with shuffles only.
//
// Backward, per time chunk in reverse and per state n:
//   - the gradient flowing into h_{t-1}, e_t = a_t (C_t dy_t + e_{t+1}), is another affine
//     recurrence (run backwards in time), with per-step maps e -> a_t e + a_t C_t dy_t that
//     need nothing from neighbouring steps; a reverse warp scan gives each lane the e
//     entering its last item, and the chunk's map carries e into the previous chunk (the
//     sequential kernel's `dh` carry);
//   - a forward warp scan recomputes the states from the saved state before the chunk (the
//     time chunk, 256 steps, is a multiple of the save interval: supports()); the two scans
//     are independent and run interleaved, each hiding the other's shuffle latency;
//   - a walk forward over the items then has h_{t-1}, h_t and g_t = C_t dy_t + e_{t+1}
//     together, and accumulates every gradient term of the sequential kernel.
// Reductions: du, ddelta, dz per step in registers; dD[d], ddelta_bias[d] per (b, d) in fixed
// order (a warp sum per chunk, chunks in order, in double across chunks), dA[d, n] per (b, d)
// too (each lane's terms over the chunks in shared memory, then the lanes in order), summed
// over b in order by a second kernel, so they are deterministic. dB, dC: each warp writes its
// channel's terms of a state group to shared memory, the block sums them over its warps in
// warp order and adds that with one fp32 atomic per (b, n, t) and block (kR times fewer than
// one per channel; a thread takes 4 consecutive steps, one vector atomic on sm_90), so their
// last bits may vary from run to run.
//
// The kernels are bound by instruction issue and latency, not memory, so the per-state loops
// are kept short: the decay factors are one MUFU.EX2 each (exp2_approx), everything that does
// not depend on n (dt u, the skip term D u) is computed once per time chunk, the forward
// stores a saved state once per lane after its walk when the save interval is a multiple of
// its steps per lane (the usual case; otherwise each step checks), and the index arithmetic of the
// tile fills and the dB/dC sums is per thread rather than per element.
//
// Shared-memory hazards: the comment at each buffer names the barriers (block or warp) that
// separate its writes from the reads before and after them.
//
// Traffic at the Hymba shape (B 8, D 3200, N 16, L 2176, f32), with 8 channels per block
// (half-warps): 3200 blocks; the B, C tiles bring 2 x 400 x 8 x 16 x 2176 x 4 B = 0.9 GB from
// L2 per direction (a block per channel would read 7.1 GB), and the backward adds
// 2 x 400 x 8 x 16 x 2176 = 0.22 G fp32 values atomically (56 M vector atomics on sm_90).
#include "kernels/cuda/selective_scan_blocked.h"

#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma.cuh"  // cp.async
#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda::scan_blocked {
namespace {

constexpr int kR = 4;  // channels (warps) per block
constexpr int kThreads = 32 * kR;
// Consecutive steps per lane. The backward keeps six per-step arrays across the states and
// four more per state: at 16 steps it would need over 255 registers, at 8 it fits the 170
// that __launch_bounds__(kThreads, 3) leaves (3 blocks of 128 threads per SM). ptxas -v
// (CUDA 13, f32 and bf16): sm_90 forward 167-168 registers at 16 steps (two states at once
// there spill), 146-149 at 8 steps with two states, 118-120 at 8 steps capped for 4 blocks
// per SM; backward 167-168 (at the cap: holding a state's B and C items across its scans
// spills); no spills but 8-48 bytes in the quarter-warp shapes (bf16 forward, both
// backwards). sm_80 forward 163-168 / 137-139 / 111-116, backward 195-230 (2 blocks per SM, see
// kBwdBlocksPerSM). Multiples of 8, so that a 16-byte vector of bf16 stays within one lane's
// items.
constexpr int kBwdItems = 8;
static_assert(kBwdItems % 8 == 0);
// The forward's shapes (ScanForward, kernels/cuda_impl.h): steps per lane, states a
// warp walks at once (their FMA chains and warp scans interleave), the blocks per SM the
// register cap is sized for, and kSeg, the lanes per channel: 32 (a warp per channel), 16
// (two channels per warp, each on a half-warp: half the time chunk for the same steps per
// lane, so less of the last chunk is padding past L, and scans of 4 shuffle rounds instead of
// 5) or 8 (four per warp, 3 rounds). Default: 16 steps, one state, 3 blocks, half-warps, the
// fastest on an H100 (f32 1.20 ms against 1.37-1.41 ms for the 32-lane shapes at the
// Hymba-1.5B shape, bench/RESULTS.md; 8 lanes not measured yet); 8 steps per lane trade more
// scan work per step for more independent work per warp or more warps per SM. kGroup: the
// states per shared B/C tile group (a block barrier and a round of tile copies per group):
// 4, or 8 for half the barriers at twice the tile memory (f32: 32 KiB, 63 KiB per block in
// all, still 3 blocks per SM).
template <int kItems_, int kStates_, int kBlocksPerSM_, int kSeg_ = 32, int kGroup_ = 4> struct FwdShape {
  static constexpr int kItems = kItems_, kStates = kStates_, kBlocksPerSM = kBlocksPerSM_, kSeg = kSeg_;
  static constexpr int kGroup = kGroup_;
  static_assert(kItems % 8 == 0 && (kStates == 1 || kStates == 2));
  static_assert(kSeg == 32 || kSeg == 16 || kSeg == 8);
  static_assert(kGroup % kStates == 0);
};
using FwdSteps16 = FwdShape<16, 1, 3>;
using FwdSteps8States2 = FwdShape<8, 2, 3>;
using FwdSteps8Blocks4 = FwdShape<8, 1, 4>;
using FwdSteps16Half = FwdShape<16, 1, 3, 16>;
using FwdSteps16Quarter = FwdShape<16, 1, 3, 8>;
using FwdSteps16HalfGroup8 = FwdShape<16, 1, 3, 16, 8>;
// Blocks per SM the register caps are sized for (__launch_bounds__): 3 on an H100. Below
// sm_90 the backward's cap is that of 2 blocks: its sm_80 code needs 195-230 registers, and
// capped for 3 (168) it would spill (its shared memory, 73 KiB, fits only 2 in an A100's
// 164 KiB anyway).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int kBwdBlocksPerSM = 2;
#else
constexpr int kBwdBlocksPerSM = 3;
#endif
// States per shared B/C tile group in the backward (the forward's: FwdShape::kGroup). Shared
// memory at N = 16, f32, the default shapes (half-warps, groups of 4 states): forward 16 KiB
// of double-buffered tiles (2 x 2 x 4 x 256 floats), 1 KiB of carries and A, 30 KiB of lane
// slots (47 KiB); backward 8 KiB of tiles, 32 KiB of dB/dC terms (2 x kR x 4 x 256 floats),
// 8 KiB of per-lane dA terms (kThreads x N floats), 24 KiB of row slots (kBwdSlots) and 1 KiB
// of carries and A (73 KiB, opted in; the dA terms grow with N, 128 KiB at N = 256). With the register caps that is 3 blocks
// (12 warps) per SM both ways on an H100; 2 for the backward on an A100 (kBwdBlocksPerSM).
constexpr int kBwdGroup = 4;
// The backward's widest time chunk (a warp per channel), which every narrower shape falls
// back to: the save interval must divide it, so that every chunk starts right after a saved
// state.
constexpr int64_t kBwdSteps = 32 * kBwdItems;
// The per-channel carries, A and (backward) dA take up to 16 x N x 16 bytes of shared memory
// (64 KiB at N = 256 with quarter-warps).
constexpr int64_t kMaxN = 256;
constexpr unsigned kFull = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- tiles: a time chunk of kLanes * kItems steps of one state, lane-major, swizzled ----
// Lane k's items are the kItems floats at k * kItems, their 16-byte vectors in a lane-
// dependent order: vector v at slot v ^ swz(k), swz(k) = (k / (8 / kVec)) % kVec with kVec =
// kItems / 4 vectors per lane. Shared memory serves 16-byte accesses a quarter warp (8
// threads, 128 bytes) at a time, and the tiles and the backward's dB/dC terms are accessed in
// two patterns: by lane (8 lanes, each its own vector v: tile_items, the dB/dC terms'
// stores) and in time order (8 consecutive vectors: the cp.async copies, the widening of
// bf16 rows, the dB/dC sums). With the swizzle both hit 8 distinct bank groups. The layout
// before it padded each lane by 16 bytes, which served the lanes but left the time-order
// accesses 2-way conflicted: in run 4's source profile the dB/dC sums' loads and the tile
// copies were a quarter of the backward's shared-memory wavefronts beyond the ideal.
template <int kItems, int kLanes = 32> constexpr int kTileRow = kLanes * kItems;
// Offset (floats) of lane k's vector v in a tile row.
template <int kItems> __device__ __forceinline__ int vec_pos(int k, int v) {
  constexpr int kVec = kItems / 4;
  static_assert(kVec == 2 || kVec == 4, "the swizzle assumes 2 or 4 vectors per lane");
  return k * kItems + 4 * (v ^ ((k / (8 / kVec)) % kVec));
}
// Offset of step q of the chunk in a tile row.
template <int kItems> __device__ __forceinline__ int tile_pos(int q) {
  return vec_pos<kItems>(q / kItems, q % kItems / 4) + q % 4;
}

// Rows 0 .. rows - 1 of src (row stride L; src points at step 0 of the first row), steps
// [t0, t0 + kLanes kItems), into tile rows of kTileRow floats, 0 past L, one element at a
// time. Called by every thread of the block (kThreads of them), between two barriers. Only
// for rows that are not 16-byte aligned: aligned ones are copied ahead by TileBuf::issue.
template <int kItems, int kLanes, typename T>
__device__ void fill_tile(float* __restrict__ tile, const T* __restrict__ src, int rows, int64_t L, int64_t t0) {
  constexpr int kSteps = kLanes * kItems, kRow = kTileRow<kItems, kLanes>;
  for (int k = int(threadIdx.x); k < rows * kSteps; k += kThreads) {
    const int j = k / kSteps, q = k % kSteps;
    tile[j * kRow + tile_pos<kItems>(q)] = t0 + q < L ? to_f32(src[j * L + t0 + q]) : 0.f;
  }
}

// A lane's items of one tile row.
template <int kItems>
__device__ __forceinline__ void tile_items(const float* __restrict__ row, int lane, float (&x)[kItems]) {
#pragma unroll
  for (int v = 0; v < kItems / 4; ++v) {
    const float4 w = *reinterpret_cast<const float4*>(row + vec_pos<kItems>(lane, v));
    x[4 * v] = w.x;
    x[4 * v + 1] = w.y;
    x[4 * v + 2] = w.z;
    x[4 * v + 3] = w.w;
  }
}

// ---- the tiles of the next state group, copied while the current one is computed ----
// With aligned rows (Params::vec) the B and C tiles of the next state group (or of the first
// group of the next time chunk) are copied with cp.async while the warps work on the current
// group, so that no warp waits for global memory at the group's barrier (the synchronous
// fills were a fifth of the forward's and backward's stall samples). f32 rows land in the
// float tiles directly, which are double-buffered; bf16 rows land in a staging area and are
// widened into the (single) float tile after the barrier that starts the group, behind a
// second barrier, so the per-state loops read floats either way. Without aligned rows the
// group is filled synchronously between two barriers (fill_tile), as before.
template <typename T, int kItems, int kGroup, int kLanes = 32> struct TileBuf {
  static constexpr bool kDirect = sizeof(T) == sizeof(float);
  static constexpr int kSteps = kLanes * kItems, kRow = kTileRow<kItems, kLanes>, kBufs = kDirect ? 2 : 1;
  static constexpr size_t bytes() {
    return size_t(kBufs * 2 * kGroup * kRow) * 4 + (kDirect ? 0 : size_t(2 * kGroup * kSteps) * sizeof(T));
  }
  float* tiles;  // kBufs x (B, C) x kGroup x kRow floats
  T* stage;      // bf16: (B, C) x kGroup x kSteps, row-major
  __device__ explicit TileBuf(void* at)
      : tiles(static_cast<float*>(at)), stage(reinterpret_cast<T*>(tiles + kBufs * 2 * kGroup * kRow)) {}
  __device__ float* B(int buf) const { return tiles + (kDirect ? buf & 1 : 0) * 2 * kGroup * kRow; }
  __device__ float* C(int buf) const { return B(buf) + kGroup * kRow; }

  // Copies of B[rows], C[rows] (row stride L, pointing at step 0 of the group's first
  // state), steps [t0, t0 + kSteps), for buffer buf; every thread of the block calls it. A
  // 16-byte vector lies wholly before or wholly past L (vec); the ones past L are zero-filled
  // (source size 0, from the row start, a valid address).
  __device__ void issue(int buf, const T* __restrict__ Bsrc, const T* __restrict__ Csrc, int gn, int64_t L,
                        int64_t t0) const {
    constexpr int kN = Vec16<T>::kN, kPerRow = kSteps / kN;
    static_assert(kThreads % kPerRow == 0, "a thread keeps one vector position");
    constexpr int kRowsPerPass = kThreads / kPerRow;
    const int tid = int(threadIdx.x), q = (tid % kPerRow) * kN;
    const bool in = t0 + q < L;
    const int64_t off = in ? t0 + q : 0;
    for (int j = tid / kPerRow; j < 2 * gn; j += kRowsPerPass) {
      const bool isC = j >= gn;
      const int jj = isC ? j - gn : j;
      const T* src = (isC ? Csrc : Bsrc) + jj * L;
      void* dst = kDirect ? static_cast<void*>((isC ? C(buf) : B(buf)) + jj * kRow + tile_pos<kItems>(q))
                          : static_cast<void*>(stage + (isC * kGroup + jj) * kSteps + q);
      mma::cp_async_16(dst, src + off, in ? 16 : 0);
    }
  }
  // bf16: the staged rows widened into the float tile (after the barrier that follows the
  // copies' wait; another barrier must follow before the tile is read).
  __device__ void widen(int gn) const {
    if constexpr (!kDirect) {
      constexpr int kN = Vec16<T>::kN, kPerRow = kSteps / kN, kRowsPerPass = kThreads / kPerRow;
      const int tid = int(threadIdx.x), q = (tid % kPerRow) * kN;
      for (int j = tid / kPerRow; j < 2 * gn; j += kRowsPerPass) {
        const bool isC = j >= gn;
        const int jj = isC ? j - gn : j;
        const Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(stage + (isC * kGroup + jj) * kSteps + q);
        float* row = (isC ? C(0) : B(0)) + jj * kRow;
#pragma unroll
        for (int e = 0; e < kN; e += 4)  // each 4 steps to their own (swizzled) place
          *reinterpret_cast<float4*>(row + tile_pos<kItems>(q + e)) =
              make_float4(to_f32(w.v[e]), to_f32(w.v[e + 1]), to_f32(w.v[e + 2]), to_f32(w.v[e + 3]));
      }
    }
  }
};

// ---- warp scans of affine maps ----

// The affine map h -> a h + b.
struct Pair {
  float a, b;
};
// x first, then y.
__device__ __forceinline__ Pair compose(Pair x, Pair y) { return {x.a * y.a, y.a * x.b + y.b}; }

// Exclusive scans of S independent sets of lane maps, interleaved so that the shuffle and
// FMA latencies of one set hide behind the others' (each round is a serial dependency chain),
// in each segment of kSeg lanes on its own. Bit k of kRev picks the order of set k: 0, lane
// order (the segment's first lane first), p[k] becomes the composition of the maps of the
// lanes before this one; 1, reverse lane order, the maps of the lanes after this one, later
// lanes applied first. Identity for the first lane of each order. incl[k] is the inclusive
// composition (this lane's map too): at the last lane of the order (sl = kSeg - 1, or 0 in
// reverse) the segment's total, which the callers use there rather than shuffle it to
// every lane.
// With two sets, every round composes unconditionally with a received map that is the
// identity where no lane sends one (selects): the predicated updates compiled to register
// copies of the pairs after every round there (run 3's backward SASS, bench/RESULTS.md),
// while for one set (the forward) they compiled to 5 instructions a round (2 SHFL, FFMA,
// FSEL, a predicated FMUL), one fewer than the selects need.
template <unsigned kRev, int S, int kSeg = 32>
__device__ __forceinline__ void warp_scans(Pair (&p)[S], Pair (&incl)[S]) {
  const int sl = int(threadIdx.x) & (kSeg - 1);  // the lane within its segment
#pragma unroll
  for (int o = 1; o < kSeg; o <<= 1) {
    Pair x[S];
#pragma unroll
    for (int k = 0; k < S; ++k) {
      const bool rev = kRev >> k & 1u;
      x[k].a = rev ? __shfl_down_sync(kFull, p[k].a, o, kSeg) : __shfl_up_sync(kFull, p[k].a, o, kSeg);
      x[k].b = rev ? __shfl_down_sync(kFull, p[k].b, o, kSeg) : __shfl_up_sync(kFull, p[k].b, o, kSeg);
    }
#pragma unroll
    for (int k = 0; k < S; ++k) {
      const bool rev = kRev >> k & 1u;
      const bool sent = rev ? sl + o < kSeg : sl >= o;
      if constexpr (S == 1) {
        if (sent) p[k] = compose(x[k], p[k]);
      } else {
        const float xa = sent ? x[k].a : 1.f, xb = sent ? x[k].b : 0.f;
        p[k] = {xa * p[k].a, fmaf(p[k].a, xb, p[k].b)};  // compose(x, p)
      }
    }
  }
#pragma unroll
  for (int k = 0; k < S; ++k) {
    const bool rev = kRev >> k & 1u;
    incl[k] = p[k];
    const float ea = rev ? __shfl_down_sync(kFull, p[k].a, 1, kSeg) : __shfl_up_sync(kFull, p[k].a, 1, kSeg);
    const float eb = rev ? __shfl_down_sync(kFull, p[k].b, 1, kSeg) : __shfl_up_sync(kFull, p[k].b, 1, kSeg);
    const bool first = sl == (rev ? kSeg - 1 : 0);
    p[k] = {first ? 1.f : ea, first ? 0.f : eb};
  }
}

// The sum over each segment of kSeg lanes, in every lane of it (a warp_sum for kSeg = 32).
template <int kSeg> __device__ __forceinline__ float segment_sum(float v) {
#pragma unroll
  for (int o = kSeg / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// 2^x for the decay factors exp(dt A) = 2^(dt A log2 e): MUFU.EX2 alone (mma::exp2_approx,
// which the CPU emulator models with the hardware's flush to zero). It has the accuracy of
// exp2f without the scaling exp2f adds to keep results below 2^-126 denormal: a decay factor
// that small is 0 for every purpose here. Large arguments give inf and very negative ones 0,
// for any sign of A; 2^0 is exactly 1, so the steps past L (dt = 0) are identity maps.
using mma::exp2_approx;

// 4 consecutive fp32 atomic additions at a 16-byte aligned p: one vector atomic on sm_90.
__device__ __forceinline__ void atomic_add4(float* p, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(p), v);
#else
  atomicAdd(p, v.x);
  atomicAdd(p + 1, v.y);
  atomicAdd(p + 2, v.z);
  atomicAdd(p + 3, v.w);
#endif
}

// 1 / x as one MUFU.RCP (about 1 ulp), without the IEEE division's fix-up path; 1 / inf = 0.
__device__ __forceinline__ float fast_rcp(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return 1.f / x;
#endif
}

// The per-step transcendentals. The library's expf, log1pf and expm1f cost 10 to 30
// instructions each, and with 8 or 16 steps per lane they were a third of the forward's
// per-chunk instructions; these use MUFU.EX2 / MUFU.RCP and short polynomials, with relative
// errors near 1e-7 (float rounding) rather than the library's 1 to 2 ulp.

// 1 / (1 + exp(-v)). exp(-v) rounds its argument once: relative error about
// |v| 1e-7, for any v (0 and 1 at the extremes, exactly as the limits).
__device__ __forceinline__ float sigmoid(float v) { return fast_rcp(1.f + exp2_approx(-v * kLog2e)); }

// log(1 + exp(v)) = max(v, 0) + log1p(e), e = exp(-|v|) in (0, 1]: log1p(e) = 2 atanh(s) with
// s = e / (2 + e) <= 1/3, the odd series of atanh to s^13 (the rest is below 2e-8 of the
// sum). No branch; v > 20 gives v as the threshold form v > 20 ? v : log1p(exp(v)) does
// (the added e is below half an ulp of v).
__device__ __forceinline__ float softplus(float v) {
  const float e = exp2_approx(-fabsf(v) * kLog2e);
  const float s = e * fast_rcp(2.f + e), t = s * s;
  float q = 1.f / 13.f;
  q = q * t + 1.f / 11.f;
  q = q * t + 1.f / 9.f;
  q = q * t + 1.f / 7.f;
  q = q * t + 1.f / 5.f;
  q = q * t + 1.f / 3.f;
  q = q * t + 1.f;
  return fmaxf(v, 0.f) + 2.f * s * q;
}

// 1 - exp(-x) for x >= 0 (softplus'(v) = sigmoid(v) = 1 - exp(-softplus(v))): the Taylor
// series to x^8 below 1/2 (the rest is below 1e-8 of the sum), where 1 - exp(-x) would cancel;
// 1 - exp(-x) above (at least 0.39, so the cancellation costs at most 2 bits).
__device__ __forceinline__ float one_minus_exp_neg(float x) {
  float q = -1.f / 40320.f;
  q = q * x + 1.f / 5040.f;
  q = q * x - 1.f / 720.f;
  q = q * x + 1.f / 120.f;
  q = q * x - 1.f / 24.f;
  q = q * x + 1.f / 6.f;
  q = q * x - 0.5f;
  q = q * x + 1.f;
  return x < 0.5f ? x * q : 1.f - exp2_approx(-x * kLog2e);
}

// ---- a channel's own rows (u, delta, z, dout and the outputs), straight from global ----

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
    // An explicit 16-byte store: in the forward kernels NVVM turned both a Vec16 and a uint4
    // assignment into 4 (f32) or 8 (bf16) scalar stores (the PTX holds no st.global.v4).
    constexpr int kN = Vec16<T>::kN;
#pragma unroll
    for (int v = 0; v < kItems / kN; ++v) {
      Vec16<T> w;
#pragma unroll
      for (int j = 0; j < kN; ++j) w.v[j] = from_f32<T>(x[v * kN + j]);
      uint4 bits;
      memcpy(&bits, &w, sizeof(bits));
      T* dst = row + s + v * kN;
#ifdef __CUDA_ARCH__
      asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(bits.x), "r"(bits.y), "r"(bits.z),
                   "r"(bits.w)
                   : "memory");
#else
      *reinterpret_cast<uint4*>(dst) = bits;  // the CPU emulator (tests/cuda_emu)
#endif
    }
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i)
      if (s + i < L) row[s + i] = from_f32<T>(x[i]);
  }
}

// A hint to bring the 128-byte line holding p into L2 (no register written, nothing waited
// for). The backward reads delta, and in its whole-warp shape also u, dout and z (no room
// for the row slots there: kBwdSlots), with plain loads at the start of each time chunk; in
// run 3 its row loads were a twentieth of its stall samples. It asks for the next chunk's
// lines a whole chunk ahead.
__device__ __forceinline__ void prefetch_l2(const void* p) {
#ifdef __CUDA_ARCH__
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;  // the CPU emulator (tests/cuda_emu)
#endif
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
  int64_t dblocks;  // blocks per batch row, ceil(D / cpb)
  int cpb;          // channels per block: kR x (32 / kSeg), kSeg the lanes per channel
  bool softplus;
  bool vec;       // every (B, D, L) and (B, N, L) row is 16-byte aligned (see load_items)
  bool vec_grad;  // backward: the rows of dB and dC are 16-byte aligned (vector atomics)
};

// The channels of block blockIdx.x: batch row b, first channel d0, and how many of its cpb
// channels exist (fewer only in the last block of a row when cpb does not divide D).
struct BlockChannels {
  int64_t b, d0;
  int count;
};
template <typename T> __device__ __forceinline__ BlockChannels block_channels(const Params<T>& p) {
  const int64_t b = blockIdx.x / p.dblocks, d0 = (blockIdx.x % p.dblocks) * p.cpb;
  return {b, d0, int(min(int64_t(p.cpb), p.Dn - d0))};
}

// ---- a lane's own items of a channel row, copied ahead into shared memory (cp.async) ----
// The loads of u, delta and z at the start of a time chunk used to stall every warp for a
// global-memory latency (about a tenth of the forward's time). Each lane instead copies its
// items of the next chunk into its own slots while the current chunk's states run: the slots
// are private to the lane, so its own cp.async.wait_group is all the ordering they need. A
// slot row holds 32 lanes of kItems values, each lane's slot padded by 16 bytes so that the
// lanes' 16-byte reads fall in distinct banks.
template <typename T, int kItems> constexpr int kSlot = kItems + 16 / int(sizeof(T));
template <typename T, int kItems> constexpr int kSlotRow = 32 * kSlot<T, kItems>;

// Whether the lane whose first step is s copies its items ahead: whole 16-byte vectors of an
// aligned row, all inside L (the tail lanes load directly).
__device__ __forceinline__ bool ahead(bool vec, int64_t s, int kItems, int64_t L) { return vec && s + kItems <= L; }

template <int kItems, typename T> __device__ __forceinline__ void copy_ahead(T* slot, const T* __restrict__ src) {
  constexpr int kN = Vec16<T>::kN;
#pragma unroll
  for (int v = 0; v < kItems / kN; ++v) mma::cp_async_16(slot + v * kN, src + v * kN);
}
template <int kItems, typename T> __device__ __forceinline__ void slot_items(const T* slot, float (&x)[kItems]) {
  constexpr int kN = Vec16<T>::kN;
  const Vec16<T>* q = reinterpret_cast<const Vec16<T>*>(slot);
#pragma unroll
  for (int v = 0; v < kItems / kN; ++v) {
    const Vec16<T> w = q[v];
#pragma unroll
    for (int j = 0; j < kN; ++j) x[v * kN + j] = to_f32(w.v[j]);
  }
}

// Forward shared memory: the B and C tiles (TileBuf), the warps' carries and A log2(e), then
// the warps' slot rows (u and delta of the next chunk, z of this one).
constexpr int kFwdSlotRows = 3;
template <typename T, typename Shape> size_t forward_smem(int64_t N) {
  constexpr int kItems = Shape::kItems, kSeg = Shape::kSeg;
  return TileBuf<T, kItems, Shape::kGroup, kSeg>::bytes() + size_t(2 * kR * (32 / kSeg) * N) * 4 +
         size_t(kR * kFwdSlotRows * kSlotRow<T, kItems>) * sizeof(T);
}

template <typename T, typename Shape>
__global__ void __launch_bounds__(kThreads, Shape::kBlocksPerSM) forward_kernel(Params<T> p) {
  // A channel per segment of kSeg lanes: kCh per warp. sl is the lane within its segment.
  constexpr int kItems = Shape::kItems, kSeg = Shape::kSeg, kCh = 32 / kSeg, kSteps = kSeg * kItems;
  constexpr int kRow = kTileRow<kItems, kSeg>;
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, sl = lane & (kSeg - 1);
  const int ch = warp * kCh + lane / kSeg;  // the channel's index in the block
  const BlockChannels bc = block_channels(p);
  const int64_t L = p.L;
  const int N = int(p.N);  // <= kMaxN
  // A channel past D (in the block holding the tail of D) reads and writes nothing: its
  // segment walks identity maps, for the warp's shuffles (kSeg 16: the other half-warp may
  // be real). Warps wholly past D skip the states.
  const bool active = ch < bc.count, warp_active = warp * kCh < bc.count;
  const int64_t b = bc.b, d = active ? bc.d0 + ch : 0;
  const int64_t r = b * p.Dn + d, row = r * L;

  extern __shared__ __align__(16) unsigned char smem[];
  // The B and C tiles of state groups (TileBuf): a group's tiles are read by the warps
  // between the barrier that starts the group and the one that starts the next.
  constexpr int kGroup = Shape::kGroup;
  using Tiles = TileBuf<T, kItems, kGroup, kSeg>;
  const Tiles tiles(smem);
  float* const after_tiles = reinterpret_cast<float*>(smem + Tiles::bytes());
  // carry[n] of this channel: the state after the chunks done so far. Read by every lane of
  // the segment before the __syncwarp that follows the scan of (chunk, n), written by its
  // last lane after it; read next in the following chunk, after its group barriers.
  float* carry = after_tiles + ch * N;
  // A2[n] = A[d, n] log2(e) of this channel: written by the segment's lanes before the
  // __syncwarp below (the first chunk's decay factors read it before any block barrier).
  float* A2s = after_tiles + kR * kCh * N + ch * N;
  for (int n = sl; n < N; n += kSeg) {
    carry[n] = 0.f;
    A2s[n] = active ? to_f32(p.A[d * N + n]) * kLog2e : 0.f;
  }
  __syncwarp();  // A2s
  const float Dd = active && p.D ? to_f32(p.D[d]) : 0.f, bias = active && p.bias ? to_f32(p.bias[d]) : 0.f;
  // This lane's slots (16-byte aligned: the floats before them are a multiple of 4).
  T* slot_u = reinterpret_cast<T*>(after_tiles + 2 * kR * kCh * N) + warp * kFwdSlotRows * kSlotRow<T, kItems> +
              lane * kSlot<T, kItems>;
  T* slot_dt = slot_u + kSlotRow<T, kItems>;
  T* slot_z = slot_dt + kSlotRow<T, kItems>;
  // cp.async groups, committed by every thread in the same order: R(0) (u and delta of
  // chunk 0) and T(0, 0) (the tiles of chunk 0's first state group) here; then per chunk t,
  // Z(t) (z of the chunk) and R(t + 1) at its start and T of the next group at the start of
  // each group. So the groups younger than R(t) at its wait are T(t, 0) and Z(t); younger
  // than T(t, 0) at its wait, Z(t) and R(t + 1); younger than Z(t) at the chunk's end, at
  // most R(t + 1) and T(t + 1, 0) (if the chunk has one state group; with more, Z(t) is
  // complete by then); and nothing younger than T(t, g > 0) at its wait.
  if (active && ahead(p.vec, sl * kItems, kItems, L)) {
    copy_ahead<kItems>(slot_u, p.u + row + sl * kItems);
    copy_ahead<kItems>(slot_dt, p.delta + row + sl * kItems);
  }
  mma::cp_async_commit();
  if (p.vec && L > 0) tiles.issue(0, p.B + b * N * L, p.C + b * N * L, min(kGroup, N), L, 0);
  mma::cp_async_commit();
  int grp = 0;  // state groups done so far (the tile buffer parity)
  // Save interval (chunk <= 256: int arithmetic). When it is a multiple of kItems (the usual
  // case), save interval ends fall only on a lane's last item, so a lane stores at most one
  // state per n, after its walk: the state at its last item, or at step L - 1 when that is
  // inside the lane (the steps past L are identity maps, so the state after the last item
  // is the state at L - 1). Otherwise every item checks its bit in `save`.
  const int chunk = int(p.chunk);
  const bool lane_saves = chunk % kItems == 0;  // uniform

  for (int64_t t0 = 0; t0 < L; t0 += kSteps) {
    const int64_t s = t0 + sl * kItems;  // this lane's first step
    const int64_t left = L - s;
    const int cnt = left <= 0 ? 0 : left >= kItems ? kItems : int(left);
    // dt u (the input term is dt u B) and y, which starts at the skip term D u. The product
    // of a lane's decay factors exp(dt_i A) is exp(A sum_i dt_i): one MUFU per state.
    float dt[kItems], dtu[kItems], y[kItems], dtsum = 0.f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) dt[i] = dtu[i] = y[i] = 0.f;  // a channel past D: identity maps
    // Steps whose state is saved: ends of save intervals and L - 1. Step s + i is step
    // phase + i of save interval s / chunk.
    unsigned save = 0;
    const int phase = int(s % chunk);
    const int64_t sidx0 = r * p.nc + s / chunk;  // chunk_states row of step s
    float* lane_save = nullptr;                  // lane_saves: where this lane's state goes, if anywhere
    const bool here = ahead(p.vec, s, kItems, L), next = t0 + kSteps < L && ahead(p.vec, s + kSteps, kItems, L);
    if (active && p.z && here) copy_ahead<kItems>(slot_z, p.z + row + s);
    mma::cp_async_commit();
    mma::cp_async_wait<2>();  // R(t): u and delta of this chunk
    if (active) {
      float u[kItems];
      if (here) {
        slot_items(slot_u, u);
        slot_items(slot_dt, dt);
      } else {
        load_items(p.u + row, L, s, p.vec, u);
        load_items(p.delta + row, L, s, p.vec, dt);
      }
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float v = dt[i] + bias, sp = softplus(v);  // no branch per step
        dt[i] = i < cnt ? (p.softplus ? sp : v) : 0.f;  // 0 past L: the identity map
        dtu[i] = dt[i] * u[i];
        dtsum += dt[i];
        y[i] = Dd * u[i];
        if (!lane_saves && i < cnt && ((phase + i + 1) % chunk == 0 || s + i == L - 1)) save |= 1u << i;
      }
      if (lane_saves && cnt > 0 && ((s + kItems) % chunk == 0 || s + kItems >= L))
        lane_save = p.states + (r * p.nc + (min(s + kItems, L) - 1) / chunk) * N;
      // The slots just read take the next chunk's items. The values read are used above, so
      // the reads are done before the copies can land (in-order issue); the clobber keeps
      // the compiler from moving the reads past the copies.
      asm volatile("" ::: "memory");
      if (next) {
        copy_ahead<kItems>(slot_u, p.u + row + s + kSteps);
        copy_ahead<kItems>(slot_dt, p.delta + row + s + kSteps);
      }
    }
    mma::cp_async_commit();
    // an[i] = exp(dt_i A[d, n]) for the next state to walk (one state at a time: kAhead):
    // state 0's here, state n + 1's during state n's walk, each as soon as the walk has used
    // state n's. The 16 MUFUs per state (each holds a sub-partition's special-function unit
    // for 8 cycles) were a burst at the head of every state's chain; inside the walk they
    // issue between its FMAs. The chunk's last state computes 16 that nothing uses.
    constexpr bool kAhead = Shape::kStates == 1;
    float an[kItems];
    if constexpr (kAhead) {
#pragma unroll
      for (int i = 0; i < kItems; ++i) an[i] = exp2_approx(dt[i] * A2s[0]);
    }

    for (int g0 = 0; g0 < N; g0 += kGroup, ++grp) {
      const int gn = min(kGroup, N - g0);
      const float* Bs = tiles.B(grp);
      const float* Cs = tiles.C(grp);
      if (p.vec) {
        if (g0 == 0)
          mma::cp_async_wait<2>();  // T(t, 0)
        else
          mma::cp_async_wait<0>();  // T(t, g)
        __syncthreads();  // every thread's copies landed; the warps are done with the previous group
        if constexpr (!Tiles::kDirect) {
          tiles.widen(gn);
          __syncthreads();
        }
        // The next group's tiles, into the other buffer (f32) or the staging area (bf16).
        if (g0 + kGroup < N)
          tiles.issue(grp + 1, p.B + (b * N + g0 + kGroup) * L, p.C + (b * N + g0 + kGroup) * L,
                      min(kGroup, N - g0 - kGroup), L, t0);
        else if (t0 + kSteps < L)
          tiles.issue(grp + 1, p.B + b * N * L, p.C + b * N * L, min(kGroup, N), L, t0 + kSteps);
        mma::cp_async_commit();
      } else {
        __syncthreads();  // the warps are done with the previous group's tiles
        fill_tile<kItems, kSeg>(tiles.B(grp), p.B + (b * N + g0) * L, gn, L, t0);
        fill_tile<kItems, kSeg>(tiles.C(grp), p.C + (b * N + g0) * L, gn, L, t0);
        __syncthreads();
      }
      if (!warp_active) continue;
      // States g0 + j .. g0 + j + kS - 1, walked together.
      auto walk = [&](auto states_at_once, int j) {
        constexpr int kS = decltype(states_at_once)::value;
        const int n0 = g0 + j;
        float a[kS][kItems], bb[kS][kItems];
        Pair pre[kS], incl[kS];
        {
          float A2[kS], Bv[kS][kItems];
#pragma unroll
          for (int k = 0; k < kS; ++k) {
            A2[k] = A2s[n0 + k];
            tile_items<kItems>(Bs + (j + k) * kRow, sl, Bv[k]);
            pre[k] = {exp2_approx(dtsum * A2[k]), 0.f};
          }
#pragma unroll
          for (int i = 0; i < kItems; ++i)
#pragma unroll
            for (int k = 0; k < kS; ++k) {
              if constexpr (kAhead && kS == 1)
                a[k][i] = an[i];
              else
                a[k][i] = exp2_approx(dt[i] * A2[k]);
              bb[k][i] = dtu[i] * Bv[k][i];
              pre[k].b = a[k][i] * pre[k].b + bb[k][i];
            }
        }
        float h_in[kS];
#pragma unroll
        for (int k = 0; k < kS; ++k) h_in[k] = carry[n0 + k];
        warp_scans<0u, kS, kSeg>(pre, incl);
        __syncwarp();  // carry: every lane has read it
        if (sl == kSeg - 1) {  // the lane that holds the chunk's map
#pragma unroll
          for (int k = 0; k < kS; ++k) carry[n0 + k] = incl[k].a * h_in[k] + incl[k].b;
        }
        float Cv[kS][kItems], h[kS];
#pragma unroll
        for (int k = 0; k < kS; ++k) {
          tile_items<kItems>(Cs + (j + k) * kRow, sl, Cv[k]);
          h[k] = pre[k].a * h_in[k] + pre[k].b;
        }
        const float A2next = A2s[min(n0 + 1, N - 1)];
        if (lane_saves) {
#pragma unroll
          for (int i = 0; i < kItems; ++i)
#pragma unroll
            for (int k = 0; k < kS; ++k) {
              h[k] = a[k][i] * h[k] + bb[k][i];
              y[i] += Cv[k][i] * h[k];
              if constexpr (kAhead && kS == 1) an[i] = exp2_approx(dt[i] * A2next);
            }
          if (lane_save) {
#pragma unroll
            for (int k = 0; k < kS; ++k) lane_save[n0 + k] = h[k];
          }
        } else {
#pragma unroll
          for (int i = 0; i < kItems; ++i)
#pragma unroll
            for (int k = 0; k < kS; ++k) {
              h[k] = a[k][i] * h[k] + bb[k][i];
              y[i] += Cv[k][i] * h[k];
              if (save >> i & 1u) p.states[(sidx0 + (phase + i) / chunk) * N + n0 + k] = h[k];
              if constexpr (kAhead && kS == 1) an[i] = exp2_approx(dt[i] * A2next);
            }
        }
      };
      int j = 0;
      for (; j + Shape::kStates <= gn; j += Shape::kStates) walk(std::integral_constant<int, Shape::kStates>{}, j);
      if (j < gn) walk(std::integral_constant<int, 1>{}, j);  // an odd state left over (kStates = 2)
    }

    if (active) {
      if (p.z) {
        float zz[kItems];
        if (here) {
          mma::cp_async_wait<2>();  // Z(t)
          slot_items(slot_z, zz);
        } else {
          load_items(p.z + row, L, s, p.vec, zz);
        }
#pragma unroll
        for (int i = 0; i < kItems; ++i) y[i] *= zz[i] * sigmoid(zz[i]);
      }
      store_items(p.out + row, L, s, p.vec, y);
    }
    asm volatile("" ::: "memory");  // the z slot is read before the next chunk refills it
  }
  mma::cp_async_wait<0>();  // nothing in flight at exit (none is issued past the last chunk)
  __syncwarp();  // carry: the segment's last lane's last writes (or the zeros, when L == 0)
  if (active)
    for (int n = sl; n < N; n += kSeg) p.last[r * N + n] = from_f32<T>(carry[n]);
}

// Backward shared memory: every thread's dA terms (N floats each), the B and C tiles
// (TileBuf), the warps' dB and dC terms of a state group, then the warps' e carries and
// A log2(e).
// The backward's row slots: u, dout and z of a time chunk, copied (cp.async) one chunk ahead
// into buffer c & 1 and read at the chunk's start and again after its states, so that
// neither read waits for global memory (in run 3 the two sets of loads were about a
// twentieth of the backward's stall samples). Two buffers of three rows of kThreads lanes x
// kBwdItems, 24 KiB for f32: with them the half- and quarter-warp backward still fit 3 blocks
// per SM (73 and 70 KiB); the whole-warp shape, whose tiles are twice as long, would not, and
// loads its rows directly.
template <int kSeg> constexpr bool kBwdSlots = kSeg <= 16;
template <typename T, int kSeg> constexpr size_t kBwdSlotBytes = kBwdSlots<kSeg> ? 6 * kThreads * kBwdItems * sizeof(T) : 0;
// A lane's 16-byte vector v of its kBwdItems items in a slot row (elements): lane-private,
// and distinct bank groups for the 8 lanes of a quarter warp (f32: two vectors per lane, in
// the tiles' swizzled order; bf16: one).
template <typename T> __device__ __forceinline__ int slot_pos(int t, int v) {
  if constexpr (sizeof(T) == 4)
    return vec_pos<kBwdItems>(t, v);
  else
    return t * kBwdItems + v * Vec16<T>::kN;
}

template <typename T, int kSeg> size_t backward_smem(int64_t N) {
  constexpr size_t tile = kBwdGroup * kTileRow<kBwdItems>;
  const size_t channels = size_t(kR * (32 / kSeg) * N);
  return size_t(N) * kThreads * 4 + TileBuf<T, kBwdItems, kBwdGroup, kSeg>::bytes() + 2 * kR * tile * 4 +
         kBwdSlotBytes<T, kSeg> + 2 * channels * 4;
}

template <typename T, int kSeg>
__global__ void __launch_bounds__(kThreads, kBwdBlocksPerSM) backward_kernel(Params<T> p) {
  // A channel per segment of kSeg lanes (kCh per warp), as in the forward (FwdShape::kSeg).
  constexpr int kItems = kBwdItems, kCh = 32 / kSeg, kSteps = kSeg * kItems;
  constexpr int kRow = kTileRow<kItems, kSeg>;  // a B/C tile row: the chunk's steps
  constexpr int kXRow = kTileRow<kItems>;       // a row of a warp's dB/dC terms: its kCh segments' rows
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5, sl = lane & (kSeg - 1);
  const int ch = warp * kCh + lane / kSeg;  // the channel's index in the block
  const BlockChannels bc = block_channels(p);
  const int64_t L = p.L;
  const int N = int(p.N);  // <= kMaxN
  // A channel past D reads and writes nothing and walks zeros (dy = 0: its dB/dC terms are
  // 0); warps wholly past D skip the states.
  const bool active = ch < bc.count, warp_active = warp * kCh < bc.count;
  const int64_t b = bc.b, d = active ? bc.d0 + ch : 0;
  const int64_t r = b * p.Dn + d, row = r * L;

  extern __shared__ __align__(16) unsigned char smem[];
  // dA_lane[n kThreads + tid]: this lane's share of dA[b, d, n], summed over its steps of all
  // the chunks so far; private to the lane until the __syncwarp after the chunks, then summed
  // over the segment's lanes in lane order (double). The per-state sum over the segment it
  // replaces (4 or 5 shuffle rounds and a double addition, one serial chain per state) was a
  // sixth of the backward state loop's stall samples. A lane adds at most nchunks float
  // terms, each itself a sum of kItems steps: at L = 8192, 64 terms, a relative error below
  // 4e-6 in the worst case. N kThreads floats: what follows stays 16-byte aligned.
  float* dA_lane = reinterpret_cast<float*>(smem);
  // The B and C tiles of state groups (TileBuf): rows g0 .. g0 + gn - 1 of B[b], C[b] over
  // the time chunk, read by the warps between the barrier K1 (K2 for bf16) that starts the
  // group and K3.
  using Tiles = TileBuf<T, kItems, kBwdGroup, kSeg>;
  const Tiles tiles(dA_lane + N * kThreads);
  // xB, xC: per warp and state of the group, its channels' dB, dC terms of each step (a row
  // of kXRow floats per warp and state: lane-major, so segment h's steps in tile layout at
  // h kRow). Written by the warps between K1/K2 and K3, summed over the channels by the
  // block between K3 and K1 of the next group.
  float* xB = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(dA_lane + N * kThreads) + Tiles::bytes());
  float* xC = xB + kR * kBwdGroup * kXRow;
  // The row slots (kBwdSlots): buffer k holds rows u, dout, z; this thread's items at
  // slot_pos. Private to the lane: its own cp.async.wait_group orders its copies before its
  // reads.
  T* const slots = reinterpret_cast<T*>(xC + kR * kBwdGroup * kXRow);
  auto slot = [&](int64_t chunk, int which) { return slots + (int(chunk & 1) * 3 + which) * kThreads * kItems; };
  float* const after_slots = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(slots) + kBwdSlotBytes<T, kSeg>);
  // Whether this lane's items of the chunk at lane offset sc go through the slots: whole
  // 16-byte vectors of aligned rows, inside L (as the forward's ahead()).
  auto slotted = [&](int64_t sc) { return kBwdSlots<kSeg> && active && ahead(p.vec, sc, kItems, L); };
  auto fill_slots = [&](int64_t chunk) {
    const int64_t sc = chunk * kSteps + sl * kItems;
    if (!slotted(sc)) return;
    constexpr int kN = Vec16<T>::kN;
#pragma unroll
    for (int v = 0; v < kItems / kN; ++v) {
      mma::cp_async_16(slot(chunk, 0) + slot_pos<T>(tid, v), p.u + row + sc + v * kN);
      mma::cp_async_16(slot(chunk, 1) + slot_pos<T>(tid, v), p.dout + row + sc + v * kN);
      if (p.z) mma::cp_async_16(slot(chunk, 2) + slot_pos<T>(tid, v), p.z + row + sc + v * kN);
    }
  };
  auto read_slot = [&](const T* at, float(&x)[kItems]) {
    constexpr int kN = Vec16<T>::kN;
#pragma unroll
    for (int v = 0; v < kItems / kN; ++v) {
      const Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(at + slot_pos<T>(tid, v));
#pragma unroll
      for (int e = 0; e < kN; ++e) x[v * kN + e] = to_f32(w.v[e]);
    }
  };
  // ecarry[n] of this channel: e entering the current chunk from the later ones. Read by
  // every lane of the segment before the __syncwarp that follows the scans of (chunk, n),
  // written by its first lane after it; read next in the previous chunk, after K1, K2.
  float* ecarry = after_slots + ch * N;
  // A2[n] = A[d, n] log2(e) of this channel: written by the segment's lanes before the
  // __syncwarp below (the first chunk's decay factors read it before any block barrier).
  float* A2s = after_slots + kR * kCh * N + ch * N;
  for (int n = 0; n < N; ++n) dA_lane[n * kThreads + tid] = 0.f;
  for (int n = sl; n < N; n += kSeg) {
    ecarry[n] = 0.f;
    A2s[n] = active ? to_f32(p.A[d * N + n]) * kLog2e : 0.f;
  }
  __syncwarp();  // A2s
  const float Dd = active && p.D ? to_f32(p.D[d]) : 0.f, bias = active && p.bias ? to_f32(p.bias[d]) : 0.f;
  double dD_acc = 0.0, db_acc = 0.0;  // the segment's first lane's

  const int64_t nchunks = (L + kSteps - 1) / kSteps;
  // cp.async groups, committed by every thread in the same order: S(c), the slots of chunk
  // c, and T(c, g), the tiles of its state group g (p.vec). S(last) and T(last, 0) here;
  // per chunk c, S(c - 1) at its start, after its own slots are read, and T of the next
  // group (the next one of the chunk, or the first of the chunk before) at the start of each
  // group, right after the wait for the group's own. So at chunk c's start the only group
  // younger than S(c) is at most T(c, 0): wait<1>; at the start of its group 0 the only one
  // younger than T(c, 0) is S(c - 1): wait<1>; at later groups none: wait<0>.
  if (nchunks > 0) fill_slots(nchunks - 1);
  mma::cp_async_commit();
  if (p.vec && nchunks > 0)
    tiles.issue(0, p.B + b * N * L, p.C + b * N * L, min(kBwdGroup, N), L, (nchunks - 1) * kSteps);
  mma::cp_async_commit();
  int grp = 0;  // state groups done so far (the tile buffer parity)
  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kSteps;
    const int64_t s = t0 + sl * kItems;
    const int64_t left = L - s;
    const int cnt = left <= 0 ? 0 : left >= kItems ? kItems : int(left);
    // Per step, over the states: ddt (the A exp(dt A) h_{t-1} part of d out/d dt, summed
    // with A log2(e) and scaled by ln(2) after the states), dub (sum_n g B), y (sum_n C h,
    // for dz). dy is the output gradient through the gate, dtu = dt u (the input term is
    // dt u B); u itself is read again after the states. The product of a lane's decay
    // factors is exp(A sum_i dt_i), one MUFU per state.
    float dtu[kItems], dt[kItems], dy[kItems], y[kItems], ddt[kItems], dub[kItems], dtsum = 0.f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) dtu[i] = dt[i] = dy[i] = y[i] = ddt[i] = dub[i] = 0.f;
    const bool here = slotted(s);
    mma::cp_async_wait<1>();  // S(c)
    if (active) {
      float u[kItems];
      load_items(p.delta + row, L, s, p.vec, dt);
      if (here) {
        read_slot(slot(c, 0), u);
        read_slot(slot(c, 1), dy);
      } else {
        load_items(p.u + row, L, s, p.vec, u);
        load_items(p.dout + row, L, s, p.vec, dy);
      }
      if (p.z) {
        float zz[kItems];
        if (here)
          read_slot(slot(c, 2), zz);
        else
          load_items(p.z + row, L, s, p.vec, zz);
#pragma unroll
        for (int i = 0; i < kItems; ++i) dy[i] *= zz[i] * sigmoid(zz[i]);
      }
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float v = dt[i] + bias, sp = softplus(v);  // no branch per step
        dt[i] = i < cnt ? (p.softplus ? sp : v) : 0.f;  // past L: u = dy = dt = 0
        dtu[i] = dt[i] * u[i];
        dtsum += dt[i];
      }
      if (c > 0) {  // this lane's items of the chunk before (the next one walked), whole inside L
        const int64_t prev = row + s - kSteps;
        prefetch_l2(p.delta + prev);
        if (!kBwdSlots<kSeg>) {
          prefetch_l2(p.u + prev);
          prefetch_l2(p.dout + prev);
          if (p.z) prefetch_l2(p.z + prev);
        }
      }
    }
    // S(c - 1), into the buffer this lane last read at the end of chunk c + 1 (those values
    // are used by now: in-order issue; the clobber keeps the compiler from moving the reads).
    asm volatile("" ::: "memory");
    if (c > 0) fill_slots(c - 1);
    mma::cp_async_commit();
    // a[i] = exp(dt_i A[d, n]): state 0's here, then state n + 1's during state n's walk, each
    // as soon as the walk has used state n's (the same values, computed earlier): the 8
    // MUFUs per state (each holds a sub-partition's special-function unit for 8 cycles) were
    // a burst at the head of every state's chain; inside the walk they issue between its
    // FMAs. The walk of the chunk's last state computes 8 that nothing uses.
    float a[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) a[i] = exp2_approx(dt[i] * A2s[0]);
    // The saved state before the chunk: t0 is a multiple of chunk.
    const float* h_saved = active && c > 0 ? p.saved + (r * p.nc + t0 / p.chunk - 1) * N : nullptr;

    for (int g0 = 0; g0 < N; g0 += kBwdGroup, ++grp) {
      const int gn = min(kBwdGroup, N - g0);
      const float* Bs = tiles.B(grp);
      const float* Cs = tiles.C(grp);
      if (p.vec) {
        if (g0 == 0)
          mma::cp_async_wait<1>();  // T(c, 0), S(c - 1) may still be in flight
        else
          mma::cp_async_wait<0>();  // T(c, g)
        __syncthreads();  // K1: copies landed; the previous group's tiles and dB/dC terms are read
        if constexpr (!Tiles::kDirect) {
          tiles.widen(gn);
          __syncthreads();  // K2
        }
        if (g0 + kBwdGroup < N)
          tiles.issue(grp + 1, p.B + (b * N + g0 + kBwdGroup) * L, p.C + (b * N + g0 + kBwdGroup) * L,
                      min(kBwdGroup, N - g0 - kBwdGroup), L, t0);
        else if (c > 0)
          tiles.issue(grp + 1, p.B + b * N * L, p.C + b * N * L, min(kBwdGroup, N), L, t0 - kSteps);
        mma::cp_async_commit();
      } else {
        __syncthreads();  // K1: the previous group's tiles and dB/dC terms are read
        fill_tile<kItems, kSeg>(tiles.B(grp), p.B + (b * N + g0) * L, gn, L, t0);
        fill_tile<kItems, kSeg>(tiles.C(grp), p.C + (b * N + g0) * L, gn, L, t0);
        __syncthreads();  // K2
      }
      if (warp_active) {
        for (int j = 0; j < gn; ++j) {
          const int n = g0 + j;
          const float A2 = A2s[n], A2next = A2s[min(n + 1, N - 1)];
          // First, so that their latencies hide behind the scans: the saved state and the e
          // entering this chunk (read before the __syncwarp that precedes its update).
          const float h_in = h_saved ? h_saved[n] : 0.f, e_in = ecarry[n];
          // The lane's maps, both directions: e -> a_t e + a_t C_t dy_t (later steps first)
          // and h -> a_t h + dt_t u_t B_t; both multiply the same a_t. The B and C items are
          // read again after the scans rather than held across them (registers).
          float rb = 0.f, fb = 0.f;
          const float prod = exp2_approx(dtsum * A2);
          {
            float Bv[kItems], Cv[kItems];
            tile_items<kItems>(Bs + j * kRow, sl, Bv);
            tile_items<kItems>(Cs + j * kRow, sl, Cv);
#pragma unroll
            for (int i = 0; i < kItems; ++i) fb = a[i] * fb + dtu[i] * Bv[i];
#pragma unroll
            for (int i = kItems - 1; i >= 0; --i) rb = a[i] * (rb + Cv[i] * dy[i]);
          }
          // Set 0: the states, forward in time; set 1: e, backward (reverse lane order).
          Pair pre[2] = {{prod, fb}, {prod, rb}}, incl[2];
          warp_scans<2u, 2, kSeg>(pre, incl);
          __syncwarp();  // ecarry[n]: every lane has read it
          if (sl == 0) ecarry[n] = incl[1].a * e_in + incl[1].b;  // lane 0 holds the chunk's map of e
          float Bv[kItems], Cv[kItems], g[kItems];
          tile_items<kItems>(Bs + j * kRow, sl, Bv);
          tile_items<kItems>(Cs + j * kRow, sl, Cv);
          // g = dL/dh_t: this step's output term plus what flows back from step t + 1.
          float e = pre[1].a * e_in + pre[1].b;
#pragma unroll
          for (int i = kItems - 1; i >= 0; --i) {
            g[i] = Cv[i] * dy[i] + e;
            e = a[i] * g[i];
          }

          // This warp's dB, dC terms go out a float4 at a time (registers).
          float* const tB = xB + (warp * kBwdGroup + j) * kXRow;
          float* const tC = xC + (warp * kBwdGroup + j) * kXRow;
          float h = pre[0].a * h_in + pre[0].b, dA_t = 0.f;
#pragma unroll
          for (int v = 0; v < kItems / 4; ++v) {
            float xb[4], xc[4];
#pragma unroll
            for (int m = 0; m < 4; ++m) {
              const int i = 4 * v + m;
              const float ah = a[i] * h;  // exp(dt A) h_{t-1}
              h = ah + dtu[i] * Bv[i];
              const float gah = g[i] * ah;
              dA_t += gah * dt[i];
              ddt[i] += gah * A2;
              dub[i] += g[i] * Bv[i];
              y[i] += Cv[i] * h;
              xb[m] = g[i] * dtu[i];
              xc[m] = dy[i] * h;
              a[i] = exp2_approx(dt[i] * A2next);  // a[i] is used up: state n + 1's
            }
            *reinterpret_cast<float4*>(tB + vec_pos<kItems>(lane, v)) = make_float4(xb[0], xb[1], xb[2], xb[3]);
            *reinterpret_cast<float4*>(tC + vec_pos<kItems>(lane, v)) = make_float4(xc[0], xc[1], xc[2], xc[3]);
          }
          dA_lane[n * kThreads + tid] += dA_t;
        }
      }
      __syncthreads();  // K3: every warp's dB/dC terms of the group are written
      // Steps q .. q + 3 of the chunk, state g0 + j: the block's channels summed in channel
      // order, then one atomic per step (one vector atomic on sm_90). A thread keeps its q
      // (kThreads is a multiple of the quads per row); consecutive threads take consecutive
      // quads. Where one pass over a group's rows would leave threads idle (quarter-warps: 16
      // quads x 4 rows for 128 threads), kSplit threads share a (row, quad), each summing
      // kPart consecutive channels and adding that with its own atomic (no more atomics per
      // step than the half-warp shape's, where a block holds half the channels).
      {
        constexpr int kQuads = kSteps / 4, kChannels = kR * kCh;
        constexpr int kSplit = kThreads / kQuads > kBwdGroup ? kThreads / (kQuads * kBwdGroup) : 1;
        constexpr int kPart = kChannels / kSplit, kRowsPerPass = kThreads / (kQuads * kSplit);
        static_assert(kThreads % (kQuads * kSplit) == 0 && kChannels % kSplit == 0 && kItems % 4 == 0,
                      "a thread keeps one quad of one lane's items and one share of the channels");
        const int q = (tid % kQuads) * 4, c0 = (tid / kQuads) % kSplit * kPart;
        const int64_t tq = t0 + q;
        const bool vec = p.vec_grad && tq + 4 <= L;
        if (tq < L && c0 < bc.count)
#pragma unroll 1  // one row's loads in flight at a time (registers: the per-step arrays are live)
          for (int j = tid / (kQuads * kSplit); j < gn; j += kRowsPerPass) {
            const int at = j * kXRow + tile_pos<kItems>(q);
            auto term = [&](const float* x, int cc) {
              return *reinterpret_cast<const float4*>(x + (cc / kCh) * kBwdGroup * kXRow + (cc % kCh) * kRow + at);
            };
            auto add = [](float4 u4, float4 v4) {
              return make_float4(u4.x + v4.x, u4.y + v4.y, u4.z + v4.z, u4.w + v4.w);
            };
            float4 sB = term(xB, c0), sC = term(xC, c0);
            if (c0 + kPart <= bc.count) {
              // Every channel of the share is real (all blocks but a tail): all of a row's loads
              // are issued before the sums, instead of one load's latency per channel; the same
              // sums in the same order.
              float4 vB[kPart], vC[kPart];
#pragma unroll
              for (int k = 1; k < kPart; ++k) vB[k] = term(xB, c0 + k);
#pragma unroll
              for (int k = 1; k < kPart; ++k) vC[k] = term(xC, c0 + k);
#pragma unroll
              for (int k = 1; k < kPart; ++k) {
                sB = add(sB, vB[k]);
                sC = add(sC, vC[k]);
              }
            } else {
#pragma unroll
              for (int k = 1; k < kPart; ++k) {
                if (c0 + k >= bc.count) break;
                sB = add(sB, term(xB, c0 + k));
                sC = add(sC, term(xC, c0 + k));
              }
            }
            const int64_t at_g = (b * N + g0 + j) * L + tq;
            if (vec) {
              atomic_add4(p.dB + at_g, sB);
              atomic_add4(p.dC + at_g, sC);
            } else {
              const float vb[4] = {sB.x, sB.y, sB.z, sB.w}, vc[4] = {sC.x, sC.y, sC.z, sC.w};
#pragma unroll
              for (int e = 0; e < 4; ++e)
                if (tq + e < L) {
                  atomicAdd(p.dB + at_g + e, vb[e]);
                  atomicAdd(p.dC + at_g + e, vc[e]);
                }
            }
          }
      }
    }
    if (!warp_active) continue;

    float u[kItems], zz[kItems], dout[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) u[i] = zz[i] = dout[i] = 0.f;
    if (active) {
      if (here) {
        read_slot(slot(c, 0), u);
        if (p.z) {
          read_slot(slot(c, 2), zz);
          read_slot(slot(c, 1), dout);
        }
      } else {
        load_items(p.u + row, L, s, p.vec, u);
        if (p.z) {
          load_items(p.z + row, L, s, p.vec, zz);
          load_items(p.dout + row, L, s, p.vec, dout);
        }
      }
    }
    float dD_t = 0.f, db_t = 0.f;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      // d out/d dt = sum_n g (A exp(dt A) h_{t-1} + B u); softplus'(v) = sigmoid(v) =
      // 1 - exp(-softplus(v)), taken from dt (accurate for small dt as well).
      const float dd = ddt[i] * kLn2 + u[i] * dub[i];
      const float dv = i < cnt ? (p.softplus ? dd * one_minus_exp_neg(dt[i]) : dd) : 0.f;
      dD_t += dy[i] * u[i];
      db_t += dv;
      if (p.z) {
        const float sz = sigmoid(zz[i]);
        zz[i] = dout[i] * (y[i] + Dd * u[i]) * sz * (1.f + zz[i] * (1.f - sz));
      }
      dub[i] = dy[i] * Dd + dt[i] * dub[i];  // du
      ddt[i] = dv;
    }
    if (active) {
      store_items(p.du + row, L, s, p.vec, dub);
      store_items(p.ddelta + row, L, s, p.vec, ddt);
      if (p.z) store_items(p.dz + row, L, s, p.vec, zz);
    }
    dD_t = segment_sum<kSeg>(dD_t);
    db_t = segment_sum<kSeg>(db_t);
    if (sl == 0) {
      dD_acc += double(dD_t);
      db_acc += double(db_t);
    }
  }
  __syncwarp();  // dA_lane: every lane's last additions before the segment's reads
  if (!active) return;
  for (int n = sl; n < N; n += kSeg) {
    const float* terms = dA_lane + n * kThreads + (tid - sl);  // the segment's lanes
    double sum = 0.0;
    for (int k = 0; k < kSeg; ++k) sum += double(terms[k]);
    p.part_dA[r * N + n] = sum;
  }
  if (sl == 0) {
    p.part_dD[r] = dD_acc;
    p.part_db[r] = db_acc;
  }
}

template <typename F> void dispatch_f32_bf16(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: HYMBA_FAIL(op, ": the blocked scan takes f32 or bf16, got ", dtype_name(t));
  }
}

using scan_detail::ptr_or_null;

// Whether every row of the (B, X, L) tensors at these pointers starts 16-byte aligned.
template <typename T> bool rows_aligned(int64_t L, std::initializer_list<const void*> ptrs) {
  if (L % Vec16<T>::kN != 0) return false;
  for (const void* q : ptrs)
    if (q && !aligned16(q)) return false;
  return true;
}

// One block per kR channels of a batch row.
unsigned channel_blocks(int64_t Bn, int64_t Dn, int cpb) {
  const int64_t blocks = Bn * ceil_div(Dn, cpb);
  HYMBA_CHECK(blocks <= int64_t(INT32_MAX), "selective_scan (blocked): ", Bn, " x ", Dn,
              " channels exceed the grid limit");
  return unsigned(blocks);
}

// Kernels above the default 48 KiB of dynamic shared memory must opt in per function.
template <typename Kernel> void allow_smem(Kernel kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    HYMBA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), op, ": ",
                     bytes, " bytes of shared memory");
}

// The inputs, contiguous (copied only where they are not); they must outlive the launches.
struct Inputs : scan_detail::ContiguousInputs {
  using ContiguousInputs::ContiguousInputs;
  template <typename T> Params<T> params(int64_t Dn, int64_t L, int64_t N, int64_t chunk, bool softplus) const {
    Params<T> p{};
    p.u = ptr_of<const T>(u);
    p.delta = ptr_of<const T>(delta);
    p.A = ptr_of<const T>(A);
    p.B = ptr_of<const T>(B);
    p.C = ptr_of<const T>(C);
    p.D = ptr_or_null<const T>(D);
    p.z = ptr_or_null<const T>(z);
    p.bias = ptr_or_null<const T>(bias);
    p.Dn = Dn;
    p.L = L;
    p.N = N;
    p.chunk = chunk;
    p.nc = ceil_div(L, chunk);
    p.dblocks = ceil_div(Dn, kR);
    p.cpb = kR;
    p.softplus = softplus;
    return p;
  }
};

}  // namespace

bool supports(DType dt, int64_t N, int64_t chunk) {
  return (dt == DType::F32 || dt == DType::BF16) && N >= 1 && N <= kMaxN && chunk >= 1 && kBwdSteps % chunk == 0;
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
  dispatch_f32_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    Params<T> p = in.params<T>(Dn, L, N, chunk, delta_softplus);
    p.out = ptr_of<T>(out);
    p.last = ptr_of<T>(last);
    p.states = ptr_of<float>(states);
    p.vec = rows_aligned<T>(L, {p.u, p.delta, p.B, p.C, p.z, p.out});
    auto launch = [&](auto shape) {
      using Shape = decltype(shape);
      const size_t smem = forward_smem<T, Shape>(N);
      allow_smem(forward_kernel<T, Shape>, smem, op);
      p.cpb = kR * (32 / Shape::kSeg);
      p.dblocks = ceil_div(Dn, p.cpb);
      forward_kernel<T, Shape><<<channel_blocks(Bn, Dn, p.cpb), kThreads, smem, stream()>>>(p);
      HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()), ", ", smem,
                              " bytes of shared memory, forward shape ", impl_name(scan_forward()));
    };
    switch (scan_forward()) {
      case ScanForward::Steps16: launch(FwdSteps16{}); break;
      case ScanForward::Steps8States2: launch(FwdSteps8States2{}); break;
      case ScanForward::Steps8Blocks4: launch(FwdSteps8Blocks4{}); break;
      case ScanForward::Steps16Half: launch(FwdSteps16Half{}); break;
      case ScanForward::Steps16Quarter: launch(FwdSteps16Quarter{}); break;
      case ScanForward::Steps16HalfGroup8: launch(FwdSteps16HalfGroup8{}); break;
    }
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
  dispatch_f32_bf16(u_in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (Bn * Dn > 0) {
      Params<T> p = in.params<T>(Dn, L, N, chunk, delta_softplus);
      p.dout = ptr_of<const T>(dout);
      p.saved = ptr_of<const float>(states);
      p.du = ptr_of<T>(gr.du);
      p.ddelta = ptr_of<T>(gr.ddelta);
      p.dz = ptr_or_null<T>(gr.dz);
      p.dB = ptr_of<float>(dB);
      p.dC = ptr_of<float>(dC);
      p.part_dA = ptr_of<double>(part_dA);
      p.part_dD = ptr_of<double>(part_dD);
      p.part_db = ptr_of<double>(part_db);
      p.vec = rows_aligned<T>(L, {p.u, p.delta, p.B, p.C, p.z, p.dout, p.du, p.ddelta, p.dz});
      p.vec_grad = rows_aligned<float>(L, {p.dB, p.dC});
      auto launch = [&](auto seg) {
        constexpr int kSeg = decltype(seg)::value;
        p.cpb = kR * (32 / kSeg);
        p.dblocks = ceil_div(Dn, p.cpb);
        const size_t smem = backward_smem<T, kSeg>(N);
        allow_smem(backward_kernel<T, kSeg>, smem, op);
        backward_kernel<T, kSeg><<<channel_blocks(Bn, Dn, p.cpb), kThreads, smem, stream()>>>(p);
        HYMBA_CUDA_CHECK_LAUNCH(op, " u ", u_in.meta_str(), ", A ", shape_str(A_in.shape()), ", ", smem,
                                " bytes of shared memory, ", kSeg, " lanes per channel");
      };
      // A chunk of kSeg x kBwdItems steps must start at a saved state: the requested lanes per
      // channel, or more until the save interval divides the chunk (32 always works:
      // supports()).
      int seg = scan_backward() == ScanBackward::Steps8Quarter ? 8
                : scan_backward() == ScanBackward::Steps8Half  ? 16
                                                               : 32;
      while (seg < 32 && (seg * kBwdItems) % chunk != 0) seg *= 2;
      if (seg == 8)
        launch(std::integral_constant<int, 8>{});
      else if (seg == 16)
        launch(std::integral_constant<int, 16>{});
      else
        launch(std::integral_constant<int, 32>{});
    }
  });
  scan_detail::reduce_param_grads(part_dA, part_dD, part_db, gr, op);
  gr.dB = u_in.dtype() == DType::F32 ? dB : dB.to(u_in.dtype());
  gr.dC = u_in.dtype() == DType::F32 ? dC : dC.to(u_in.dtype());
  return gr;
}

}  // namespace hymba::kernels::cuda::scan_blocked
