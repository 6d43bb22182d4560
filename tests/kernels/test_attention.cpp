// Attention kernels against a materialized masked softmax written plainly in float64.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "core/rng.h"
#include "kernels/attention.h"
#include "tests/test_util.h"
#include "tests/attention_test_case.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;
using kernels::AttentionParams;

using Cfg = testutil::AttentionCase;
using testutil::cfg_str;

bool visible_ref(int64_t i, int64_t j, int64_t W, int64_t M) { return j <= i && (W < 0 || i - j <= W || j < M); }

// Reference forward and backward: the full (T x T) probability matrix per (b, h).
struct Ref {
  std::vector<double> out, lse, dq, dk, dv;
};

Ref reference(const Cfg& c, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
              const std::vector<double>* dout) {
  const double scale = 1.0 / std::sqrt(double(c.dk));
  const int64_t g = c.Hq / c.Hkv, T = c.T;
  Ref r;
  r.out.assign(size_t(c.B * c.Hq * T * c.dv), 0);
  r.lse.assign(size_t(c.B * c.Hq * T), 0);
  r.dq.assign(q.size(), 0);
  r.dk.assign(k.size(), 0);
  r.dv.assign(v.size(), 0);
  std::vector<double> P(size_t(T * T)), dP(size_t(T * T));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h) {
      const int64_t hk = h / g;
      auto Q = [&](int64_t i, int64_t d) { return q[size_t(((b * c.Hq + h) * T + i) * c.dk + d)]; };
      auto K = [&](int64_t j, int64_t d) { return k[size_t(((b * c.Hkv + hk) * T + j) * c.dk + d)]; };
      auto V = [&](int64_t j, int64_t d) { return v[size_t(((b * c.Hkv + hk) * T + j) * c.dv + d)]; };
      for (int64_t i = 0; i < T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          double s = -INFINITY;
          if (visible_ref(i, j, c.window, c.meta)) {
            s = 0;
            for (int64_t d = 0; d < c.dk; ++d) s += Q(i, d) * K(j, d);
            s *= scale;
          }
          P[size_t(i * T + j)] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int64_t j = 0; j < T; ++j) sum += std::exp(P[size_t(i * T + j)] - mx);
        for (int64_t j = 0; j < T; ++j) P[size_t(i * T + j)] = std::exp(P[size_t(i * T + j)] - mx) / sum;
        r.lse[size_t((b * c.Hq + h) * T + i)] = mx + std::log(sum);
        for (int64_t d = 0; d < c.dv; ++d) {
          double o = 0;
          for (int64_t j = 0; j < T; ++j) o += P[size_t(i * T + j)] * V(j, d);
          r.out[size_t(((b * c.Hq + h) * T + i) * c.dv + d)] = o;
        }
      }
      if (!dout) continue;
      auto DO = [&](int64_t i, int64_t d) { return (*dout)[size_t(((b * c.Hq + h) * T + i) * c.dv + d)]; };
      for (int64_t i = 0; i < T; ++i) {
        double rowdot = 0;
        for (int64_t j = 0; j < T; ++j) {
          double s = 0;
          for (int64_t d = 0; d < c.dv; ++d) s += DO(i, d) * V(j, d);
          dP[size_t(i * T + j)] = s;
          rowdot += s * P[size_t(i * T + j)];
        }
        for (int64_t j = 0; j < T; ++j) {
          const double p = P[size_t(i * T + j)];
          const double ds = p * (dP[size_t(i * T + j)] - rowdot);
          for (int64_t d = 0; d < c.dv; ++d) r.dv[size_t(((b * c.Hkv + hk) * T + j) * c.dv + d)] += p * DO(i, d);
          for (int64_t d = 0; d < c.dk; ++d) {
            r.dq[size_t(((b * c.Hq + h) * T + i) * c.dk + d)] += ds * K(j, d) * scale;
            r.dk[size_t(((b * c.Hkv + hk) * T + j) * c.dk + d)] += ds * Q(i, d) * scale;
          }
        }
      }
    }
  return r;
}

double max_rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::abs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
  return err / scale;
}

