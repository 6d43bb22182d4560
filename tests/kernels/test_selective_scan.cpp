// Selective scan kernels against a plain float64 sequential loop (HYMBA_SPEC section 2), whose
// own reverse pass (holding every state) gives the reference gradients.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/selective_scan.h"
#include "tests/test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

struct ScanInputs {
  Tensor u, delta, A, B, C, D, z, bias;
  bool softplus = true;
};

struct Config {
  int64_t B, D, N, L, chunk;
  bool use_z, softplus, use_D;
  int bias;  // 0: absent, 1: zeros, 2: random
};

std::string name(const Config& c) {
  return hymba::str("B", c.B, " D", c.D, " N", c.N, " L", c.L, " chunk", c.chunk, c.use_z ? " z" : "",
                    c.softplus ? " softplus" : "", c.use_D ? " D" : "", " bias", c.bias);
}

// Model-like magnitudes: A negative (A = -exp(A_log)), delta after softplus around 0.05..1.
ScanInputs make_inputs(const Config& c, DType dt, uint64_t seed) {
  Generator g(seed);
  ScanInputs s;
  s.u = randn({c.B, c.D, c.L}, dt, &g);
  s.delta = c.softplus ? rand({c.B, c.D, c.L}, dt, &g, -3.0, 0.5) : rand({c.B, c.D, c.L}, dt, &g, 0.02, 0.8);
  s.A = rand({c.D, c.N}, dt, &g, -2.0, -0.1);
  s.B = randn({c.B, c.N, c.L}, dt, &g);
  s.C = randn({c.B, c.N, c.L}, dt, &g);
  if (c.use_D) s.D = randn({c.D}, dt, &g);
  if (c.use_z) s.z = randn({c.B, c.D, c.L}, dt, &g);
  if (c.bias == 1) s.bias = zeros({c.D}, dt);
  if (c.bias == 2) s.bias = rand({c.D}, dt, &g, -0.5, 0.5);
  s.softplus = c.softplus;
  return s;
}

std::vector<double> vec(const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>(); }

double softplus_ref(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }
double sigmoid_ref(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// The definition, in float64, keeping every state: states[((b*D + d)*(L+1) + t)*N + n] is h
// after t steps.
struct Reference {
  std::vector<double> out, states;
  std::vector<double> du, ddelta, dA, dB, dC, dD, dz, dbias;
};

Reference reference(const ScanInputs& s, const std::vector<double>* dout) {
  const int64_t Bn = s.u.size(0), Dn = s.u.size(1), L = s.u.size(2), N = s.A.size(1);
  auto u = vec(s.u), delta = vec(s.delta), A = vec(s.A), B = vec(s.B), C = vec(s.C), D = vec(s.D), z = vec(s.z),
       bias = vec(s.bias);
  Reference r;
  r.out.assign(size_t(Bn * Dn * L), 0);
  r.states.assign(size_t(Bn * Dn * (L + 1) * N), 0);
  auto H = [&](int64_t b, int64_t d, int64_t t, int64_t n) -> double& {
    return r.states[size_t(((b * Dn + d) * (L + 1) + t) * N + n)];
  };
  auto dlt = [&](int64_t i, int64_t d) {
    double v = delta[size_t(i)] + (bias.empty() ? 0.0 : bias[size_t(d)]);
    return s.softplus ? softplus_ref(v) : v;
  };
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t d = 0; d < Dn; ++d)
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * Dn + d) * L + t;
        const double dt = dlt(i, d);
        double y = D.empty() ? 0.0 : D[size_t(d)] * u[size_t(i)];
        for (int64_t n = 0; n < N; ++n) {
          H(b, d, t + 1, n) = std::exp(dt * A[size_t(d * N + n)]) * H(b, d, t, n) +
                              dt * B[size_t((b * N + n) * L + t)] * u[size_t(i)];
          y += C[size_t((b * N + n) * L + t)] * H(b, d, t + 1, n);
        }
        if (!z.empty()) y *= z[size_t(i)] * sigmoid_ref(z[size_t(i)]);
        r.out[size_t(i)] = y;
      }
  if (!dout) return r;
  r.du.assign(u.size(), 0);
  r.ddelta.assign(u.size(), 0);
  r.dA.assign(A.size(), 0);
  r.dB.assign(B.size(), 0);
  r.dC.assign(C.size(), 0);
  r.dD.assign(size_t(Dn), 0);
  r.dz.assign(u.size(), 0);
  r.dbias.assign(size_t(Dn), 0);
  std::vector<double> gh(static_cast<size_t>(N));
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t d = 0; d < Dn; ++d) {
      std::fill(gh.begin(), gh.end(), 0.0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t i = (b * Dn + d) * L + t;
        const double dt = dlt(i, d);
        double y = D.empty() ? 0.0 : D[size_t(d)] * u[size_t(i)];
        for (int64_t n = 0; n < N; ++n) y += C[size_t((b * N + n) * L + t)] * H(b, d, t + 1, n);
        double gy = (*dout)[size_t(i)];
        if (!z.empty()) {
          const double zz = z[size_t(i)], sg = sigmoid_ref(zz);
          r.dz[size_t(i)] = gy * y * sg * (1 + zz * (1 - sg));
          gy *= zz * sg;
        }
        if (!D.empty()) {
          r.dD[size_t(d)] += gy * u[size_t(i)];
          r.du[size_t(i)] += gy * D[size_t(d)];
        }
        double gdt = 0;
        for (int64_t n = 0; n < N; ++n) {
          const size_t bi = size_t((b * N + n) * L + t);
          gh[size_t(n)] += gy * C[bi];  // dL/dh_t, complete now
          r.dC[bi] += gy * H(b, d, t + 1, n);
          const double a = std::exp(dt * A[size_t(d * N + n)]);
          gdt += gh[size_t(n)] * (A[size_t(d * N + n)] * a * H(b, d, t, n) + B[bi] * u[size_t(i)]);
          r.dA[size_t(d * N + n)] += gh[size_t(n)] * dt * a * H(b, d, t, n);
          r.dB[bi] += gh[size_t(n)] * dt * u[size_t(i)];
          r.du[size_t(i)] += gh[size_t(n)] * dt * B[bi];
          gh[size_t(n)] *= a;
        }
        const double v = delta[size_t(i)] + (bias.empty() ? 0.0 : bias[size_t(d)]);
        const double gv = s.softplus ? gdt * (v > 20 ? 1.0 : sigmoid_ref(v)) : gdt;
        r.ddelta[size_t(i)] = gv;
        r.dbias[size_t(d)] += gv;
      }
    }
  return r;
}

