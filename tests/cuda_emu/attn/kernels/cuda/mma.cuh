// Emulated kernels/cuda/mma.cuh (tests/cuda_emu): the same API, with the semantics of the
// PTX ISA for mma.sync m16n8k16 (bf16 in, fp32 accumulate), ldmatrix .x4 (plain and .trans;
// 16-byte aligned rows inside the block's shared memory, checked) and cp.async, modelled as
// asynchronous: at issue the destination becomes NaN, and the copy lands only at the
// cp_async_wait<n> that retires its group, so a stage read before its wait (and, for other
// threads' copies, the barrier after it) reads NaN. Copies still in flight when a thread
// exits abort the run (EMU_NO_DRAIN_CHECK=1 skips that check).
// The pure index/arithmetic helpers (kSmemPad, a_addr, b_addr_nk, b_addr_kn, c_to_a,
// quad_max, quad_sum) are not re-implemented: prep.py copies them from the real mma.cuh into
// mma_addr.inc. Cannot check: the fp32 accumulation order inside one mma (summed in k order
// here), register pressure, bank conflicts, speed.
#pragma once
#include "emu.h"
namespace hymba::kernels::cuda::mma {
inline uint16_t bits_of(const void* row, int col) { return static_cast<const uint16_t*>(row)[col]; }
inline float bf(uint32_t reg, int half) { return float(std::bit_cast<hymba::bf16>(uint16_t(half ? reg >> 16 : reg & 0xFFFF))); }

inline void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  WarpCtx& w = emu_warp();
  const int l = emu_lane();
  for (int i = 0; i < 4; ++i) w.a[l][i] = a[i];
  for (int i = 0; i < 2; ++i) w.b[l][i] = b[i];
  w.bar.arrive_and_wait();
  const int g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float s = 0;
    for (int k = 0; k < 16; ++k) {
      const int al = (row % 8) * 4 + (k % 8) / 2, areg = (row >= 8) + 2 * (k >= 8);
      const int bl = col * 4 + (k % 8) / 2, breg = k >= 8;
      s += bf(w.a[al][areg], k % 2) * bf(w.b[bl][breg], k % 2);
    }
    c[e] += s;
  }
  w.bar.arrive_and_wait();
}

inline void ldmatrix_impl(uint32_t (&r)[4], const void* p, bool trans) {
  WarpCtx& w = emu_warp();
  const int l = emu_lane();
  if ((reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(emu_smem())) % 16 != 0) { fprintf(stderr, "ldmatrix misaligned\n"); abort(); }
  emu_check_smem(p, 16, "ldmatrix");
  w.ptr[l] = p;
  w.bar.arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const void* row = w.ptr[8 * i + l / 4];
      lo = bits_of(row, 2 * (l % 4));
      hi = bits_of(row, 2 * (l % 4) + 1);
    } else {
      lo = bits_of(w.ptr[8 * i + 2 * (l % 4)], l / 4);
      hi = bits_of(w.ptr[8 * i + 2 * (l % 4) + 1], l / 4);
    }
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  w.bar.arrive_and_wait();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_impl(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix_impl(r, p, true); }


inline uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(hymba::bf16::from_float(lo)) | (uint32_t(hymba::bf16::from_float(hi)) << 16);
}
// ex2.approx.ftz.f32 (PTX ISA): 2^x with subnormal inputs and results flushed to zero (sign kept);
// the hardware's result is within 2 ulp of this one.
inline float exp2_approx(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = std::copysign(0.f, x);
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? std::copysign(0.f, y) : y;
}
// kSmemPad and the address / fragment / quad helpers, copied from the real mma.cuh by prep.py.
#include "mma_addr.inc"
// cp.async, modelled as asynchronous: at issue the destination becomes NaN (its content is
// undefined until the copy lands) and the copy lands only at the cp_async_wait that retires
// its group. A read of a stage before its wait (+ barrier, for other threads' copies) sees NaN.
struct EmuCp { void* dst; const void* src; int bytes; };
inline thread_local std::vector<EmuCp> emu_cp_open;
inline thread_local std::vector<std::vector<EmuCp>> emu_cp_groups;
inline void cp_async_16(void* smem, const void* gmem, int src_bytes = 16) {
  if ((reinterpret_cast<uintptr_t>(smem) - reinterpret_cast<uintptr_t>(emu_smem())) % 16 != 0 || reinterpret_cast<uintptr_t>(gmem) % 16 != 0) { fprintf(stderr, "cp.async misaligned\n"); abort(); }
  emu_check_smem(smem, 16, "cp.async");
  std::memset(smem, 0xFF, 16);
  emu_cp_open.push_back({smem, gmem, src_bytes});
}
inline void cp_async_commit() { emu_cp_groups.push_back(std::move(emu_cp_open)); emu_cp_open.clear(); }
template <int n> inline void cp_async_wait() {
  while (emu_cp_groups.size() > size_t(n)) {
    for (const EmuCp& c : emu_cp_groups.front()) {
      std::memset(c.dst, 0, 16);
      std::memcpy(c.dst, c.src, size_t(c.bytes));
    }
    emu_cp_groups.erase(emu_cp_groups.begin());
  }
}
}  // namespace hymba::kernels::cuda::mma

inline void emu_cp_async_check_drained() {
  using namespace hymba::kernels::cuda::mma;
  if (!emu_cp_open.empty() || !emu_cp_groups.empty()) {
    size_t n = emu_cp_open.size();
    for (auto& g : emu_cp_groups) n += g.size();
    if (n && !getenv("EMU_NO_DRAIN_CHECK")) { fprintf(stderr, "cp.async: %zu copies still in flight at kernel exit\n", n); abort(); }
  }
  emu_cp_open.clear(); emu_cp_groups.clear();
}
