// CPU selective scan. Work is split over (b, d) rows; the inner loops run over the N states
// of one row, which is what vectorizes (N = 16: four SSE lanes of four). B and C are
// transposed once to (B, L, N) so the N states of one step are contiguous.
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

namespace hymba::kernels::cpu {
namespace {

// Rows of (b, d) go to threads in chunks of at least this many state updates.
constexpr int64_t kGrain = 1 << 15;

// exp for any f32 argument without calls or branches, so the state loop vectorizes: the
// Cephes range reduction and polynomial (within 2 ulp of expf). Arguments below -87 give 0,
// above 88 give exp(88) (not inf; a state that large is already meaningless).
inline float exp_fast(float x) {
  const bool tiny = x < -87.0f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
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

// One step of one (b, d) row: h <- exp(dt*A) h + dt*u*B, returns C.h. Shared by the scan,
// its backward recompute and the step kernel, so all three compute identical states.
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

// dt[t] = softplus(delta[t] + bias) (or without softplus) for one row.
template <typename T>
void row_deltas(const T* __restrict delta, T bias, bool use_softplus, T* __restrict dt, int64_t n) {
  if (use_softplus) {
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) dt[t] = softplus(delta[t] + bias);
  } else {
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) dt[t] = delta[t] + bias;
  }
}
// gate[t] = silu(z[t]) = z sigmoid(z), the output gate.
template <typename T>
void row_gates(const T* __restrict z, T* __restrict gate, int64_t n) {
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) gate[t] = z[t] * sigmoid(z[t]);
}

struct ScanDims {
  int64_t B, D, L, N;
};

std::string describe(const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); }

void expect_shape(const char* op, const char* what, const Tensor& t, const Shape& expected, const Tensor& u,
                  const Tensor& A) {
  HYMBA_CHECK(t.shape() == expected, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ",
              shape_str(expected), " (u ", shape_str(u.shape()), ", A ", shape_str(A.shape()), ")");
}

void expect_like(const char* op, const char* what, const Tensor& t, const Tensor& u) {
  HYMBA_CHECK(t.dtype() == u.dtype(), op, ": dtype mismatch: ", what, " ", t.meta_str(), " and u ", u.meta_str());
  HYMBA_CHECK(t.device() == u.device(), op, ": tensors on different devices: ", what, " ", t.meta_str(), " and u ",
              u.meta_str());
}

