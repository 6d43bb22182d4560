// CPU selective scan. The sequence kernels vectorize across channels: a lane group of 16
// channels of one b advances one step at a time with one channel per SIMD lane, so C.h and
// the dt/u gradients need no horizontal sums and B_t, C_t are scalars broadcast to the group
// (see "lane groups" below). B and C are transposed once to (B, L, N) so the N states of one
// step are contiguous. The one-step kernel keeps a row per (b, d), vectorized over N.
//
// The selects in exp_fast vectorize only when trapping math is off (see kernels/cpu/activation.cpp).
#pragma GCC optimize("no-trapping-math")
#include "kernels/selective_scan.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/parallel.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace hymba::kernels::cpu {
namespace {

// Work goes to threads in chunks of at least this many state updates.
constexpr int64_t kGrain = 1 << 15;

// exp for any f32 argument without calls or branches, so the state loop vectorizes: the
// Cephes range reduction and polynomial (within 2 ulp of expf). Arguments below -87 give 0,
// above 88 give exp(88) (not inf; a state that large is already meaningless).
inline float exp_fast(float x) {
  const bool tiny = x < -87.0f;
  x = std::min(std::max(x, -87.0f), 88.0f);  // min/max: one instruction each, NaN kept
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t biased = tiny ? 0 : static_cast<int32_t>(n) + 127;
  return p * std::bit_cast<float>(biased << 23);
}
inline double exp_fast(double x) { return std::exp(x); }

// log of a positive normal f32 without calls or branches (Cephes logf: frexp by bit
// manipulation and a degree-9 polynomial, within 2 ulp), so per-step loops vectorize.
inline float log_fast(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = float(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// softplus with PyTorch's threshold: v itself above 20, where log1p(exp(v)) == v in fp32;
// else max(v, 0) + log1p(exp(-|v|)), with log1p(w) = log(1 + w) * w / ((1 + w) - 1), which
// keeps full precision for tiny w. Branch-free in f32 (the per-step loops vectorize).
inline float softplus(float v) {
  const float w = exp_fast(-std::abs(v));
  const float u = 1.0f + w;
  const float l1p = u == 1.0f ? w : log_fast(u) * (w / (u - 1.0f));
  const float r = std::max(v, 0.0f) + l1p;
  return v > 20.0f ? v : r;
}
inline double softplus(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }
// sigmoid through exp(-|v|), which never overflows.
inline float sigmoid(float v) {
  const float e = exp_fast(-std::abs(v));
  const float inv = 1.0f / (1.0f + e);
  return v >= 0.0f ? inv : e * inv;
}
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
template <typename T>
inline T softplus_grad(T v) {
  return v > T(20) ? T(1) : sigmoid(v);
}

// One step of one (b, d) row for the one-step kernel: h <- exp(dt*A) h + dt*u*B, returns C.h.
// Per state it is group_update's arithmetic, so stepping reproduces the scan's states.
template <typename T>
inline T state_update(T* __restrict h, const T* __restrict A, const T* __restrict Bt, const T* __restrict Ct, T dt,
                      T dtu, int64_t N) {
  T y = 0;
#pragma omp simd reduction(+ : y)
  for (int64_t n = 0; n < N; ++n) {
    const T a = exp_fast(dt * A[n]);
    h[n] = a * h[n] + dtu * Bt[n];
    y += Ct[n] * h[n];
  }
  return y;
}

using scan_check::ScanDims;
using scan_check::expect_like;
using scan_check::expect_shape;

bool cpu_scan_dtype(DType t) { return t == DType::F32 || t == DType::F64; }

ScanDims check_inputs(const char* op, bool seq, const Tensor& u, const Tensor& delta, const Tensor& A,
                      const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias) {
  return scan_check::check_inputs(op, seq, u, delta, A, B, C, D, z, delta_bias, cpu_scan_dtype,
                                  "here, expected f32 or f64");
}

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
// Buffer sizes.
inline size_t sz(int64_t n) { return static_cast<size_t>(n); }
// (B, N, L) -> contiguous (B, L, N).
Tensor steps_major(const Tensor& t) { return t.permute({0, 2, 1}).contiguous(); }

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}


// The sequence kernels run G = kLanes channels of one b at a time, one channel per SIMD lane:
// the loops over the lanes vectorize with no horizontal sums (C.h, dt and u gradients are
// per channel), and per-step scalars are loaded once per group instead of once per channel.
// Per-step inputs are transposed into (step, lane) tiles; per-state arrays are (state, lane).
// Channels past D fill the last group with zero inputs (u = dout = dt = 0, A = 0), which keeps
// their state and every gradient they touch at exactly 0.
constexpr int64_t kLanes = 16;
// Steps per tile of the forward's transposed inputs (4 tiles of kTile x kLanes stay in L1).
constexpr int64_t kTile = 64;

int64_t lane_groups(int64_t Dn) { return (Dn + kLanes - 1) / kLanes; }

struct LaneGroup {
  int64_t b, d0, count, Dn;
  int64_t r(int64_t g) const { return b * Dn + d0 + g; }  // (b, d) row of lane g
  int64_t row(int64_t g, int64_t L) const { return r(g) * L; }
};

// Group w of the (b, group) grid with ng groups per b.
LaneGroup lane_group(int64_t w, int64_t ng, int64_t Dn) {
  const int64_t b = w / ng, d0 = (w % ng) * kLanes;
  return {b, d0, std::min(kLanes, Dn - d0), Dn};
}

// AT (N, lanes) = A of the group's channels (0 in padding lanes); Dv, bv (lanes) likewise for
// D and delta_bias.
template <typename T>
void load_group_params(const T* pA, const T* pD, const T* pbias, const LaneGroup& lg, int64_t N, T* AT, T* Dv,
                       T* bv) {
  for (int64_t g = 0; g < kLanes; ++g) {
    const bool live = g < lg.count;
    for (int64_t n = 0; n < N; ++n) AT[n * kLanes + g] = live ? pA[(lg.d0 + g) * N + n] : T(0);
    Dv[g] = live && pD ? pD[lg.d0 + g] : T(0);
    bv[g] = live && pbias ? pbias[lg.d0 + g] : T(0);
  }
}

// Prefetches for writing steps [t0, t0 + len) of the group's rows of a (B, D, L) output: the
// rows are L apart, too many streams for the hardware prefetcher.
template <typename T>
void prefetch_rows_for_write(const T* x, const LaneGroup& lg, int64_t L, int64_t t0, int64_t len) {
  if (!x || len <= 0) return;
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  for (int64_t g = 0; g < lg.count; ++g) {
    const T* p = x + lg.row(g, L) + t0;
    for (int64_t i = 0; i < len; i += kLine) __builtin_prefetch(p + i, 1);
    __builtin_prefetch(p + len - 1, 1);
  }
}

#if defined(__AVX512F__)
// In-register transpose of a 16 x 16 f32 tile (r[i] = row i -> r[j] = column j): 32-bit and
// 64-bit unpacks within 128-bit lanes, then two rounds of 128-bit lane shuffles.
// (The zero-masked forms with all lanes on compile to the plain instructions; the plain
// intrinsics trip GCC 12's -Wmaybe-uninitialized on their undefined pass-through operand.)
inline void transpose16(__m512 r[16]) {
  constexpr __mmask16 kAll = 0xFFFF;
  constexpr __mmask8 kAll8 = 0xFF;
  __m512 t[16], q[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_maskz_unpacklo_ps(kAll, r[2 * k], r[2 * k + 1]);      // a0 b0 a1 b1 per 128-bit lane
    t[2 * k + 1] = _mm512_maskz_unpackhi_ps(kAll, r[2 * k], r[2 * k + 1]);  // a2 b2 a3 b3
  }
  for (int k = 0; k < 4; ++k) {
    const __m512d t0 = _mm512_castps_pd(t[4 * k]), t1 = _mm512_castps_pd(t[4 * k + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * k + 2]), t3 = _mm512_castps_pd(t[4 * k + 3]);
    // q[4k + m], 128-bit lane j: column 4j + m of rows 4k .. 4k + 3.
    q[4 * k] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, t0, t2));
    q[4 * k + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, t0, t2));
    q[4 * k + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, t1, t3));
    q[4 * k + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, t1, t3));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_maskz_shuffle_f32x4(kAll, q[m], q[4 + m], 0x44);  // q[m].l0 l1, q[4+m].l0 l1
    const __m512 v1 = _mm512_maskz_shuffle_f32x4(kAll, q[m], q[4 + m], 0xEE);  // lanes 2, 3
    const __m512 v2 = _mm512_maskz_shuffle_f32x4(kAll, q[8 + m], q[12 + m], 0x44);
    const __m512 v3 = _mm512_maskz_shuffle_f32x4(kAll, q[8 + m], q[12 + m], 0xEE);
    r[m] = _mm512_maskz_shuffle_f32x4(kAll, v0, v2, 0x88);       // lane 0 of q[m], q[4+m], q[8+m], q[12+m]
    r[4 + m] = _mm512_maskz_shuffle_f32x4(kAll, v0, v2, 0xDD);   // lane 1
    r[8 + m] = _mm512_maskz_shuffle_f32x4(kAll, v1, v3, 0x88);   // lane 2
    r[12 + m] = _mm512_maskz_shuffle_f32x4(kAll, v1, v3, 0xDD);  // lane 3
  }
}
#endif