// max |a - b| <= atol + rtol * max |b|: a scale-aware bound for vectors whose entries vary
// over orders of magnitude (reductions like dA sum thousands of terms).
void expect_close(const std::vector<double>& a, const std::vector<double>& b, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::abs(b[i]));
  for (size_t i = 0; i < b.size(); ++i)
    if (std::abs(a[i] - b[i]) > worst) {
      worst = std::abs(a[i] - b[i]);
      at = i;
    }
  EXPECT_LE(worst, atol + rtol * scale) << what << ": element " << at << " got " << a[at] << " expected " << b[at]
                                        << " (max |ref| " << scale << ")";
}

auto run_forward(const ScanInputs& s, int64_t chunk) {
  return kernels::selective_scan_forward(s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, s.softplus, chunk);
}

void check_forward(const Config& c, DType dt, double tol) {
  ScanInputs s = make_inputs(c, dt, 7 + uint64_t(c.L));
  auto [out, last, states] = run_forward(s, c.chunk);
  Reference r = reference(s, nullptr);
  const std::string what = name(c) + " " + dtype_name(dt);
  expect_close(vec(out), r.out, tol, tol, what + " out");
  // Final state and every chunk end state.
  const int64_t nc = (c.L + c.chunk - 1) / c.chunk;
  ASSERT_EQ(states.shape(), Shape({c.B, c.D, nc, c.N})) << what;
  std::vector<double> want_last, want_states;
  for (int64_t bd = 0; bd < c.B * c.D; ++bd) {
    for (int64_t k = 0; k < nc; ++k) {
      const int64_t t = std::min(c.L, (k + 1) * c.chunk);
      for (int64_t n = 0; n < c.N; ++n) want_states.push_back(r.states[size_t((bd * (c.L + 1) + t) * c.N + n)]);
    }
    for (int64_t n = 0; n < c.N; ++n) want_last.push_back(r.states[size_t((bd * (c.L + 1) + c.L) * c.N + n)]);
  }
  expect_close(vec(last), want_last, tol, tol, what + " final state");
  expect_close(vec(states), want_states, tol, tol, what + " chunk states");
}