struct Inputs {
  Tensor q, k, v;
};
Inputs make_inputs(const Cfg& c, DType dt, uint64_t seed) {
  Generator g(seed);
  return {randn({c.B, c.Hq, c.T, c.dk}, dt, &g), randn({c.B, c.Hkv, c.T, c.dk}, dt, &g),
          randn({c.B, c.Hkv, c.T, c.dv}, dt, &g)};
}

AttentionParams params_of(const Cfg& c) { return AttentionParams{0, c.window, c.meta}; }

// Awkward sizes: T not a multiple of the 64-row tiles, T < W, T >> W, M = 0, M spanning a
// tile boundary, Hq = Hkv, dv != dk, batch 1 and 3, W = 0 (only self + meta).
const std::vector<Cfg> kCfgs = {
    {1, 2, 1, 5, 4, 4, -1, 0},      {3, 4, 2, 130, 8, 16, -1, 0},  {2, 2, 2, 100, 8, 8, 200, 4},
    {1, 4, 2, 300, 8, 8, 16, 8},    {1, 2, 1, 150, 4, 4, 0, 3},    {1, 3, 1, 200, 4, 8, 70, 0},
    {1, 2, 1, 140, 4, 4, 10, 70},   {3, 2, 1, 65, 4, 12, 63, 1},   {1, 1, 1, 1, 4, 4, 0, 0},
};

TEST(AttentionKernel, ForwardMatchesMaterializedSoftmaxF64) {
  uint64_t seed = 1;
  for (const Cfg& c : kCfgs) {
    Inputs in = make_inputs(c, DType::F64, seed++);
    auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
    Ref r = reference(c, in.q.to_vector<double>(), in.k.to_vector<double>(), in.v.to_vector<double>(), nullptr);
    ASSERT_EQ(out.shape(), Shape({c.B, c.Hq, c.T, c.dv}));
    EXPECT_LT(max_rel_err(out.to_vector<double>(), r.out), 1e-12) << cfg_str(c);
    EXPECT_LT(max_rel_err(lse.to_vector<double>(), r.lse), 1e-12) << cfg_str(c);
  }
}

TEST(AttentionKernel, ForwardF32WithinTolerance) {
  // fp32 online softmax: relative error (to the largest output) below 1e-5.
  uint64_t seed = 100;
  for (const Cfg& c : kCfgs) {
    Inputs in = make_inputs(c, DType::F32, seed++);
    auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
    EXPECT_EQ(lse.dtype(), DType::F32);
    Ref r = reference(c, in.q.to_vector<double>(), in.k.to_vector<double>(), in.v.to_vector<double>(), nullptr);
    EXPECT_LT(max_rel_err(out.to_vector<double>(), r.out), 1e-5) << cfg_str(c);
    EXPECT_LT(max_rel_err(lse.to_vector<double>(), r.lse), 1e-5) << cfg_str(c);
  }
}

TEST(AttentionKernel, BackwardMatchesReferenceF64) {
  uint64_t seed = 200;
  for (const Cfg& c : kCfgs) {
    Inputs in = make_inputs(c, DType::F64, seed++);
    Generator g(seed * 7);
    Tensor dout = randn({c.B, c.Hq, c.T, c.dv}, DType::F64, &g);
    auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
    auto [dq, dk, dv] = kernels::attention_backward(dout, in.q, in.k, in.v, out, lse, params_of(c));
    std::vector<double> dov = dout.to_vector<double>();
    Ref r = reference(c, in.q.to_vector<double>(), in.k.to_vector<double>(), in.v.to_vector<double>(), &dov);
    EXPECT_LT(max_rel_err(dq.to_vector<double>(), r.dq), 1e-11) << cfg_str(c);
    EXPECT_LT(max_rel_err(dk.to_vector<double>(), r.dk), 1e-11) << cfg_str(c);
    EXPECT_LT(max_rel_err(dv.to_vector<double>(), r.dv), 1e-11) << cfg_str(c);
    // Each gradient alone gives the same values.
    auto [dq2, dk2, dv2] = kernels::attention_backward(dout, in.q, in.k, in.v, out, lse, params_of(c), false, true, false);
    EXPECT_FALSE(dq2.defined());
    EXPECT_FALSE(dv2.defined());
    EXPECT_EQ(dk2.to_vector<double>(), dk.to_vector<double>());
    // dq alone takes the path that recomputes dS instead of keeping it from the dk/dv pass.
    auto [dq3, dk3, dv3] = kernels::attention_backward(dout, in.q, in.k, in.v, out, lse, params_of(c), true, false, false);
    EXPECT_FALSE(dk3.defined());
    EXPECT_EQ(dq3.to_vector<double>(), dq.to_vector<double>());
  }
}