// A (B, D, L) input read in place, whatever its strides: the mixer hands the scan transposed
// views of (B, L, D) tensors, whose steps are already (step, lane) tiles, so copying them
// into (B, D, L) first would be a transpose there and back.
template <typename T>
struct Rows {
  const T* p = nullptr;
  int64_t sb = 0, sd = 0, st = 0;
  explicit operator bool() const { return p != nullptr; }
};
template <typename T>
Rows<T> rows_of(const Tensor& t) {
  if (!t.defined()) return {};
  return {t.data<T>(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

// dst (len, lanes) = steps [t0, t0 + len) of the group's rows of x, 0 in padding lanes.
// Channel-contiguous inputs copy straight into the tile; step-contiguous ones are transposed
// 16 x 16 at a time.
template <typename T>
void load_tile(const Rows<T>& x, const LaneGroup& lg, int64_t t0, int64_t len, T* __restrict dst) {
  const T* base = x.p + lg.b * x.sb + lg.d0 * x.sd;
  if (x.sd == 1 && lg.count == kLanes) {
    for (int64_t i = 0; i < len; ++i) {
      const T* __restrict src = base + (t0 + i) * x.st;
      T* __restrict d = dst + i * kLanes;
#pragma omp simd
      for (int64_t g = 0; g < kLanes; ++g) d[g] = src[g];
    }
    return;
  }
  int64_t i0 = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && kLanes == 16) {
    if (x.st == 1 && lg.count == kLanes) {
      for (; i0 + 16 <= len; i0 += 16) {
        __m512 r[16];
        for (int g = 0; g < 16; ++g) r[g] = _mm512_loadu_ps(base + g * x.sd + t0 + i0);
        transpose16(r);
        for (int k = 0; k < 16; ++k) _mm512_storeu_ps(dst + (i0 + k) * kLanes, r[k]);
      }
    }
  }
#endif
  for (int64_t g = 0; g < kLanes; ++g) {
    const T* src = g < lg.count ? base + g * x.sd + t0 * x.st : nullptr;
    for (int64_t i = i0; i < len; ++i) dst[i * kLanes + g] = src ? src[i * x.st] : T(0);
  }
}

// Prefetches steps [t0, t0 + len) of the group's rows of a step-contiguous input (other
// layouts are read as a few long strided streams, which the hardware prefetcher follows).
template <typename T>
void prefetch_rows(const Rows<T>& x, const LaneGroup& lg, int64_t t0, int64_t len) {
  if (!x || x.st != 1 || len <= 0) return;
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  for (int64_t g = 0; g < lg.count; ++g) {
    const T* p = x.p + lg.b * x.sb + (lg.d0 + g) * x.sd + t0;
    for (int64_t i = 0; i < len; i += kLine) __builtin_prefetch(p + i, 0);
    __builtin_prefetch(p + len - 1, 0);
  }
}

// The inverse of load_tile for the live lanes of a (B, D, L) contiguous x: steps [t0, t0 + len)
// of the group's rows.
template <typename T>
void store_tile(const T* __restrict src, const LaneGroup& lg, int64_t L, int64_t t0, int64_t len, T* __restrict x) {
  int64_t i0 = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && kLanes == 16) {
    if (lg.count == kLanes) {
      for (; i0 + 16 <= len; i0 += 16) {
        __m512 r[16];
        for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(src + (i0 + k) * kLanes);
        transpose16(r);
        for (int g = 0; g < 16; ++g) _mm512_storeu_ps(x + lg.row(g, L) + t0 + i0, r[g]);
      }
    }
  }
#endif
  for (int64_t g = 0; g < lg.count; ++g) {
    T* dst = x + lg.row(g, L) + t0;
    for (int64_t i = i0; i < len; ++i) dst[i] = src[i * kLanes + g];
  }
}

// In (step, lane) tiles of n steps: dt = softplus(delta + bias) (or delta + bias) in place,
// and with sg, softplus'(delta + bias).
template <typename T>
void lane_deltas(T* __restrict dt, T* __restrict sg, const T* __restrict bias, bool use_softplus, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T* d = dt + i * kLanes;
    T* s = sg ? sg + i * kLanes : nullptr;
    if (use_softplus) {
      if (s) {
#pragma omp simd
        for (int64_t g = 0; g < kLanes; ++g) s[g] = softplus_grad(d[g] + bias[g]);
      }
#pragma omp simd
      for (int64_t g = 0; g < kLanes; ++g) d[g] = softplus(d[g] + bias[g]);
    } else {
#pragma omp simd
      for (int64_t g = 0; g < kLanes; ++g) d[g] = d[g] + bias[g];
    }
  }
}

