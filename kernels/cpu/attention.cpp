// The exp loops below use exp_nonpos (kernels/activation.h), whose selects vectorize only
// with trapping math off (see kernels/cpu/activation.cpp); no result changes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels/attention.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "kernels/activation.h"

namespace hymba::kernels::cpu {
namespace {

constexpr int64_t kQ = kAttnQueryTile;
constexpr int64_t kK = kAttnKeyTile;

struct Dims {
  int64_t B, Hq, Hkv, T, dk, dv, group;
};

void check_float(const char* op, const char* what, const Tensor& t) {
  attn_check::float_check(op, what, t, [](DType d) { return d == DType::F32 || d == DType::F64; }, "f32 or f64");
}

Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  const attn_check::QkvDims c = attn_check::check_qkv(op, q, k, v, p, check_float);
  HYMBA_CHECK(c.dk > 0 && c.dv > 0, op, ": empty head dim: q ", shape_str(q.shape()), ", v ", shape_str(v.shape()));
  return {c.B, c.Hq, c.Hkv, c.T, c.dk, c.dv, c.Hq / c.Hkv};
}

using attn_check::scale_of;
using attn_check::stat_dtype;

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// out[r * kK + c] = <a_r, b_c> for rows a (nq x d) and a tile of kK keys b given transposed:
// row j of bt (stride ldb) holds component j of the tile's keys, zero past the sequence end
// (see transpose_heads). The inner loop runs over a whole tile row of keys with unit stride
// and a constant trip count; four query rows share each load of bt, and their accumulators
// (4 x kK) stay in vector registers across the d loop. Each output is summed over j in
// order, as a plain loop would.
template <typename T>
void block_dots_t(const T* a, const T* bt, int64_t ldb, T* out, int64_t nq, int64_t nk, int64_t d) {
  int64_t r = 0;
  for (; r + 4 <= nq; r += 4) {
    T acc0[kK] = {}, acc1[kK] = {}, acc2[kK] = {}, acc3[kK] = {};
    const T *a0 = a + r * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
    for (int64_t j = 0; j < d; ++j) {
      const T* __restrict btj = bt + j * ldb;
      const T x0 = a0[j], x1 = a1[j], x2 = a2[j], x3 = a3[j];
#pragma omp simd
      for (int64_t c = 0; c < kK; ++c) {
        acc0[c] += x0 * btj[c];
        acc1[c] += x1 * btj[c];
        acc2[c] += x2 * btj[c];
        acc3[c] += x3 * btj[c];
      }
    }
    std::copy(acc0, acc0 + nk, out + r * kK);
    std::copy(acc1, acc1 + nk, out + (r + 1) * kK);
    std::copy(acc2, acc2 + nk, out + (r + 2) * kK);
    std::copy(acc3, acc3 + nk, out + (r + 3) * kK);
  }
  for (; r < nq; ++r) {
    T acc[kK] = {};
    const T* ar = a + r * d;
    for (int64_t j = 0; j < d; ++j) {
      const T* __restrict btj = bt + j * ldb;
      const T x = ar[j];
#pragma omp simd
      for (int64_t c = 0; c < kK; ++c) acc[c] += x * btj[c];
    }
    std::copy(acc, acc + nk, out + r * kK);
  }
}

// xt (BH, dd, Tpad) = x (BH, T, dd) transposed per head, zero for t >= T (Tpad a multiple of
// kK): done once per call, so the tile products read each key tile's transpose in place
// instead of rebuilding it for every query tile that visits it.
template <typename T>
std::vector<T> transpose_heads(const T* x, int64_t BH, int64_t T_, int64_t dd, int64_t Tpad) {
  std::vector<T> xt(static_cast<size_t>(BH * dd * Tpad));
  parallel_for(BH, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T_ * dd)), [&](int64_t h0, int64_t h1) {
    for (int64_t bh = h0; bh < h1; ++bh) {
      const T* xs = x + bh * T_ * dd;
      T* xd = xt.data() + bh * dd * Tpad;
      for (int64_t t = 0; t < T_; ++t)
        for (int64_t j = 0; j < dd; ++j) xd[j * Tpad + t] = xs[t * dd + j];
      for (int64_t j = 0; j < dd; ++j) std::fill(xd + j * Tpad + T_, xd + (j + 1) * Tpad, T(0));
    }
  });
  return xt;
}