const std::vector<Config> kConfigs = {
    {2, 3, 4, 9, 4, true, true, true, 2},      // L not a multiple of chunk
    {2, 3, 4, 9, 4, false, false, false, 0},   // no z, no softplus, no D, no bias
    {1, 5, 16, 130, 64, true, true, true, 1},  // batch 1, zero bias
    {3, 2, 3, 5, 8, false, true, true, 2},     // L < chunk, batch 3
    {2, 1, 1, 1, 1, true, true, true, 2},      // size-1 everything
    {1, 4, 16, 128, 64, true, false, true, 0}, // L a multiple of chunk
};

TEST(SelectiveScanKernel, ForwardMatchesFloat64DefinitionInF64) {
  for (const Config& c : kConfigs) check_forward(c, DType::F64, 1e-12);
}

TEST(SelectiveScanKernel, ForwardMatchesFloat64DefinitionInF32) {
  // fp32 accumulation over a few hundred steps: 1e-5 of the output scale.
  for (const Config& c : kConfigs) check_forward(c, DType::F32, 1e-5);
}

TEST(SelectiveScanKernel, ResultsDoNotDependOnChunk) {
  Config c{2, 3, 8, 37, 1, true, true, true, 2};
  ScanInputs s = make_inputs(c, DType::F64, 3);
  auto [out1, last1, st1] = run_forward(s, 1);
  Tensor dout = randn(s.u.shape(), DType::F64);
  auto g1 = kernels::selective_scan_backward(dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true, st1, 1);
  for (int64_t chunk : {5, 37, 100}) {
    auto [out, last, st] = run_forward(s, chunk);
    auto g = kernels::selective_scan_backward(dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true, st, chunk);
    const std::string w = "chunk " + std::to_string(chunk);
    expect_close(vec(out), vec(out1), 1e-12, 1e-12, w + " out");
    expect_close(vec(last), vec(last1), 1e-12, 1e-12, w + " last");
    expect_close(vec(g.du), vec(g1.du), 1e-12, 1e-12, w + " du");
    expect_close(vec(g.dA), vec(g1.dA), 1e-12, 1e-12, w + " dA");
    expect_close(vec(g.dB), vec(g1.dB), 1e-12, 1e-12, w + " dB");
  }
}

TEST(SelectiveScanKernel, NonContiguousInputs) {
  Config c{2, 3, 4, 11, 4, true, true, true, 2};
  ScanInputs s = make_inputs(c, DType::F64, 5);
  Reference r = reference(s, nullptr);
  ScanInputs v = s;
  // Same values through transposed and sliced layouts.
  v.u = s.u.permute({0, 2, 1}).contiguous().permute({0, 2, 1});
  v.B = s.B.permute({0, 2, 1}).contiguous().permute({0, 2, 1});
  Tensor wide = zeros({c.B, c.D, 2 * c.L}, DType::F64);
  wide.slice(2, 0, 2 * c.L, 2).copy_(s.delta);
  v.delta = wide.slice(2, 0, 2 * c.L, 2);
  v.A = s.A.t().contiguous().t();
  ASSERT_FALSE(v.u.is_contiguous());
  ASSERT_FALSE(v.delta.is_contiguous());
  auto [out, last, st] = run_forward(v, c.chunk);
  expect_close(vec(out), r.out, 1e-12, 1e-12, "non-contiguous out");
}

// The mixer passes u, delta, z as (B, L, D) projections transposed to (B, D, L): channels
// contiguous. The kernel reads them in place (16 channels per SIMD lane, through an
// in-register transpose); the results must be bit for bit those of contiguous inputs.
TEST(SelectiveScanKernel, ChannelContiguousInputsGiveIdenticalResults) {
  for (DType dt : {DType::F32, DType::F64}) {
    Config c{2, 40, 16, 70, 16, true, true, true, 2};
    ScanInputs s = make_inputs(c, dt, 31);
    ScanInputs v = s;
    auto channels_last = [](const Tensor& t) { return t.permute({0, 2, 1}).contiguous().permute({0, 2, 1}); };
    v.u = channels_last(s.u);
    v.delta = channels_last(s.delta);
    v.z = channels_last(s.z);
    ASSERT_FALSE(v.u.is_contiguous());
    Generator g(32);
    Tensor dout = randn(s.u.shape(), dt, &g);
    auto [out, last, st] = run_forward(s, c.chunk);
    auto [out2, last2, st2] = run_forward(v, c.chunk);
    const std::string w = dtype_name(dt);
    EXPECT_EQ(vec(out2), vec(out)) << w;
    EXPECT_EQ(vec(last2), vec(last)) << w;
    auto g1 = kernels::selective_scan_backward(dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, s.softplus, st,
                                               c.chunk);
    auto g2 = kernels::selective_scan_backward(channels_last(dout), v.u, v.delta, v.A, v.B, v.C, v.D, v.z, v.bias,
                                               v.softplus, st2, c.chunk);
    EXPECT_EQ(vec(g2.du), vec(g1.du)) << w;
    EXPECT_EQ(vec(g2.ddelta), vec(g1.ddelta)) << w;
    EXPECT_EQ(vec(g2.dz), vec(g1.dz)) << w;
    EXPECT_EQ(vec(g2.dA), vec(g1.dA)) << w;
    EXPECT_EQ(vec(g2.dB), vec(g1.dB)) << w;
    EXPECT_EQ(vec(g2.dC), vec(g1.dC)) << w;
    EXPECT_EQ(vec(g2.dD), vec(g1.dD)) << w;
    EXPECT_EQ(vec(g2.ddelta_bias), vec(g1.ddelta_bias)) << w;
  }
}