// One step of a lane group: hn = exp(dt A) hp + dt u B (hn may be hp). The forward
// (kSaveA = false) also writes y = C.h + D u; the backward's recompute (kSaveA = true) keeps
// a = exp(dt A) instead. One function, so both compute bitwise the same states.
template <typename T, int64_t NC, bool kSaveA>
inline void group_update(const T* hp, T* hn, const T* __restrict AT, const T* __restrict Bt,
                         const T* __restrict Ct, const T* __restrict dt, const T* __restrict u,
                         const T* __restrict Dv, T* __restrict y, T* __restrict a_out, int64_t n_any) {
  constexpr int64_t G = kLanes;
  const int64_t N = NC > 0 ? NC : n_any;
  alignas(64) T dtu[G], acc[G];
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) {
    dtu[g] = dt[g] * u[g];
    acc[g] = T(0);
  }
  for (int64_t n = 0; n < N; ++n) {
    const T bn = Bt[n];
    const T* An = AT + n * G;
    const T* hpn = hp + n * G;
    T* hnn = hn + n * G;
    if constexpr (kSaveA) {
      T* an = a_out + n * G;
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const T a = exp_fast(dt[g] * An[g]);
        an[g] = a;
        hnn[g] = a * hpn[g] + dtu[g] * bn;
      }
    } else {
      const T cn = Ct[n];
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) {
        const T a = exp_fast(dt[g] * An[g]);
        const T hv = a * hpn[g] + dtu[g] * bn;
        hnn[g] = hv;
        acc[g] += cn * hv;
      }
    }
  }
  if constexpr (!kSaveA) {
#pragma omp simd
    for (int64_t g = 0; g < G; ++g) y[g] = acc[g] + Dv[g] * u[g];
  }
}