// acc (nq x n, row stride ldacc) += p (nq x nk; element (r, c) at p[r * pr + c * pc]) * w
// (nk x n, row stride ldw): the products P V, dS K and, reading a tile transposed in place
// (pr = 1, pc = kK), P^T dO and dS^T Q of attention. Register blocked like block_dots_t: four
// rows of acc times 64 columns stay in registers over the nk loop. Each output is summed
// over c in order, as a plain loop would.
template <typename T>
void block_acc(const T* p, int64_t pr, int64_t pc, const T* w, T* acc, int64_t nq, int64_t nk, int64_t n,
               int64_t ldw, int64_t ldacc) {
  constexpr int64_t kC = 64;
  for (int64_t c0 = 0; c0 < n; c0 += kC) {
    const int64_t nc = std::min(kC, n - c0);
    int64_t r = 0;
    if (nc == kC) {
      for (; r + 4 <= nq; r += 4) {
        T a0[kC], a1[kC], a2[kC], a3[kC];
        T* o0 = acc + r * ldacc + c0;
        std::copy(o0, o0 + kC, a0);
        std::copy(o0 + ldacc, o0 + ldacc + kC, a1);
        std::copy(o0 + 2 * ldacc, o0 + 2 * ldacc + kC, a2);
        std::copy(o0 + 3 * ldacc, o0 + 3 * ldacc + kC, a3);
        const T* p0 = p + r * pr;
        for (int64_t c = 0; c < nk; ++c) {
          const T* __restrict wr = w + c * ldw + c0;
          const T* pcol = p0 + c * pc;
          const T x0 = pcol[0], x1 = pcol[pr], x2 = pcol[2 * pr], x3 = pcol[3 * pr];
#pragma omp simd
          for (int64_t j = 0; j < kC; ++j) {
            a0[j] += x0 * wr[j];
            a1[j] += x1 * wr[j];
            a2[j] += x2 * wr[j];
            a3[j] += x3 * wr[j];
          }
        }
        std::copy(a0, a0 + kC, o0);
        std::copy(a1, a1 + kC, o0 + ldacc);
        std::copy(a2, a2 + kC, o0 + 2 * ldacc);
        std::copy(a3, a3 + kC, o0 + 3 * ldacc);
      }
    }
    for (; r < nq; ++r) {
      T* __restrict o = acc + r * ldacc + c0;
      for (int64_t c = 0; c < nk; ++c) axpy(p[r * pr + c * pc], w + c * ldw + c0, o, nc);
    }
  }
}

// dS = P * (dP - delta_row), in place of dP (0 wherever P is 0, masked keys included).
template <typename T>
void block_ds(const T* p, T* dp, const T* delta_rows, int64_t nq, int64_t nk) {
  for (int64_t r = 0; r < nq; ++r) {
    const T* pr = p + r * kK;
    T* dr = dp + r * kK;
    const T dl = delta_rows[r];
#pragma omp simd
    for (int64_t c = 0; c < nk; ++c) dr[c] = pr[c] == T(0) ? T(0) : pr[c] * (dr[c] - dl);
  }
}

// Scores of one block: s[r * kK + c] = <qs_r, k_{k0+c}>, masked entries set to -inf; kt is
// the head's transposed keys (dk, ldk).
template <typename T>
void block_scores(const T* qs, const T* kt, int64_t ldk, T* s, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
                  int64_t dk, TileVisibility vis, const AttentionParams& p) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  block_dots_t(qs, kt + k0, ldk, s, nq, nk, dk);
  if (vis == TileVisibility::Partial) {
    for (int64_t r = 0; r < nq; ++r)
      for (int64_t c = 0; c < nk; ++c)
        if (!attention_visible(q0 + r, k0 + c, p.window, p.num_meta)) s[r * kK + c] = kNegInf;
  }
}

// Parallel work items are small enough that a thread team pays off from a few of them.
int64_t grain_for(int64_t flops_per_item) { return std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, flops_per_item)); }