// Validates the shared inputs of every scan kernel. `seq` is false for the one-step kernel,
// whose per-token inputs have no L dim.
ScanDims check_inputs(const char* op, bool seq, const Tensor& u, const Tensor& delta, const Tensor& A,
                      const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias) {
  HYMBA_CHECK(u.defined() && delta.defined() && A.defined() && B.defined() && C.defined(), op,
              ": u, delta, A, B and C are required (u ", describe(u), ", delta ", describe(delta), ", A ",
              describe(A), ", B ", describe(B), ", C ", describe(C), ")");
  HYMBA_CHECK(u.dtype() == DType::F32 || u.dtype() == DType::F64, op, ": dtype ", dtype_name(u.dtype()),
              " not supported here, expected f32 or f64 (u ", u.meta_str(), ")");
  HYMBA_CHECK(u.dim() == (seq ? 3 : 2), op, ": u must be ", seq ? "(B, D, L)" : "(B, D)", ", got ", u.meta_str());
  HYMBA_CHECK(A.dim() == 2 && A.size(0) == u.size(1), op, ": A has shape ", shape_str(A.shape()),
              ", expected (D, N) with D = ", u.size(1), " (u ", shape_str(u.shape()), ")");
  ScanDims dm{u.size(0), u.size(1), seq ? u.size(2) : 1, A.size(1)};
  const Shape act = seq ? Shape{dm.B, dm.D, dm.L} : Shape{dm.B, dm.D};
  const Shape bc = seq ? Shape{dm.B, dm.N, dm.L} : Shape{dm.B, dm.N};
  expect_shape(op, "delta", delta, act, u, A);
  expect_shape(op, "B", B, bc, u, A);
  expect_shape(op, "C", C, bc, u, A);
  expect_like(op, "delta", delta, u);
  expect_like(op, "A", A, u);
  expect_like(op, "B", B, u);
  expect_like(op, "C", C, u);
  if (D.defined()) {
    expect_shape(op, "D", D, {dm.D}, u, A);
    expect_like(op, "D", D, u);
  }
  if (z.defined()) {
    expect_shape(op, "z", z, act, u, A);
    expect_like(op, "z", z, u);
  }
  if (delta_bias.defined()) {
    expect_shape(op, "delta_bias", delta_bias, {dm.D}, u, A);
    expect_like(op, "delta_bias", delta_bias, u);
  }
  return dm;
}

Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
// (B, N, L) -> contiguous (B, L, N).
Tensor steps_major(const Tensor& t) { return t.permute({0, 2, 1}).contiguous(); }

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
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
  Tensor u = contig(u_in), delta = contig(delta_in), A = contig(A_in), D = contig(D_in), z = contig(z_in),
         bias = contig(bias_in);
  Tensor Bt = steps_major(B_in), Ct = steps_major(C_in);

  dispatch_float(u.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pu = u.data<T>(), *pdelta = delta.data<T>(), *pA = A.data<T>(), *pB = Bt.data<T>(),
            *pC = Ct.data<T>();
    const T *pD = ptr_or_null<T>(D), *pz = ptr_or_null<T>(z), *pbias = ptr_or_null<T>(bias);
    T *pout = out.data<T>(), *plast = last.data<T>(), *pstates = states.data<T>();
    const int64_t L = dm.L, Dn = dm.D;
    const int64_t rows = dm.B * Dn;
    // NC: the state width as a compile-time constant for the usual N = 16 (0: any N), so the
    // loops over the states unroll and the state can live in registers.
    auto rows_loop = [&](auto nc_tag) {
    constexpr int64_t NC = decltype(nc_tag)::value;
    const int64_t N = NC > 0 ? NC : dm.N;
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, L * N)), [&](int64_t r0, int64_t r1) {
      alignas(64) T h_fixed[NC > 0 ? NC : 1];
      std::vector<T> h_any(static_cast<size_t>(NC > 0 ? 0 : N)), dtb(static_cast<size_t>(L)),
          gate(static_cast<size_t>(L));
      T* h = NC > 0 ? h_fixed : h_any.data();
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / Dn, d = r % Dn;
        const T* A_d = pA + d * N;
        const T Dd = pD ? pD[d] : T(0), bd = pbias ? pbias[d] : T(0);
        const T* Bb = pB + b * L * N;
        const T* Cb = pC + b * L * N;
        const int64_t row = r * L;
        // The per-step scalars first, in loops over t that vectorize: the sequential loop
        // below then does only the state update.
        row_deltas(pdelta + row, bd, delta_softplus, dtb.data(), L);
        if (pz) row_gates(pz + row, gate.data(), L);
        std::fill(h, h + N, T(0));
        for (int64_t t = 0; t < L; ++t) {
          const T dt = dtb[t];
          const T ut = pu[row + t];
          T y = state_update(h, A_d, Bb + t * N, Cb + t * N, dt, dt * ut, N) + Dd * ut;
          if (pz) y *= gate[t];
          pout[row + t] = y;
          if ((t + 1) % chunk == 0 || t == L - 1) std::copy(h, h + N, pstates + (r * nc + t / chunk) * N);
        }
        std::copy(h, h + N, plast + r * N);
      }
    });
    };
    if (dm.N == 16)
      rows_loop(std::integral_constant<int64_t, 16>{});
    else
      rows_loop(std::integral_constant<int64_t, 0>{});
  });
  return {out, last, states};
}