void check_backward(const Config& c, DType dt, double tol) {
  ScanInputs s = make_inputs(c, dt, 100 + uint64_t(c.L));
  Generator g(77);
  Tensor dout = randn(s.u.shape(), dt, &g);
  auto [out, last, st] = run_forward(s, c.chunk);
  auto gr = kernels::selective_scan_backward(dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, s.softplus, st,
                                             c.chunk);
  const std::vector<double> dv = vec(dout);
  Reference r = reference(s, &dv);
  const std::string w = name(c) + " " + dtype_name(dt);
  expect_close(vec(gr.du), r.du, tol, tol, w + " du");
  expect_close(vec(gr.ddelta), r.ddelta, tol, tol, w + " ddelta");
  expect_close(vec(gr.dA), r.dA, tol, tol, w + " dA");
  expect_close(vec(gr.dB), r.dB, tol, tol, w + " dB");
  expect_close(vec(gr.dC), r.dC, tol, tol, w + " dC");
  EXPECT_EQ(gr.dD.defined(), c.use_D) << w;
  EXPECT_EQ(gr.dz.defined(), c.use_z) << w;
  EXPECT_EQ(gr.ddelta_bias.defined(), c.bias != 0) << w;
  if (c.use_D) expect_close(vec(gr.dD), r.dD, tol, tol, w + " dD");
  if (c.use_z) expect_close(vec(gr.dz), r.dz, tol, tol, w + " dz");
  if (c.bias) expect_close(vec(gr.ddelta_bias), r.dbias, tol, tol, w + " ddelta_bias");
}

TEST(SelectiveScanKernel, BackwardMatchesFloat64ReverseInF64) {
  for (const Config& c : kConfigs) check_backward(c, DType::F64, 1e-11);
}

TEST(SelectiveScanKernel, BackwardMatchesFloat64ReverseInF32AtAwkwardSizes) {
  // Long sums (dA over b and t, dB/dC over d) in fp32: 2e-5 of each gradient's scale.
  const std::vector<Config> cs = {
      {3, 7, 16, 203, 64, true, true, true, 2},  // L = 3 chunks + 11
      {1, 33, 16, 70, 128, false, true, true, 1},  // L < chunk, D not a multiple of the blocks
      {2, 5, 5, 129, 64, true, false, false, 0},
  };
  for (const Config& c : cs) check_backward(c, DType::F32, 2e-5);
}

TEST(SelectiveScanKernel, BackwardIsIdenticalForAnyThreadCount) {
  Config c{2, 37, 16, 150, 64, true, true, true, 2};
  ScanInputs s = make_inputs(c, DType::F32, 9);
  Tensor dout = randn(s.u.shape(), DType::F32);
  const int saved = num_threads();
  std::vector<std::vector<float>> results[2];
  for (int k = 0; k < 2; ++k) {
    set_num_threads(k + 1);
    auto [out, last, st] = run_forward(s, c.chunk);
    auto g = kernels::selective_scan_backward(dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true, st, 64);
    for (const Tensor& t : {out, g.du, g.ddelta, g.dA, g.dB, g.dC, g.dD, g.dz, g.ddelta_bias})
      results[k].push_back(t.to_vector<float>());
  }
  set_num_threads(saved);
  for (size_t i = 0; i < results[0].size(); ++i)
    EXPECT_TRUE(results[0][i] == results[1][i]) << "output " << i << " differs between 1 and 2 threads";
}