// Reverse step t of a lane group. h, hp: the states after and before step t; a = exp(dt A)
// of step t; dh: the gradient flowing into h from step t + 1 (updated to that of hp). Adds
// the step's dA to dAc, its dB/dC lane partials to accB/accC, its dD and ddelta_bias to
// dD_chunk/db_chunk; writes du, ddelta (dd) and, with z, dz.
template <typename T, int64_t NC>
inline void group_reverse_step(const T* __restrict h, const T* __restrict hp, const T* __restrict a,
                               const T* __restrict AT, const T* __restrict Dv, const T* __restrict Bt,
                               const T* __restrict Ct, const T* __restrict dt, const T* __restrict u,
                               const T* __restrict dout, const T* __restrict z, const T* __restrict sz,
                               const T* __restrict sg, T* __restrict dh, T* __restrict dAc, T* __restrict accB,
                               T* __restrict accC, T* __restrict dD_chunk, T* __restrict db_chunk,
                               T* __restrict du, T* __restrict dd, T* __restrict dz, int64_t n_any) {
  constexpr int64_t G = kLanes;
  const int64_t N = NC > 0 ? NC : n_any;
  alignas(64) T dy[G], dtu[G], ddt[G], dub[G];
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) {
    dy[g] = dout[g];
    dtu[g] = dt[g] * u[g];
    ddt[g] = T(0);
    dub[g] = T(0);
  }
  if (z) {
    alignas(64) T y[G] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T cn = Ct[n];
      const T* hn = h + n * G;
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) y[g] += cn * hn[g];
    }