SelectiveScanGrads selective_scan_backward(const Tensor& dout_in, const Tensor& u_in, const Tensor& delta_in,
                                           const Tensor& A_in, const Tensor& B_in, const Tensor& C_in,
                                           const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                                           bool delta_softplus, const Tensor& states_in, int64_t chunk) {
  const char* op = "selective_scan_backward";
  const ScanDims dm = check_inputs(op, true, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in);
  HYMBA_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  HYMBA_CHECK(dout_in.defined(), op, ": the output gradient is undefined");
  expect_shape(op, "the output gradient", dout_in, {dm.B, dm.D, dm.L}, u_in, A_in);
  expect_like(op, "the output gradient", dout_in, u_in);
  const int64_t nc = (dm.L + chunk - 1) / chunk;
  HYMBA_CHECK(states_in.defined(), op, ": chunk_states is undefined");
  expect_shape(op, "chunk_states", states_in, {dm.B, dm.D, nc, dm.N}, u_in, A_in);
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

  Tensor dout = contig(dout_in), u = contig(u_in), delta = contig(delta_in), A = contig(A_in), D = contig(D_in),
         z = contig(z_in), bias = contig(bias_in), states = contig(states_in);
  Tensor Bt = steps_major(B_in), Ct = steps_major(C_in);

  // dB and dC sum over d: each block of channels accumulates its own (L, N) partial per b, and
  // the blocks are added in index order. The block count depends only on (B, D), so the sums
  // are the same for any thread count; B * nblk ~ 32 units keep threads busy when B = 1.
  const int64_t nblk = std::min<int64_t>(Dn, std::max<int64_t>(1, 32 / std::max<int64_t>(1, Bn)));

  dispatch_float(u.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pdout = dout.data<T>(), *pu = u.data<T>(), *pdelta = delta.data<T>(), *pA = A.data<T>(),
            *pB = Bt.data<T>(), *pC = Ct.data<T>(), *pstates = states.data<T>();
    const T *pD = ptr_or_null<T>(D), *pz = ptr_or_null<T>(z), *pbias = ptr_or_null<T>(bias);
    T *pdu = g.du.data<T>(), *pddelta = g.ddelta.data<T>();
    T* pdz = g.dz.defined() ? g.dz.data<T>() : nullptr;

    std::vector<T> part_dB(size_t(nblk * Bn * L * N), T(0)), part_dC(size_t(nblk * Bn * L * N), T(0));
    // Per (b, d) sums of the parameter gradients; reduced over b in order afterwards.
    std::vector<double> part_dA(size_t(Bn * Dn * N)), part_dD(size_t(Bn * Dn)), part_db(size_t(Bn * Dn));

    // NC as in the forward: N = 16 compiled with a constant state width.
    auto blocks_loop = [&](auto nc_tag) {
    constexpr int64_t NC = decltype(nc_tag)::value;
    const int64_t N = NC > 0 ? NC : dm.N;
    parallel_for(Bn * nblk, 1, [&](int64_t w0, int64_t w1) {
      // Chunk workspace: hbuf[i] is the state before step t0 + i (hbuf[0] the chunk start).
      std::vector<T> hbuf(size_t((chunk + 1) * N)), abuf(size_t(chunk * N)), dtbuf(static_cast<size_t>(chunk)),
          sgbuf(static_cast<size_t>(chunk)), szbuf(static_cast<size_t>(chunk));
      alignas(64) T dh_fixed[NC > 0 ? NC : 1], dA_fixed[NC > 0 ? NC : 1];
      std::vector<T> dh_any(static_cast<size_t>(NC > 0 ? 0 : N)), dA_any(static_cast<size_t>(NC > 0 ? 0 : N));
      T* dh = NC > 0 ? dh_fixed : dh_any.data();
      T* dA_chunk = NC > 0 ? dA_fixed : dA_any.data();
      std::vector<double> dA_acc(static_cast<size_t>(N));
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t b = w / nblk, k = w % nblk;
        const int64_t d0 = Dn * k / nblk, d1 = Dn * (k + 1) / nblk;
        T* dBp = part_dB.data() + (k * Bn + b) * L * N;
        T* dCp = part_dC.data() + (k * Bn + b) * L * N;
        const T* Bb = pB + b * L * N;
        const T* Cb = pC + b * L * N;
        for (int64_t d = d0; d < d1; ++d) {
          const int64_t r = b * Dn + d, row = r * L;
          const T* A_d = pA + d * N;
          const T Dd = pD ? pD[d] : T(0), bd = pbias ? pbias[d] : T(0);
          std::fill(dh, dh + N, T(0));
          std::fill(dA_acc.begin(), dA_acc.end(), 0.0);
          double dD_acc = 0, db_acc = 0;
          for (int64_t c = nc - 1; c >= 0; --c) {
            const int64_t t0 = c * chunk, len = std::min(L, t0 + chunk) - t0;
            // Recompute this chunk's states from the previous chunk's end state.
            if (c == 0)
              std::fill(hbuf.begin(), hbuf.begin() + N, T(0));
            else
              std::copy(pstates + (r * nc + c - 1) * N, pstates + (r * nc + c) * N, hbuf.begin());
            // Per-step scalars of the chunk in loops that vectorize (as in the forward).
            row_deltas(pdelta + row + t0, bd, delta_softplus, dtbuf.data(), len);
            if (delta_softplus) {
              const T* dl = pdelta + row + t0;
              T* sg = sgbuf.data();
#pragma omp simd
              for (int64_t i = 0; i < len; ++i) sg[i] = softplus_grad(dl[i] + bd);
            }
            if (pz) {
              const T* zl = pz + row + t0;
              T* sz = szbuf.data();
#pragma omp simd
              for (int64_t i = 0; i < len; ++i) sz[i] = sigmoid(zl[i]);
            }
            for (int64_t i = 0; i < len; ++i) {
              const int64_t t = t0 + i;
              const T dt = dtbuf[i];
              const T dtu = dt * pu[row + t];
              const T* Bt_ = Bb + t * N;
              const T* hp = hbuf.data() + i * N;
              T* hn = hbuf.data() + (i + 1) * N;
              T* a = abuf.data() + i * N;
#pragma omp simd
              for (int64_t n = 0; n < N; ++n) {
                a[n] = exp_fast(dt * A_d[n]);
                hn[n] = a[n] * hp[n] + dtu * Bt_[n];
              }
            }
            std::fill(dA_chunk, dA_chunk + N, T(0));
            T dD_chunk = 0, db_chunk = 0;
            for (int64_t i = len - 1; i >= 0; --i) {
              const int64_t t = t0 + i;
              const T ut = pu[row + t], dt = dtbuf[i], dtu = dt * ut;
              const T* h = hbuf.data() + (i + 1) * N;
              const T* hp = hbuf.data() + i * N;
              const T* a = abuf.data() + i * N;
              const T* Bt_ = Bb + t * N;
              const T* Ct_ = Cb + t * N;
              T dy = pdout[row + t];
              if (pz) {
                T y = 0;
#pragma omp simd reduction(+ : y)
                for (int64_t n = 0; n < N; ++n) y += Ct_[n] * h[n];
                y += Dd * ut;
                const T zt = pz[row + t], sz = szbuf[i];
                pdz[row + t] = dy * y * sz * (T(1) + zt * (T(1) - sz));
                dy *= zt * sz;
              }
              dD_chunk += dy * ut;
              T ddt = 0, dub = 0;
              T* dBt = dBp + t * N;
              T* dCt = dCp + t * N;
              T* dhp = dh;
              T* dAc = dA_chunk;
#pragma omp simd reduction(+ : ddt, dub)
              for (int64_t n = 0; n < N; ++n) {
                dCt[n] += dy * h[n];
                const T gn = dhp[n] + dy * Ct_[n];  // total gradient of h_t
                const T ahp = a[n] * hp[n];
                ddt += gn * (A_d[n] * ahp + Bt_[n] * ut);
                dAc[n] += gn * dt * ahp;
                dBt[n] += gn * dtu;
                dub += gn * Bt_[n];
                dhp[n] = gn * a[n];
              }
              pdu[row + t] = dy * Dd + dt * dub;
              const T dv = delta_softplus ? ddt * sgbuf[i] : ddt;
              pddelta[row + t] = dv;
              db_chunk += dv;
            }
            // Within a chunk in T, across chunks in double: long sequences lose no precision.
            for (int64_t n = 0; n < N; ++n) dA_acc[n] += double(dA_chunk[n]);
            dD_acc += double(dD_chunk);
            db_acc += double(db_chunk);
          }
          std::copy(dA_acc.begin(), dA_acc.end(), part_dA.begin() + r * N);
          part_dD[r] = dD_acc;
          part_db[r] = db_acc;
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