TEST(AttentionKernel, NonContiguousInputs) {
  // q read as a (B, T, H, d) projection permuted to (B, H, T, d).
  Cfg c{2, 4, 2, 70, 8, 8, 20, 3};
  Generator g(5);
  Tensor q = randn({c.B, c.T, c.Hq, c.dk}, DType::F64, &g).permute({0, 2, 1, 3});
  Tensor k = randn({c.B, c.T, c.Hkv, c.dk}, DType::F64, &g).permute({0, 2, 1, 3});
  Tensor v = randn({c.B, c.Hkv, c.T, 2 * c.dv}, DType::F64, &g).narrow(3, 3, c.dv);
  ASSERT_FALSE(q.is_contiguous());
  auto [out, lse] = kernels::attention_forward(q, k, v, params_of(c));
  Ref r = reference(c, q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(), nullptr);
  EXPECT_LT(max_rel_err(out.to_vector<double>(), r.out), 1e-12);
}

TEST(AttentionKernel, DeterministicAcrossRuns) {
  Cfg c{1, 4, 1, 200, 8, 8, 50, 5};
  Inputs in = make_inputs(c, DType::F32, 9);
  Generator g(10);
  Tensor dout = randn({c.B, c.Hq, c.T, c.dv}, DType::F32, &g);
  auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
  auto a = kernels::attention_backward(dout, in.q, in.k, in.v, out, lse, params_of(c));
  auto b = kernels::attention_backward(dout, in.q, in.k, in.v, out, lse, params_of(c));
  EXPECT_EQ(std::get<1>(a).to_vector<float>(), std::get<1>(b).to_vector<float>());
  EXPECT_EQ(std::get<0>(a).to_vector<float>(), std::get<0>(b).to_vector<float>());
}

TEST(AttentionKernel, TileVisibilityMatchesBruteForce) {
  Generator g(3);
  std::vector<double> r = rand({4000, 6}, DType::F64, &g).to_vector<double>();
  for (size_t n = 0; n < 4000; ++n) {
    const double* u = r.data() + n * 6;
    const int64_t q0 = int64_t(u[0] * 200), q1 = q0 + 1 + int64_t(u[1] * 70);
    const int64_t k0 = int64_t(u[2] * 200), k1 = k0 + 1 + int64_t(u[3] * 70);
    const int64_t W = int64_t(u[4] * 90) - 10, M = int64_t(u[5] * 3) == 0 ? 0 : int64_t(u[5] * 100);
    bool any = false, all = true;
    for (int64_t i = q0; i < q1; ++i)
      for (int64_t j = k0; j < k1; ++j) {
        const bool vis = visible_ref(i, j, W, M);
        any |= vis;
        all &= vis;
      }
    const auto want = !any ? kernels::TileVisibility::None
                           : (all ? kernels::TileVisibility::All : kernels::TileVisibility::Partial);
    ASSERT_EQ(kernels::attention_tile_visibility(q0, q1, k0, k1, W, M), want)
        << "q [" << q0 << "," << q1 << ") k [" << k0 << "," << k1 << ") W=" << W << " M=" << M;
  }
}