TEST(SelectiveScanKernel, StepKernelReproducesTheFullScan) {
  for (DType dt : {DType::F64, DType::F32}) {
    for (bool use_z : {false, true}) {
      Config c{2, 3, 16, 13, 4, use_z, true, true, 2};
      ScanInputs s = make_inputs(c, dt, 21);
      auto [out, last, st] = run_forward(s, c.chunk);
      Tensor state = zeros({c.B, c.D, c.N}, dt);
      std::vector<double> got(size_t(c.B * c.D * c.L));
      for (int64_t t = 0; t < c.L; ++t) {
        Tensor o = kernels::selective_scan_step(state, s.u.select(2, t), s.delta.select(2, t), s.A,
                                                s.B.select(2, t), s.C.select(2, t), s.D,
                                                use_z ? s.z.select(2, t) : Tensor(), s.bias, true);
        auto ov = vec(o);
        for (int64_t i = 0; i < c.B * c.D; ++i) got[size_t(i * c.L + t)] = ov[size_t(i)];
      }
      const double tol = dt == DType::F64 ? 1e-13 : 1e-6;
      expect_close(got, vec(out), tol, tol, std::string("step out ") + dtype_name(dt));
      expect_close(vec(state), vec(last), tol, tol, std::string("step state ") + dtype_name(dt));
    }
  }
}

using testutil::error_of;

TEST(SelectiveScanKernel, BadInputsNameTheOpAndShapes) {
  Config c{2, 3, 4, 9, 4, true, true, true, 2};
  ScanInputs s = make_inputs(c, DType::F32, 1);
  auto fwd = [&](const ScanInputs& v) { run_forward(v, 4); };
  {
    ScanInputs v = s;
    v.delta = randn({2, 3, 8});
    std::string m = error_of([&] { fwd(v); });
    EXPECT_THAT(m, HasSubstr("selective_scan"));
    EXPECT_THAT(m, HasSubstr("delta has shape [2, 3, 8], expected [2, 3, 9]"));
  }
  {
    ScanInputs v = s;
    v.A = randn({4, 4});
    std::string m = error_of([&] { fwd(v); });
    EXPECT_THAT(m, HasSubstr("selective_scan"));
    EXPECT_THAT(m, HasSubstr("A has shape [4, 4]"));
    EXPECT_THAT(m, HasSubstr("[2, 3, 9]"));
  }
  {
    ScanInputs v = s;
    v.B = randn({2, 5, 9});
    std::string m = error_of([&] { fwd(v); });
    EXPECT_THAT(m, HasSubstr("B has shape [2, 5, 9], expected [2, 4, 9]"));
  }
  {
    ScanInputs v = s;
    v.z = randn({2, 3, 9}, DType::F64);
    std::string m = error_of([&] { fwd(v); });
    EXPECT_THAT(m, HasSubstr("selective_scan: dtype mismatch"));
    EXPECT_THAT(m, HasSubstr("f64[2, 3, 9]"));
    EXPECT_THAT(m, HasSubstr("f32[2, 3, 9]"));
  }
  {
    ScanInputs v = s;
    v.bias = randn({4});
    EXPECT_THAT(error_of([&] { fwd(v); }), HasSubstr("delta_bias has shape [4], expected [3]"));
  }
  {
    ScanInputs v = s;
    v.u = randn({2, 3, 9}).to(DType::I32);
    EXPECT_THAT(error_of([&] { fwd(v); }), HasSubstr("selective_scan: dtype i32 not supported"));
  }
  EXPECT_THAT(error_of([&] { run_forward(s, 0); }), HasSubstr("selective_scan: chunk must be >= 1"));
  auto [out, last, st] = run_forward(s, 4);
  EXPECT_THAT(error_of([&] {
                kernels::selective_scan_backward(out, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true, st, 8);
              }),
              HasSubstr("selective_scan_backward: chunk_states has shape [2, 3, 3, 4], expected [2, 3, 2, 4]"));
  EXPECT_THAT(error_of([&] {
                kernels::selective_scan_backward(out.narrow(2, 0, 8), s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias,
                                                 true, st, 4);
              }),
              HasSubstr("selective_scan_backward: the output gradient has shape [2, 3, 8], expected [2, 3, 9]"));
  Tensor bad_state = zeros({2, 3, 5});
  EXPECT_THAT(error_of([&] {
                kernels::selective_scan_step(bad_state, s.u.select(2, 0), s.delta.select(2, 0), s.A,
                                             s.B.select(2, 0), s.C.select(2, 0), s.D, s.z.select(2, 0), s.bias,
                                             true);
              }),
              HasSubstr("selective_scan_step: state has shape [2, 3, 5], expected [2, 3, 4]"));
}

}  // namespace
}  // namespace hymba