#pragma omp simd
    for (int64_t g = 0; g < G; ++g) {
      const T yv = y[g] + Dv[g] * u[g];
      dz[g] = dy[g] * yv * sz[g] * (T(1) + z[g] * (T(1) - sz[g]));
      dy[g] *= z[g] * sz[g];
    }
  }
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) dD_chunk[g] += dy[g] * u[g];
  for (int64_t n = 0; n < N; ++n) {
    const T cn = Ct[n], bn = Bt[n];
    const int64_t o = n * G;
#pragma omp simd
    for (int64_t g = 0; g < G; ++g) {
      accC[o + g] += dy[g] * h[o + g];
      const T gn = dh[o + g] + dy[g] * cn;  // total gradient of h_t
      const T ahp = a[o + g] * hp[o + g];
      ddt[g] += gn * (AT[o + g] * ahp + bn * u[g]);
      dAc[o + g] += gn * dt[g] * ahp;
      accB[o + g] += gn * dtu[g];
      dub[g] += gn * bn;
      dh[o + g] = gn * a[o + g];
    }
  }
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) {
    du[g] = dy[g] * Dv[g] + dt[g] * dub[g];
    const T dv = sg ? ddt[g] * sg[g] : ddt[g];
    dd[g] = dv;
    db_chunk[g] += dv;
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> selective_scan_forward(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                                                          const Tensor& B_in, const Tensor& C_in, const Tensor& D_in,
                                                          const Tensor& z_in, const Tensor& bias_in,
                                                          bool delta_softplus, int64_t chunk) {
  const char* op = "selective_scan";
  const ScanDims dm = check_inputs(op, true, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  HYMBA_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  const int64_t nc = (dm.L + chunk - 1) / chunk;
  const TensorOptions opts(u_in.dtype(), u_in.device());
  Tensor out = empty({dm.B, dm.D, dm.L}, opts);
  Tensor last = empty({dm.B, dm.D, dm.N}, opts);
  Tensor states = empty({dm.B, dm.D, nc, dm.N}, opts);
  Tensor A = contig(A_in), D = contig(D_in), bias = contig(bias_in);
  Tensor Bt = steps_major(B_in), Ct = steps_major(C_in);

  dispatch_float(u_in.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows<T> xu = rows_of<T>(u_in), xdelta = rows_of<T>(delta_in), xz = rows_of<T>(z_in);
    const T *pA = A.data<T>(), *pB = Bt.data<T>(), *pC = Ct.data<T>();
    const T *pD = ptr_or_null<T>(D), *pbias = ptr_or_null<T>(bias);
    T *pout = out.data<T>(), *plast = last.data<T>(), *pstates = states.data<T>();
    const int64_t L = dm.L, Dn = dm.D;
    const int64_t ng = lane_groups(Dn);
    // NC: the state width as a compile-time constant for the usual N = 16 (0: any N), so the
    // loops over the states unroll.
    auto groups_loop = [&](auto nc_tag) {
      constexpr int64_t NC = decltype(nc_tag)::value;
      const int64_t N = NC > 0 ? NC : dm.N;
      constexpr int64_t G = kLanes;
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, G * L * N));
      parallel_for(dm.B * ng, grain, [&](int64_t w0, int64_t w1) {
        std::vector<T> h(sz(N * G)), AT(sz(N * G)), dtT(sz(kTile * G)), uT(sz(kTile * G)), gT(sz(kTile * G)),
            oT(sz(kTile * G));
        alignas(64) T Dv[G], bv[G];
        for (int64_t w = w0; w < w1; ++w) {
          const LaneGroup lg = lane_group(w, ng, Dn);
          const T* Bb = pB + lg.b * L * N;
          const T* Cb = pC + lg.b * L * N;
          load_group_params(pA, pD, pbias, lg, N, AT.data(), Dv, bv);
          std::fill(h.begin(), h.end(), T(0));
          for (int64_t t0 = 0; t0 < L; t0 += kTile) {
            const int64_t len = std::min(kTile, L - t0);
            const int64_t next = std::min(kTile, L - t0 - kTile);
            for (const Rows<T>* x : {&xdelta, &xu, &xz}) prefetch_rows(*x, lg, t0 + kTile, next);
            prefetch_rows_for_write<T>(pout, lg, L, t0 + kTile, next);
            load_tile(xdelta, lg, t0, len, dtT.data());
            lane_deltas<T>(dtT.data(), nullptr, bv, delta_softplus, len);
            load_tile(xu, lg, t0, len, uT.data());
            if (xz) {
              load_tile(xz, lg, t0, len, gT.data());
              T* gate = gT.data();
#pragma omp simd
              for (int64_t e = 0; e < len * G; ++e) gate[e] = gate[e] * sigmoid(gate[e]);
            }
            for (int64_t i = 0; i < len; ++i) {
              const int64_t t = t0 + i;
              T* y = oT.data() + i * G;
              group_update<T, NC, false>(h.data(), h.data(), AT.data(), Bb + t * N, Cb + t * N, dtT.data() + i * G,
                                         uT.data() + i * G, Dv, y, nullptr, N);
              if (xz) {
                const T* gate = gT.data() + i * G;
#pragma omp simd
                for (int64_t g = 0; g < G; ++g) y[g] *= gate[g];
              }
              if ((t + 1) % chunk == 0 || t == L - 1) {
                for (int64_t g = 0; g < lg.count; ++g)
                  for (int64_t n = 0; n < N; ++n) pstates[(lg.r(g) * nc + t / chunk) * N + n] = h[n * G + g];
              }
            }
            store_tile(oT.data(), lg, L, t0, len, pout);
          }
          for (int64_t g = 0; g < lg.count; ++g)
            for (int64_t n = 0; n < N; ++n) plast[lg.r(g) * N + n] = h[n * G + g];
        }
      });
    };
    if (dm.N == 16)
      groups_loop(std::integral_constant<int64_t, 16>{});
    else
      groups_loop(std::integral_constant<int64_t, 0>{});
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
  expect_like(op, "chunk_states", states_in, u_in);

  const TensorOptions opts(u_in.dtype(), u_in.device());
  const int64_t Bn = dm.B, Dn = dm.D, L = dm.L, N = dm.N;
  SelectiveScanGrads g;
  g.du = empty({Bn, Dn, L}, opts);
  g.ddelta = empty({Bn, Dn, L}, opts);
  g.dA = empty({Dn, N}, opts);
  g.dB = empty({Bn, N, L}, opts);
  g.dC = empty({Bn, N, L}, opts);
  if (D_in.defined()) g.dD = empty({Dn}, opts);
  if (z_in.defined()) g.dz = empty({Bn, Dn, L}, opts);
  if (bias_in.defined()) g.ddelta_bias = empty({Dn}, opts);

  Tensor A = contig(A_in), D = contig(D_in), bias = contig(bias_in), states = contig(states_in);
  Tensor Bt = steps_major(B_in), Ct = steps_major(C_in);

  // dB and dC sum over d: each block of lane groups accumulates its own (L, N) partial per b
  // (over its groups lane by lane, then over the lanes in order), and the blocks are added in
  // index order. Blocks and groups depend only on (B, D), so the sums are the same for any
  // thread count; B * nblk ~ 32 units keep threads busy when B = 1.
  const int64_t ng = lane_groups(Dn);
  const int64_t nblk = std::min<int64_t>(ng, std::max<int64_t>(1, 32 / std::max<int64_t>(1, Bn)));

  dispatch_float(u_in.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows<T> xdout = rows_of<T>(dout_in), xu = rows_of<T>(u_in), xdelta = rows_of<T>(delta_in),
                  xz = rows_of<T>(z_in);
    const T *pA = A.data<T>(), *pB = Bt.data<T>(), *pC = Ct.data<T>(), *pstates = states.data<T>();
    const T *pD = ptr_or_null<T>(D), *pbias = ptr_or_null<T>(bias);
    const bool pz = bool(xz);
    T *pdu = g.du.data<T>(), *pddelta = g.ddelta.data<T>();
    T* pdz = g.dz.defined() ? g.dz.data<T>() : nullptr;

    std::vector<T> part_dB(sz(nblk * Bn * L * N)), part_dC(sz(nblk * Bn * L * N));
    // Per (b, d) sums of the parameter gradients; reduced over b in order afterwards.
    std::vector<double> part_dA(sz(Bn * Dn * N)), part_dD(sz(Bn * Dn)), part_db(sz(Bn * Dn));

    auto blocks_loop = [&](auto nc_tag) {
      constexpr int64_t NC = decltype(nc_tag)::value;
      const int64_t N = NC > 0 ? NC : dm.N;
      constexpr int64_t G = kLanes;
      parallel_for(Bn * nblk, 1, [&](int64_t w0, int64_t w1) {
        const int64_t NG = N * G, CG = chunk * G;
        // Chunk workspace, (step, state, lane): hbuf[i] is the state before step t0 + i
        // (hbuf[0] the chunk start), abuf[i] = exp(dt A) of step t0 + i, accB/accC the dB/dC
        // lane partials of the chunk.
        std::vector<T> hbuf(sz((chunk + 1) * NG)), abuf(sz(chunk * NG)), accB(sz(chunk * NG)), accC(sz(chunk * NG));
        // Per-step lane scalars of the chunk: dt, softplus'(v), u, dout, z, sigmoid(z), and the
        // outputs du, ddelta, dz.
        std::vector<T> dtT(sz(CG)), sgT(sz(CG)), uT(sz(CG)), dyT(sz(CG)), zT(sz(CG)), szT(sz(CG)), duT(sz(CG)),
            ddT(sz(CG)), dzT(sz(CG));
        // Per group of the block: parameters and the carried gradients.
        const int64_t gmax = (ng + nblk - 1) / nblk;
        std::vector<T> AT(sz(gmax * NG)), Dv(sz(gmax * G)), Bv(sz(gmax * G)), dh(sz(gmax * NG)), dAc(sz(NG));
        std::vector<double> dA_acc(sz(gmax * NG)), dD_acc(sz(gmax * G)), db_acc(sz(gmax * G));
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t b = w / nblk, k = w % nblk;
          const int64_t j0 = ng * k / nblk, j1 = ng * (k + 1) / nblk;
          T* dBp = part_dB.data() + (k * Bn + b) * L * N;
          T* dCp = part_dC.data() + (k * Bn + b) * L * N;
          const T* Bb = pB + b * L * N;
          const T* Cb = pC + b * L * N;
          for (int64_t j = j0; j < j1; ++j) {
            const int64_t q = j - j0;
            load_group_params(pA, pD, pbias, lane_group(b * ng + j, ng, Dn), N, AT.data() + q * NG, Dv.data() + q * G,
                              Bv.data() + q * G);
          }
          std::fill(dh.begin(), dh.end(), T(0));
          std::fill(dA_acc.begin(), dA_acc.end(), 0.0);
          std::fill(dD_acc.begin(), dD_acc.end(), 0.0);
          std::fill(db_acc.begin(), db_acc.end(), 0.0);
          for (int64_t c = nc - 1; c >= 0; --c) {
            const int64_t t0 = c * chunk, len = std::min(L, t0 + chunk) - t0;
            std::fill(accB.begin(), accB.begin() + len * NG, T(0));
            std::fill(accC.begin(), accC.begin() + len * NG, T(0));
            for (int64_t j = j0; j < j1; ++j) {
              const int64_t q = j - j0;
              const LaneGroup lg = lane_group(b * ng + j, ng, Dn);
              const T* ATq = AT.data() + q * NG;
              const T* Dq = Dv.data() + q * G;
              T* dhq = dh.data() + q * NG;
              if (c > 0) {
                for (const Rows<T>* x : {&xdelta, &xu, &xdout, &xz}) prefetch_rows(*x, lg, t0 - chunk, chunk);
                for (const T* x : {pdu, pddelta, pdz}) prefetch_rows_for_write(x, lg, L, t0 - chunk, chunk);
              }
              // The chunk's per-step scalars in (step, lane) tiles (padding lanes: u = dout = 0
              // keep their state and gradients at 0).
              load_tile(xdelta, lg, t0, len, dtT.data());
              lane_deltas<T>(dtT.data(), delta_softplus ? sgT.data() : nullptr, Bv.data() + q * G, delta_softplus, len);
              load_tile(xu, lg, t0, len, uT.data());
              load_tile(xdout, lg, t0, len, dyT.data());
              if (pz) {
                load_tile(xz, lg, t0, len, zT.data());
                const T* zl = zT.data();
                T* sz = szT.data();
#pragma omp simd
                for (int64_t e = 0; e < len * G; ++e) sz[e] = sigmoid(zl[e]);
              }
              // Recompute this chunk's states from the previous chunk's end state, with the
              // forward's arithmetic (the same states), keeping exp(dt A) for the reverse pass.
              std::fill(hbuf.begin(), hbuf.begin() + NG, T(0));
              if (c > 0) {
                for (int64_t gl = 0; gl < lg.count; ++gl)
                  for (int64_t n = 0; n < N; ++n) hbuf[size_t(n * G + gl)] = pstates[(lg.r(gl) * nc + c - 1) * N + n];
              }
              for (int64_t i = 0; i < len; ++i)
                group_update<T, NC, true>(hbuf.data() + i * NG, hbuf.data() + (i + 1) * NG, ATq, Bb + (t0 + i) * N,
                                          nullptr, dtT.data() + i * G, uT.data() + i * G, nullptr, nullptr,
                                          abuf.data() + i * NG, N);
              std::fill(dAc.begin(), dAc.end(), T(0));
              alignas(64) T dD_chunk[G] = {}, db_chunk[G] = {};
              for (int64_t i = len - 1; i >= 0; --i) {
                const int64_t t = t0 + i;
                group_reverse_step<T, NC>(
                    hbuf.data() + (i + 1) * NG, hbuf.data() + i * NG, abuf.data() + i * NG, ATq, Dq, Bb + t * N,
                    Cb + t * N, dtT.data() + i * G, uT.data() + i * G, dyT.data() + i * G,
                    pz ? zT.data() + i * G : nullptr, szT.data() + i * G, delta_softplus ? sgT.data() + i * G : nullptr,
                    dhq, dAc.data(), accB.data() + i * NG, accC.data() + i * NG, dD_chunk, db_chunk,
                    duT.data() + i * G, ddT.data() + i * G, dzT.data() + i * G, N);
              }
              store_tile(duT.data(), lg, L, t0, len, pdu);
              store_tile(ddT.data(), lg, L, t0, len, pddelta);
              if (pdz) store_tile(dzT.data(), lg, L, t0, len, pdz);
              // Within a chunk in T, across chunks in double: long sequences lose no precision.
              double* dAq = dA_acc.data() + q * NG;
              for (int64_t e = 0; e < NG; ++e) dAq[e] += double(dAc[size_t(e)]);
              for (int64_t gl = 0; gl < G; ++gl) {
                dD_acc[size_t(q * G + gl)] += double(dD_chunk[gl]);
                db_acc[size_t(q * G + gl)] += double(db_chunk[gl]);
              }
            }
            // The chunk's dB, dC partials of this block: the lanes summed in order.
            for (int64_t e = 0; e < len * N; ++e) {
              T sB = 0, sC = 0;
#pragma omp simd reduction(+ : sB, sC)
              for (int64_t gl = 0; gl < G; ++gl) {
                sB += accB[size_t(e * G + gl)];
                sC += accC[size_t(e * G + gl)];
              }
              dBp[t0 * N + e] = sB;
              dCp[t0 * N + e] = sC;
            }
          }
          for (int64_t j = j0; j < j1; ++j) {
            const int64_t q = j - j0;
            const LaneGroup lg = lane_group(b * ng + j, ng, Dn);
            for (int64_t gl = 0; gl < lg.count; ++gl) {
              const int64_t r = lg.r(gl);
              for (int64_t n = 0; n < N; ++n) part_dA[size_t(r * N + n)] = dA_acc[size_t(q * NG + n * G + gl)];
              part_dD[size_t(r)] = dD_acc[size_t(q * G + gl)];
              part_db[size_t(r)] = db_acc[size_t(q * G + gl)];
            }
          }
        }
      });
    };
    if (dm.N == 16)
      blocks_loop(std::integral_constant<int64_t, 16>{});
    else
      blocks_loop(std::integral_constant<int64_t, 0>{});

    // Fixed-order reductions.
    T* pdA = g.dA.data<T>();
    T* pdD = g.dD.defined() ? g.dD.data<T>() : nullptr;
    T* pdb = g.ddelta_bias.defined() ? g.ddelta_bias.data<T>() : nullptr;
    for (int64_t d = 0; d < Dn; ++d) {
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t b = 0; b < Bn; ++b) s += part_dA[(b * Dn + d) * N + n];
        pdA[d * N + n] = T(s);
      }
      double sD = 0, sb = 0;
      for (int64_t b = 0; b < Bn; ++b) {
        sD += part_dD[b * Dn + d];
        sb += part_db[b * Dn + d];
      }
      if (pdD) pdD[d] = T(sD);
      if (pdb) pdb[d] = T(sb);
    }
    T *pdB = g.dB.data<T>(), *pdC = g.dC.data<T>();
    parallel_for(Bn * L, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, nblk * N)), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / L, t = i % L;
        for (int64_t n = 0; n < N; ++n) {
          T sB = 0, sC = 0;
          for (int64_t k = 0; k < nblk; ++k) {
            sB += part_dB[((k * Bn + b) * L + t) * N + n];
            sC += part_dC[((k * Bn + b) * L + t) * N + n];
          }
          pdB[(b * N + n) * L + t] = sB;
          pdC[(b * N + n) * L + t] = sC;
        }
      }
    });
  });
  return g;
}