TEST(AttentionKernel, KeyTileRangesCoverEveryVisibleTile) {
  const int64_t tile = 16;
  for (int64_t W : {-1, 0, 5, 16, 40}) {
    for (int64_t M : {0, 3, 16, 37}) {
      for (int64_t q0 = 0; q0 < 200; q0 += 13) {
        const int64_t q1 = q0 + 13;
        auto tr = kernels::attention_key_tiles(q0, q1, tile, W, M);
        ASSERT_LE(tr.m1, tr.w0);  // disjoint and ordered
        for (int64_t kt = 0; kt * tile < q1; ++kt) {
          const bool covered = (kt >= tr.m0 && kt < tr.m1) || (kt >= tr.w0 && kt < tr.w1);
          const bool vis = kernels::attention_tile_visibility(q0, q1, kt * tile, kt * tile + tile, W, M) !=
                           kernels::TileVisibility::None;
          if (vis) {
            EXPECT_TRUE(covered) << "W=" << W << " M=" << M << " q0=" << q0 << " kt=" << kt;
          }
        }
      }
    }
  }
}

TEST(AttentionKernel, SlidingWindowVisitsLinearlyManyTiles) {
  // The number of computed blocks is the cost model: for W = 256, M = 16 it must grow
  // linearly in T (equal increments per doubling step of fixed size), while full attention
  // grows quadratically (nqt (nqt + 1) / 2 blocks).
  const AttentionParams swa{0, 256, 16}, full{0, -1, 0};
  const int64_t q = kernels::kAttnQueryTile, kk = kernels::kAttnKeyTile;
  std::vector<int64_t> counts;
  for (int64_t T : {2048, 4096, 8192, 16384}) {
    const int64_t n = kernels::cpu::attention_visited_tiles(T, swa);
    const int64_t nqt = T / q;
    // Per query tile: at most one meta tile plus the tiles spanning W + a query tile.
    EXPECT_LE(n, nqt * ((256 + q) / kk + 2)) << T;
    EXPECT_EQ(kernels::cpu::attention_visited_tiles(T, full), nqt * (nqt + 1) / 2) << T;
    counts.push_back(n);
  }
  // Doubling T doubles the count up to a constant from the first tiles.
  EXPECT_EQ(counts[2] - 2 * counts[1], counts[1] - 2 * counts[0]);
  EXPECT_EQ(counts[3] - 2 * counts[2], counts[1] - 2 * counts[0]);
}

// Builds a cache (B, Hkv, S, d) of the given positions (slot s holds key position pos[b][s],
// or stays zero when pos is -1) from full-sequence keys.
Tensor gather_cache(const Tensor& full, const std::vector<std::vector<int64_t>>& pos) {
  const int64_t B = full.size(0), H = full.size(1), d = full.size(3), S = int64_t(pos[0].size());
  std::vector<double> src = full.to_vector<double>(), dst(size_t(B * H * S * d), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t p = pos[size_t(b)][size_t(s)];
        if (p < 0) continue;
        for (int64_t j = 0; j < d; ++j)
          dst[size_t(((b * H + h) * S + s) * d + j)] = src[size_t(((b * H + h) * full.size(2) + p) * d + j)];
      }
  return from_vector<double>(dst, {B, H, S, d}).to(full.dtype());
}

TEST(AttentionKernel, DecodeMatchesFullForwardSlidingWindowRing) {
  // A sliding-window cache of M meta slots plus a ring of W + Tq slots, decoding Tq queries
  // per step after a prefill; each step's output must equal the full forward's rows.
  const int64_t B = 2, Hq = 4, Hkv = 2, T = 90, dk = 8, dv = 16, W = 12, M = 5;
  for (int64_t Tq : {1, 3}) {
    Cfg c{B, Hq, Hkv, T, dk, dv, W, M};
    Inputs in = make_inputs(c, DType::F64, 40 + uint64_t(Tq));
    auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
    const int64_t ring = W + Tq, S = M + ring;
    std::vector<std::vector<int64_t>> pos(size_t(B), std::vector<int64_t>(size_t(S), -1));
    int64_t t = 0;
    auto append = [&](int64_t p) {
      for (int64_t b = 0; b < B; ++b) pos[size_t(b)][size_t(kernels::kv_ring_slot(p, M, ring))] = p;
    };
    for (; t < 30; ++t) append(t);  // prefill: keys 0..29 (older ones overwritten in the ring)
    for (; t + Tq <= T; t += Tq) {
      for (int64_t p = t; p < t + Tq; ++p) append(p);
      Tensor kc = gather_cache(in.k, pos), vc = gather_cache(in.v, pos);
      std::vector<int64_t> kp, qp;
      for (int64_t b = 0; b < B; ++b) {
        kp.insert(kp.end(), pos[size_t(b)].begin(), pos[size_t(b)].end());
        for (int64_t p = t; p < t + Tq; ++p) qp.push_back(p);
      }
      Tensor qn = in.q.narrow(2, t, Tq);
      Tensor o = kernels::attention_decode(qn, kc, vc, from_vector<int64_t>(qp, {B, Tq}),
                                           from_vector<int64_t>(kp, {B, S}), params_of(c));
      Tensor want = out.narrow(2, t, Tq).contiguous();
      ASSERT_LT(max_rel_err(o.to_vector<double>(), want.to_vector<double>()), 1e-12) << "t=" << t << " Tq=" << Tq;
    }
  }
}