template <typename T, typename S>
void forward_impl(const T* q, const T* k, const T* v, T* o, S* lse, const Dims& d, const AttentionParams& p) {
  const T scale = T(scale_of(p, d.dk));
  const int64_t nqt = (d.T + kQ - 1) / kQ;
  const int64_t span = p.window < 0 ? d.T : std::min(d.T, p.window + p.num_meta + kQ);
  const int64_t grain = grain_for(kQ * span * (d.dk + d.dv) * 2);
  const int64_t Tpad = ((d.T + kK - 1) / kK) * kK;
  const std::vector<T> kT = transpose_heads(k, d.B * d.Hkv, d.T, d.dk, Tpad);
  parallel_for(d.B * d.Hq * nqt, grain, [&](int64_t w0, int64_t w1) {
    std::vector<T> qs(kQ * d.dk), s(kQ * kK), acc(kQ * d.dv), m(kQ), l(kQ);
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t qt = w % nqt, bh = w / nqt, b = bh / d.Hq, h = bh % d.Hq, hk = h / d.group;
      const int64_t q0 = qt * kQ, q1 = std::min(d.T, q0 + kQ), nq = q1 - q0;
      const T* qp = q + (bh * d.T + q0) * d.dk;
      const T* ktp = kT.data() + (b * d.Hkv + hk) * d.dk * Tpad;
      const T* vp = v + (b * d.Hkv + hk) * d.T * d.dv;
      for (int64_t i = 0; i < nq * d.dk; ++i) qs[i] = qp[i] * scale;
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(acc.begin(), acc.begin() + nq * d.dv, T(0));
      auto visit = [&](int64_t kt) {
        const int64_t k0 = kt * kK, k1 = std::min(d.T, k0 + kK), nk = k1 - k0;
        const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, p.window, p.num_meta);
        if (vis == TileVisibility::None) return;
        block_scores(qs.data(), ktp, Tpad, s.data(), q0, nq, k0, nk, d.dk, vis, p);
        for (int64_t r = 0; r < nq; ++r) {
          T* sr = s.data() + r * kK;
          T mx = m[r];
#pragma omp simd reduction(max : mx)
          for (int64_t c = 0; c < nk; ++c) mx = std::max(mx, sr[c]);
          if (mx == -std::numeric_limits<T>::infinity()) continue;  // nothing visible yet in this row
          const T alpha = std::exp(m[r] - mx);                     // 0 on the first visible tile
          // Every argument is <= 0 (masked ones -inf): the vectorizing exp applies.
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < nk; ++c) {
            sr[c] = exp_nonpos(sr[c] - mx);
            sum += sr[c];
          }
          m[r] = mx;
          l[r] = l[r] * alpha + sum;
          T* ar = acc.data() + r * d.dv;
          if (alpha != T(1))
            for (int64_t j = 0; j < d.dv; ++j) ar[j] *= alpha;
        }
        // Rows with nothing visible yet kept their -inf scores: zero them (exp(-inf)) so
        // the block product adds nothing to those rows.
        for (int64_t r = 0; r < nq; ++r)
          if (m[r] == -std::numeric_limits<T>::infinity()) std::fill(s.data() + r * kK, s.data() + r * kK + nk, T(0));
        block_acc(s.data(), kK, 1, vp + k0 * d.dv, acc.data(), nq, nk, d.dv, d.dv, d.dv);
      };
      const KeyTileRanges tr = attention_key_tiles(q0, q1, kK, p.window, p.num_meta);
      for (int64_t kt = tr.m0; kt < tr.m1; ++kt) visit(kt);
      for (int64_t kt = tr.w0; kt < tr.w1; ++kt) visit(kt);
      T* op = o + (bh * d.T + q0) * d.dv;
      S* lp = lse + bh * d.T + q0;
      for (int64_t r = 0; r < nq; ++r) {
        // The diagonal key is always visible, so l > 0.
        const T inv = T(1) / l[r];
        for (int64_t j = 0; j < d.dv; ++j) op[r * d.dv + j] = acc[r * d.dv + j] * inv;
        lp[r] = S(double(m[r]) + std::log(double(l[r])));
      }
    }
  });
}

