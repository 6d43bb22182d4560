// CPU emulation of the CUDA features our fast kernels use (tests/cuda_emu; see README.md).
// One std::thread per CUDA thread, blocks run one after another; std::barrier for
// __syncthreads and for every warp collective (shuffles, __syncwarp, and in attn/ mma and
// ldmatrix), so all 32 lanes exchange at the same point as on the hardware. Shared memory
// starts as 0xFF bytes (NaN) and is bounds-checked by the warp collectives; outputs made with
// empty() are NaN-filled (prep.py rewrites them to emu_empty_nan), so unwritten elements show.
// Cannot check: true concurrency and memory ordering (the OS schedules threads; a missing
// __syncthreads is caught only when the interleaving exposes it, and shared memory is never
// stale), warp-synchronous code without __syncwarp, registers, occupancy, launch limits, speed.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <algorithm>
#include "core/half.h"
#include "core/tensor.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)
#define __align__(x)

struct __nv_bfloat16 { uint16_t x; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct float2_ { float x, y; };
using float2 = float2_;
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline __nv_bfloat16 __float2bfloat16(float f) { return {hymba::bf16::from_float(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return float(hymba::bf16(std::bit_cast<hymba::bf16>(b.x))); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

struct Dim3 { unsigned x = 0, y = 1, z = 1; };
inline thread_local Dim3 emu_threadIdx, emu_blockIdx;
inline Dim3 emu_gridDim, emu_blockDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define gridDim emu_gridDim
#define blockDim emu_blockDim

struct WarpCtx {
  std::barrier<> bar{32};
  const void* ptr[32];
  uint32_t a[32][4], b[32][2];
  float c[32][4];
  float f[32];
  double dd[32];
};
struct EmuBlock {
  std::barrier<> bar;
  std::vector<std::unique_ptr<WarpCtx>> warps;
  std::vector<unsigned char> smem;
  size_t smem_bytes;
  explicit EmuBlock(int threads, int smem_bytes_)
      : bar(threads), smem(size_t(smem_bytes_), 0xFF), smem_bytes(size_t(smem_bytes_)) {
    for (int i = 0; i < threads / 32; ++i) warps.push_back(std::make_unique<WarpCtx>());
  }
};
inline thread_local EmuBlock* emu_blk;
inline void __syncthreads() { emu_blk->bar.arrive_and_wait(); }
inline unsigned char* emu_smem() { return emu_blk->smem.data(); }
inline WarpCtx& emu_warp() { return *emu_blk->warps[threadIdx.x / 32]; }
inline int emu_lane() { return int(threadIdx.x % 32); }
// [p, p + n) inside the block's dynamic shared memory.
inline void emu_check_smem(const void* p, size_t n, const char* what) {
  const auto o = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(emu_smem());
  if (o + n > emu_blk->smem_bytes) { std::fprintf(stderr, "%s: shared access out of bounds (offset %zu + %zu > %zu)\n", what, size_t(o), n, emu_blk->smem_bytes); std::abort(); }
}

inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp().bar.arrive_and_wait(); }

// Every lane publishes its value, then reads its source lane's: all 32 lanes exchange at the
// same point, as on the hardware (a shuffle of a lane out of range returns its own value).
template <typename F>
inline float emu_shfl(float v, F src_of) {
  WarpCtx& w = emu_warp();
  const int l = emu_lane();
  w.f[l] = v;
  w.bar.arrive_and_wait();
  const int s = src_of(l);
  const float r = (s >= 0 && s < 32) ? w.f[s] : v;
  w.bar.arrive_and_wait();
  return r;
}
// width (a power of 2 up to 32) splits the warp into segments of width lanes, as in CUDA: up
// and down stay inside the lane's segment (a source outside it gives the lane's own value),
// idx reads lane src % width of the segment.
inline float __shfl_xor_sync(unsigned, float v, int off, int width = 32) {
  return emu_shfl(v, [&](int l) { return (l ^ off) / width == l / width ? l ^ off : l; });
}
inline float __shfl_up_sync(unsigned, float v, unsigned d, int width = 32) {
  return emu_shfl(v, [&](int l) { return l % width >= int(d) ? l - int(d) : l; });
}
inline float __shfl_down_sync(unsigned, float v, unsigned d, int width = 32) {
  return emu_shfl(v, [&](int l) { return l % width + int(d) < width ? l + int(d) : l; });
}
inline float __shfl_sync(unsigned, float v, int src, int width = 32) {
  return emu_shfl(v, [&](int l) { return l / width * width + (src & (width - 1)); });
}
inline double __shfl_xor_sync(unsigned, double v, int off) {
  WarpCtx& w = emu_warp();
  const int l = emu_lane();
  w.dd[l] = v;
  w.bar.arrive_and_wait();
  const double r = w.dd[l ^ off];
  w.bar.arrive_and_wait();
  return r;
}

inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }

// Outputs are allocated NaN-filled (0xFF bytes: NaN in f32, f64 and bf16), so an element a
// kernel never writes shows up as NaN.
inline hymba::Tensor emu_empty_nan(const hymba::Shape& s, const hymba::TensorOptions& o) {
  hymba::Tensor t = hymba::empty(s, o);
  if (t.numel() > 0) std::memset(t.data_ptr(), 0xFF, size_t(t.numel()) * hymba::dtype_size(t.dtype()));
  return t;
}

void emu_cp_async_check_drained();  // attn/kernels/cuda/mma.cuh, or a no-op in scan/

template <typename K, typename... P>
void emu_launch(K kernel, unsigned grid, int threads, size_t smem, const P&... p) {
  emu_gridDim.x = grid;
  emu_blockDim.x = unsigned(threads);
  for (unsigned b = 0; b < grid; ++b) {
    EmuBlock blk(threads, int(smem));
    std::vector<std::thread> ts;
    ts.reserve(size_t(threads));
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        emu_threadIdx.x = unsigned(t);
        emu_blockIdx.x = b;
        emu_blk = &blk;
        kernel(p...);
        emu_cp_async_check_drained();
      });
    for (auto& t : ts) t.join();
  }
}