Tensor selective_scan_step(const Tensor& state, const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                           const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                           const Tensor& bias_in, bool delta_softplus) {
  const char* op = "selective_scan_step";
  const ScanDims dm = check_inputs(op, false, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  HYMBA_CHECK(state.defined(), op, ": state is undefined");
  expect_shape(op, "state", state, {dm.B, dm.D, dm.N}, u_in, A_in);
  expect_like(op, "state", state, u_in);
  // Updated in place, so it must be one dense block (it is: the caller allocates it).
  HYMBA_CHECK(state.is_contiguous(), op, ": state must be contiguous, got strides ", shape_str(state.strides()));
  Tensor out = empty({dm.B, dm.D}, TensorOptions(u_in.dtype(), u_in.device()));
  Tensor u = contig(u_in), delta = contig(delta_in), A = contig(A_in), B = contig(B_in), C = contig(C_in),
         D = contig(D_in), z = contig(z_in), bias = contig(bias_in);
  dispatch_float(u.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pu = u.data<T>(), *pdelta = delta.data<T>(), *pA = A.data<T>(), *pB = B.data<T>(), *pC = C.data<T>();
    const T *pD = ptr_or_null<T>(D), *pz = ptr_or_null<T>(z), *pbias = ptr_or_null<T>(bias);
    T *ph = state.data<T>(), *pout = out.data<T>();
    const int64_t N = dm.N, Dn = dm.D;
    parallel_for(dm.B * Dn, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, N)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / Dn, d = r % Dn;
        const T v = pdelta[r] + (pbias ? pbias[d] : T(0));
        const T dt = delta_softplus ? softplus(v) : v;
        const T ut = pu[r];
        T y = state_update(ph + r * N, pA + d * N, pB + b * N, pC + b * N, dt, dt * ut, N) +
              (pD ? pD[d] : T(0)) * ut;
        if (pz) y *= pz[r] * sigmoid(pz[r]);
        pout[r] = y;
      }
    });
  });
  return out;
}

}  // namespace hymba::kernels::cpu