// Probabilities of one block from the saved lse: s becomes p (0 where masked).
template <typename T, typename S>
void block_probs(T* s, const S* lse_rows, int64_t nq, int64_t nk) {
  for (int64_t r = 0; r < nq; ++r) {
    T* sr = s + r * kK;
    const T lr = T(lse_rows[r]);
    // s - lse <= 0 up to rounding (exp_nonpos is exact to 2 ulp slightly above 0 too);
    // masked entries are -inf and give 0.
#pragma omp simd
    for (int64_t c = 0; c < nk; ++c) sr[c] = exp_nonpos(sr[c] - lr);
  }
}

template <typename T, typename S>
void backward_impl(const T* dout, const T* q, const T* k, const T* v, const T* out, const S* lse, T* dq, T* dk,
                   T* dv, const Dims& d, const AttentionParams& p) {
  const T scale = T(scale_of(p, d.dk));
  const int64_t nqt = (d.T + kQ - 1) / kQ, nkt = (d.T + kK - 1) / kK;
  const int64_t span = p.window < 0 ? d.T : std::min(d.T, p.window + p.num_meta + kQ);
  const int64_t rows = d.B * d.Hq * d.T;
  // delta_i = <dout_i, out_i> = sum_j p_ij <dout_i, v_j>: the softmax backward's row term.
  std::vector<T> delta(static_cast<size_t>(rows));
  parallel_for(rows, std::max<int64_t>(1, 8192 / d.dv), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double s = 0;
      for (int64_t j = 0; j < d.dv; ++j) s += double(dout[r * d.dv + j]) * double(out[r * d.dv + j]);
      delta[r] = T(s);
    }
  });

  // When all three gradients are wanted and the tiles fit kDsStoreBytes, the dk pass keeps
  // each visible tile's dS for the dq pass, which then only does dQ += dS K instead of
  // recomputing S, P, dP and dS (the same functions on the same inputs: bitwise the same dS).
  constexpr int64_t kDsStoreBytes = int64_t(32) << 20;
  const int64_t tiles = d.B * d.Hq * nqt * nkt;
  const bool keep_ds = dq && dk && tiles * kQ * kK * int64_t(sizeof(T)) <= kDsStoreBytes;
  std::vector<T> ds_store(keep_ds ? static_cast<size_t>(tiles * kQ * kK) : 0);
  std::vector<unsigned char> ds_kept(keep_ds ? static_cast<size_t>(tiles) : 0, 0);
  auto tile_index = [&](int64_t bh, int64_t qt, int64_t kt) { return (bh * nqt + qt) * nkt + kt; };
  const int64_t Tpad = nkt * kK;
  const std::vector<T> kT = transpose_heads(k, d.B * d.Hkv, d.T, d.dk, Tpad);
  const std::vector<T> vT = transpose_heads(v, d.B * d.Hkv, d.T, d.dv, Tpad);

  // dk, dv: one thread owns a (b, kv head, key tile) and walks the query heads of its group
  // and the query tiles that can see it, always in the same order.
  if (dk || dv) {
    parallel_for(d.B * d.Hkv * nkt, grain_for(kK * span * (d.dk + d.dv) * 4 * d.group), [&](int64_t w0, int64_t w1) {
      std::vector<T> qs(kQ * d.dk), s(kQ * kK), dp(kQ * kK), dka(kK * d.dk), dva(kK * d.dv);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t kt = w % nkt, bk = w / nkt, b = bk / d.Hkv, hk = bk % d.Hkv;
        const int64_t k0 = kt * kK, k1 = std::min(d.T, k0 + kK), nk = k1 - k0;
        const T* ktp = kT.data() + bk * d.dk * Tpad;
        const T* vtp = vT.data() + bk * d.dv * Tpad;
        std::fill(dka.begin(), dka.end(), T(0));
        std::fill(dva.begin(), dva.end(), T(0));
        const int64_t qt_first = k0 / kQ;
        const int64_t qt_last =
            (p.window < 0 || k0 < p.num_meta) ? nqt - 1 : std::min(nqt - 1, (k1 - 1 + p.window) / kQ);
        for (int64_t hh = 0; hh < d.group; ++hh) {
          const int64_t bh = b * d.Hq + hk * d.group + hh;
          for (int64_t qt = qt_first; qt <= qt_last; ++qt) {
            const int64_t q0 = qt * kQ, q1 = std::min(d.T, q0 + kQ), nq = q1 - q0;
            const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, p.window, p.num_meta);
            if (vis == TileVisibility::None) continue;
            const T* qp = q + (bh * d.T + q0) * d.dk;
            const T* dop = dout + (bh * d.T + q0) * d.dv;
            for (int64_t i = 0; i < nq * d.dk; ++i) qs[i] = qp[i] * scale;
            block_scores(qs.data(), ktp, Tpad, s.data(), q0, nq, k0, nk, d.dk, vis, p);
            block_probs(s.data(), lse + bh * d.T + q0, nq, nk);
            if (dv) {  // dV += P^T dO
              block_acc(s.data(), 1, kK, dop, dva.data(), nk, nq, d.dv, d.dv, d.dv);
            }
            if (dk) {
              block_dots_t(dop, vtp + k0, Tpad, dp.data(), nq, nk, d.dv);  // dP = dO V^T
              // dS = P * (dP - delta); dK += dS^T q * scale (qs already holds the scale).
              block_ds(s.data(), dp.data(), delta.data() + bh * d.T + q0, nq, nk);
              if (keep_ds) {
                const int64_t ti = tile_index(bh, qt, kt);
                std::copy(dp.begin(), dp.begin() + nq * kK, ds_store.begin() + ti * kQ * kK);
                ds_kept[static_cast<size_t>(ti)] = 1;
              }
              block_acc(dp.data(), 1, kK, qs.data(), dka.data(), nk, nq, d.dk, d.dk, d.dk);
            }
          }
        }
        if (dk) std::copy(dka.begin(), dka.begin() + nk * d.dk, dk + (bk * d.T + k0) * d.dk);
        if (dv) std::copy(dva.begin(), dva.begin() + nk * d.dv, dv + (bk * d.T + k0) * d.dv);
      }
    });
  }

  // dq: one thread owns a (b, q head, query tile) and visits the same key tiles as the forward.
  if (dq) {
    parallel_for(d.B * d.Hq * nqt, grain_for(kQ * span * (d.dk + d.dv) * 4), [&](int64_t w0, int64_t w1) {
      std::vector<T> qs(kQ * d.dk), s(kQ * kK), dp(kQ * kK), dqa(kQ * d.dk);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t qt = w % nqt, bh = w / nqt, b = bh / d.Hq, h = bh % d.Hq, hk = h / d.group;
        const int64_t q0 = qt * kQ, q1 = std::min(d.T, q0 + kQ), nq = q1 - q0;
        const T* qp = q + (bh * d.T + q0) * d.dk;
        const T* dop = dout + (bh * d.T + q0) * d.dv;
        const T* kp = k + (b * d.Hkv + hk) * d.T * d.dk;
        const T* ktp = kT.data() + (b * d.Hkv + hk) * d.dk * Tpad;
        const T* vtp = vT.data() + (b * d.Hkv + hk) * d.dv * Tpad;
        for (int64_t i = 0; i < nq * d.dk; ++i) qs[i] = qp[i] * scale;
        std::fill(dqa.begin(), dqa.begin() + nq * d.dk, T(0));
        auto visit = [&](int64_t kt) {
          const int64_t k0 = kt * kK, k1 = std::min(d.T, k0 + kK), nk = k1 - k0;
          const TileVisibility vis = attention_tile_visibility(q0, q1, k0, k1, p.window, p.num_meta);
          if (vis == TileVisibility::None) return;
          if (keep_ds && ds_kept[static_cast<size_t>(tile_index(bh, qt, kt))]) {
            const T* ds = ds_store.data() + tile_index(bh, qt, kt) * kQ * kK;
            block_acc(ds, kK, 1, kp + k0 * d.dk, dqa.data(), nq, nk, d.dk, d.dk, d.dk);  // dQ += dS K
            return;
          }
          block_scores(qs.data(), ktp, Tpad, s.data(), q0, nq, k0, nk, d.dk, vis, p);
          block_probs(s.data(), lse + bh * d.T + q0, nq, nk);
          block_dots_t(dop, vtp + k0, Tpad, dp.data(), nq, nk, d.dv);  // dP = dO V^T
          block_ds(s.data(), dp.data(), delta.data() + bh * d.T + q0, nq, nk);  // dS
          block_acc(dp.data(), kK, 1, kp + k0 * d.dk, dqa.data(), nq, nk, d.dk, d.dk, d.dk);  // dQ += dS K
        };
        const KeyTileRanges tr = attention_key_tiles(q0, q1, kK, p.window, p.num_meta);
        for (int64_t kt = tr.m0; kt < tr.m1; ++kt) visit(kt);
        for (int64_t kt = tr.w0; kt < tr.w1; ++kt) visit(kt);
        T* dqp = dq + (bh * d.T + q0) * d.dk;
        for (int64_t i = 0; i < nq * d.dk; ++i) dqp[i] = dqa[i] * scale;
      }
    });
  }
}