TEST(AttentionKernel, DecodeFullCacheAnySlotOrder) {
  // A full-attention cache whose slots are a different permutation per batch entry, with
  // some empty slots (-1), f32.
  const int64_t B = 2, T = 40, S = 48;
  Cfg c{B, 2, 1, T, 8, 4, -1, 0};
  Inputs in = make_inputs(c, DType::F32, 77);
  auto [out, lse] = kernels::attention_forward(in.q, in.k, in.v, params_of(c));
  std::vector<std::vector<int64_t>> pos(size_t(B), std::vector<int64_t>(size_t(S), -1));
  for (int64_t p = 0; p < T; ++p) {
    pos[0][size_t(p)] = p;
    pos[1][size_t((p * 7) % S)] = p;
  }
  std::vector<int64_t> kp, qp = {T - 1, T - 1};
  for (auto& r : pos) kp.insert(kp.end(), r.begin(), r.end());
  Tensor o = kernels::attention_decode(in.q.narrow(2, T - 1, 1), gather_cache(in.k, pos), gather_cache(in.v, pos),
                                       from_vector<int64_t>(qp, {B, 1}), from_vector<int64_t>(kp, {B, S}),
                                       params_of(c));
  Tensor want = out.narrow(2, T - 1, 1).contiguous();
  EXPECT_LT(max_rel_err(o.to_vector<double>(), want.to_vector<double>()), 1e-5);
}

using testutil::error_of;

TEST(AttentionKernel, BadInputsNameOpAndShapes) {
  Tensor q = zeros({1, 3, 8, 4}), k = zeros({1, 2, 8, 4}), v = zeros({1, 2, 8, 4});
  std::string msg = error_of([&] { kernels::attention_forward(q, k, v); });
  EXPECT_THAT(msg, HasSubstr("attention"));
  EXPECT_THAT(msg, HasSubstr("[1, 3, 8, 4]"));
  EXPECT_THAT(msg, HasSubstr("[1, 2, 8, 4]"));
  msg = error_of([&] { kernels::attention_forward(zeros({1, 2, 8, 4}), zeros({1, 2, 7, 4}), v); });
  EXPECT_THAT(msg, HasSubstr("attention"));
  EXPECT_THAT(msg, HasSubstr("[1, 2, 7, 4]"));
  msg = error_of([&] { kernels::attention_forward(zeros({1, 2, 8, 4}), zeros({1, 2, 8, 4}, DType::F64), v); });
  EXPECT_THAT(msg, HasSubstr("attention"));
  EXPECT_THAT(msg, HasSubstr("f64"));
  msg = error_of([&] { kernels::attention_forward(zeros({2, 8, 4}), k, v); });
  EXPECT_THAT(msg, HasSubstr("[2, 8, 4]"));
  msg = error_of([&] {
    kernels::attention_decode(zeros({1, 2, 1, 4}), k, v, from_vector<int64_t>({0}, {1, 1}),
                              from_vector<int64_t>({0, 1}, {1, 2}));
  });
  EXPECT_THAT(msg, HasSubstr("attention_decode"));
  EXPECT_THAT(msg, HasSubstr("[1, 2]"));
}

}  // namespace
}  // namespace hymba