template <typename T, typename S>
void decode_impl(const T* q, const T* kc, const T* vc, const int64_t* qpos, const int64_t* kpos, T* o, int64_t B,
                 int64_t Hq, int64_t Hkv, int64_t Tq, int64_t S_, int64_t dk, int64_t dv, const AttentionParams& p) {
  const T scale = T(scale_of(p, dk));
  const int64_t group = Hq / Hkv;
  parallel_for(B * Hq * Tq, grain_for(S_ * (dk + dv) * 2), [&](int64_t w0, int64_t w1) {
    std::vector<T> s(static_cast<size_t>(S_)), qs(static_cast<size_t>(dk));
    std::vector<S> acc(static_cast<size_t>(dv));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t t = w % Tq, bh = w / Tq, b = bh / Hq, h = bh % Hq, hk = h / group;
      const int64_t i = qpos[b * Tq + t];
      const T* kp = kc + (b * Hkv + hk) * S_ * dk;
      const T* vp = vc + (b * Hkv + hk) * S_ * dv;
      for (int64_t j = 0; j < dk; ++j) qs[j] = q[w * dk + j] * scale;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t c = 0; c < S_; ++c) {
        const int64_t j = kpos[b * S_ + c];
        if (j < 0 || !attention_visible(i, j, p.window, p.num_meta)) {
          s[c] = -std::numeric_limits<T>::infinity();
          continue;
        }
        s[c] = dot(qs.data(), kp + c * dk, dk);
        mx = std::max(mx, s[c]);
      }
      HYMBA_CHECK(mx != -std::numeric_limits<T>::infinity(), "attention_decode: query at position ", i,
                  " (batch ", b, ") sees no key in the cache");
      std::fill(acc.begin(), acc.end(), S(0));
      S sum = 0;
      for (int64_t c = 0; c < S_; ++c) {
        if (s[c] == -std::numeric_limits<T>::infinity()) continue;
        const S e = std::exp(S(s[c] - mx));
        sum += e;
        const T* vr = vp + c * dv;
        for (int64_t j = 0; j < dv; ++j) acc[j] += e * S(vr[j]);
      }
      for (int64_t j = 0; j < dv; ++j) o[w * dv + j] = T(acc[j] / sum);
    }
  });
}

}  // namespace

std::tuple<Tensor, Tensor> attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                             const AttentionParams& p) {
  const Dims d = check_qkv("attention", q_in, k_in, v_in, p);
  TensorOptions opt(q_in.dtype(), q_in.device());
  Tensor out = empty({d.B, d.Hq, d.T, d.dv}, opt);
  Tensor lse = empty({d.B, d.Hq, d.T}, TensorOptions(stat_dtype(q_in.dtype()), q_in.device()));
  if (d.B * d.Hq * d.T == 0) return {out, lse};
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    forward_impl<T, S>(q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<S>(), d, p);
  });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout_in, const Tensor& q_in, const Tensor& k_in,
                                                      const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
                                                      const AttentionParams& p, bool need_dq, bool need_dk,
                                                      bool need_dv) {
  const char* op = "attention_backward";
  const Dims d = check_qkv(op, q_in, k_in, v_in, p);
  const attn_check::QkvDims cd{d.B, d.Hq, d.Hkv, d.T, d.dk, d.dv};
  attn_check::check_dout_out(op, dout_in, out_in, q_in, cd);
  attn_check::check_lse(op, lse_in, q_in, cd, true);
  TensorOptions opt(q_in.dtype(), q_in.device());
  Tensor dq, dk, dv;
  if (need_dq) dq = empty(q_in.shape(), opt);
  if (need_dk) dk = empty(k_in.shape(), opt);
  if (need_dv) dv = empty(v_in.shape(), opt);
  if (!need_dq && !need_dk && !need_dv) return {dq, dk, dv};
  if (d.B * d.Hq * d.T == 0) {
    for (const Tensor& t : {dq, dk, dv})
      if (t.defined()) t.zero_();
    return {dq, dk, dv};
  }
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  Tensor dout = dout_in.contiguous(), out = out_in.contiguous(), lse = lse_in.contiguous();
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    backward_impl<T, S>(dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<S>(),
                        need_dq ? dq.data<T>() : nullptr, need_dk ? dk.data<T>() : nullptr,
                        need_dv ? dv.data<T>() : nullptr, d, p);
  });
  return {dq, dk, dv};
}

Tensor attention_decode(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& qpos_in,
                        const Tensor& kpos_in, const AttentionParams& p) {
  const char* op = "attention_decode";
  const attn_check::DecodeDims dd = attn_check::check_decode_qkv(op, q_in, k_in, v_in, check_float);
  const int64_t B = dd.B, Hq = dd.Hq, Tq = dd.Tq, dk = dd.dk, Hkv = dd.Hkv, S_ = dd.S, dv = dd.dv;
  HYMBA_CHECK(qpos_in.defined() && qpos_in.shape() == Shape({B, Tq}) &&
                  (qpos_in.dtype() == DType::I64 || qpos_in.dtype() == DType::I32),
              op, ": q_pos ", qpos_in.meta_str(), " must be i64 or i32 of shape ", shape_str({B, Tq}));
  HYMBA_CHECK(kpos_in.defined() && kpos_in.shape() == Shape({B, S_}) &&
                  (kpos_in.dtype() == DType::I64 || kpos_in.dtype() == DType::I32),
              op, ": k_pos ", kpos_in.meta_str(), " must be i64 or i32 of shape ", shape_str({B, S_}));
  HYMBA_CHECK(p.num_meta >= 0, op, ": num_meta must be >= 0, got ", p.num_meta);
  Tensor out = empty({B, Hq, Tq, dv}, TensorOptions(q_in.dtype(), q_in.device()));
  if (out.numel() == 0) return out;
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  Tensor qpos = qpos_in.to(DType::I64).contiguous(), kpos = kpos_in.to(DType::I64).contiguous();
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    decode_impl<T, double>(q.data<T>(), k.data<T>(), v.data<T>(), qpos.data<int64_t>(), kpos.data<int64_t>(),
                           out.data<T>(), B, Hq, Hkv, Tq, S_, dk, dv, p);
  });
  return out;
}

int64_t attention_visited_tiles(int64_t T, const AttentionParams& p) {
  int64_t n = 0;
  for (int64_t q0 = 0; q0 < T; q0 += kQ) {
    const int64_t q1 = std::min(T, q0 + kQ);
    const KeyTileRanges tr = attention_key_tiles(q0, q1, kK, p.window, p.num_meta);
    for (int64_t kt = tr.m0; kt < tr.m1; ++kt)
      n += attention_tile_visibility(q0, q1, kt * kK, std::min(T, kt * kK + kK), p.window, p.num_meta) !=
           TileVisibility::None;
    for (int64_t kt = tr.w0; kt < tr.w1; ++kt)
      n += attention_tile_visibility(q0, q1, kt * kK, std::min(T, kt * kK + kK), p.window, p.num_meta) !=
           TileVisibility::None;
  }
  return n;
}

}  // namespace hymba::kernels::cpu
