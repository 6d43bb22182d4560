// CUDA selective scan (forward, backward, step) against the CPU kernel on the same inputs.
// Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 1e-4 for outputs, final state
// and every gradient (the GPU uses expf where the CPU uses a 2-ulp polynomial, and sums dB/dC
// over channels in a different order); f64 1e-9; bf16 inputs 2e-2 against the CPU run in f32
// on the same rounded values. Shapes cover chunk boundaries (L = 63, 64, 65 with chunk 64),
// N below, at and above one warp (lanes per channel 1, 8, 16, 32 with 2 and 4 states per
// lane), channel counts that leave a block part-empty, and both places the backward keeps
// its recomputed states (shared memory; global scratch for long chunks and f64).
//
// Every forward/backward test runs under both CUDA implementations (kernels/cuda_impl.h):
// the sequential kernels and the blocked time-parallel ones, which take f32 and bf16 with a
// save interval that divides 256 and leave f64 and other intervals to the sequential ones
// (so those cases check the fallback). The blocked kernels run 4 channels per block (a warp
// each) over time chunks of 512 steps forward and 256 backward; their own cases cover several
// time chunks with a tail, sequences shorter than one lane's steps, channel counts that leave
// the last block of a row part-empty (and problems that fit one block), state counts that
// leave the last shared B/C group partial, save intervals that are and are not multiples of
// a forward lane's 16 steps (with step L - 1 inside and at the end of a lane), misaligned
// rows (no vector loads or vector atomics), empty shapes, and chunk_states passed between the
// two implementations. Their tolerances are the same: dB and dC are sums over channels with
// fp32 atomics, whose order only moves the last bits.
#include <gmock/gmock.h>

#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/rng.h"
#include "kernels/cuda_impl.h"
#include "kernels/selective_scan.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

using kernels::cuda::ImplGuard;
using kernels::cuda::ScanBackward;
using kernels::cuda::ScanForward;
using kernels::cuda::ScanImpl;
using kernels::cuda::impl_name;

const Device gpu = Device::cuda();
constexpr ScanImpl kImpls[] = {ScanImpl::Sequential, ScanImpl::Blocked};

// Runs f() once with each implementation selected.
template <typename F> void for_each_impl(F&& f) {
  for (ScanImpl impl : kImpls) {
    ImplGuard<ScanImpl> guard(impl);
    SCOPED_TRACE(impl_name(impl));
    f();
  }
}

struct Case {
  int64_t B, D, N, L;
  bool use_D, use_z, use_bias, softplus;
  int64_t chunk = kernels::kScanChunk;
};

std::string name(const Case& c, DType dt) {
  return str(dtype_name(dt), " B", c.B, " D", c.D, " N", c.N, " L", c.L, " chunk", c.chunk, c.use_D ? " D" : "",
             c.use_z ? " z" : "", c.use_bias ? " bias" : "", c.softplus ? " softplus" : "");
}

struct Inputs {
  Tensor u, delta, A, B, C, D, z, bias;
  Inputs map(const std::function<Tensor(const Tensor&)>& f) const {
    auto g = [&](const Tensor& t) { return t.defined() ? f(t) : Tensor(); };
    return {g(u), g(delta), g(A), g(B), g(C), g(D), g(z), g(bias)};
  }
};

// Model-like magnitudes (A negative, positive step sizes), made in f32 on the CPU and cast.
Inputs make_inputs(const Case& c, uint64_t seed, DType dt) {
  Generator g(seed);
  Inputs s;
  s.u = randn({c.B, c.D, c.L}, DType::F32, &g);
  s.delta = c.softplus ? rand({c.B, c.D, c.L}, DType::F32, &g, -3.0, 0.5)
                       : rand({c.B, c.D, c.L}, DType::F32, &g, 0.02, 0.8);
  s.A = rand({c.D, c.N}, DType::F32, &g, -2.0, -0.1);
  s.B = randn({c.B, c.N, c.L}, DType::F32, &g);
  s.C = randn({c.B, c.N, c.L}, DType::F32, &g);
  if (c.use_D) s.D = randn({c.D}, DType::F32, &g);
  if (c.use_z) s.z = randn({c.B, c.D, c.L}, DType::F32, &g);
  if (c.use_bias) s.bias = rand({c.D}, DType::F32, &g, 0.0, 0.3);
  return s.map([&](const Tensor& t) { return t.to(dt); });
}

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-4, 1e-9); }
using cudatest::ref_of;

void expect_grad(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (want.defined()) EXPECT_CUDA_CLOSE(got, want, rtol, what);
}

// Forward and backward on the GPU against the CPU kernel.
void check_case(const Case& c, DType dt, uint64_t seed) {
  const std::string what = name(c, dt);
  const Inputs in = make_inputs(c, seed, dt);
  const Inputs ref = in.map([&](const Tensor& t) { return t.to(ref_of(dt)); });
  const Inputs dev = in.map([&](const Tensor& t) { return t.to(gpu); });
  const double rtol = rtol_of(dt);

  auto [out_r, last_r, states_r] = kernels::cpu::selective_scan_forward(
      ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, c.softplus, c.chunk);
  auto [out_g, last_g, states_g] = kernels::selective_scan_forward(dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D,
                                                                   dev.z, dev.bias, c.softplus, c.chunk);
  ASSERT_TRUE(out_g.is_cuda()) << what;
  EXPECT_EQ(out_g.dtype(), dt) << what;
  EXPECT_EQ(last_g.dtype(), dt) << what;
  EXPECT_CUDA_CLOSE(out_g, out_r, rtol, what + " out");
  EXPECT_CUDA_CLOSE(last_g, last_r, rtol, what + " final state");

  const Tensor dout = cudatest::randn_cpu(out_r.shape(), seed + 1000, dt);
  const kernels::SelectiveScanGrads gr = kernels::cpu::selective_scan_backward(
      dout.to(ref_of(dt)), ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, c.softplus, states_r,
      c.chunk);
  const kernels::SelectiveScanGrads gg = kernels::selective_scan_backward(
      dout.to(gpu), dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z, dev.bias, c.softplus, states_g, c.chunk);
  expect_grad(gg.du, gr.du, rtol, what + " du");
  expect_grad(gg.ddelta, gr.ddelta, rtol, what + " ddelta");
  expect_grad(gg.dA, gr.dA, rtol, what + " dA");
  expect_grad(gg.dB, gr.dB, rtol, what + " dB");
  expect_grad(gg.dC, gr.dC, rtol, what + " dC");
  expect_grad(gg.dD, gr.dD, rtol, what + " dD");
  expect_grad(gg.dz, gr.dz, rtol, what + " dz");
  expect_grad(gg.ddelta_bias, gr.ddelta_bias, rtol, what + " ddelta_bias");
}

TEST(CudaSelectiveScan, ShapesAndOptionsF32) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] {
    uint64_t seed = 1;
    for (int64_t B : {1, 3})
      for (int64_t D : {5, 33})
        for (int64_t N : {1, 16})
          for (int64_t L : {1, 63, 64, 65, 300}) {
            check_case({B, D, N, L, true, true, true, true}, DType::F32, seed++);
            check_case({B, D, N, L, false, false, false, false}, DType::F32, seed++);
          }
  });
}

TEST(CudaSelectiveScan, MixedOptionsF32) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] {
    uint64_t seed = 100;
    for (int mask = 0; mask < 16; ++mask)
      check_case({3, 33, 16, 65, bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8)}, DType::F32,
                 seed++);
  });
}

TEST(CudaSelectiveScan, StateSizesF32) {
  HYMBA_REQUIRE_GPU();
  // N = 5: 8 lanes, 3 idle; 32: a full warp; 40 and 128: 2 and 4 states per lane.
  for_each_impl([] {
    for (int64_t N : {2, 5, 32, 40, 128}) check_case({2, 7, N, 70, true, true, true, true}, DType::F32, 200 + N);
  });
}

TEST(CudaSelectiveScan, ChunkSizes) {
  HYMBA_REQUIRE_GPU();
  // Many short chunks; one chunk longer than L; chunks too long for shared memory (global
  // scratch), in f32 and f64 (f64 at the default chunk already needs global scratch). The
  // blocked kernels take chunk 1 and fall back to the sequential ones for 7, 1000, 200, 100
  // (which do not divide 256) and for f64.
  for_each_impl([] {
    check_case({2, 9, 16, 65, true, true, true, true, 7}, DType::F32, 300);
    check_case({2, 9, 16, 65, true, true, true, true, 1}, DType::F32, 301);
    check_case({2, 9, 16, 65, true, true, true, true, 1000}, DType::F32, 302);
    check_case({3, 33, 16, 300, true, true, true, true, 200}, DType::F32, 303);
    check_case({3, 33, 16, 300, true, true, true, true}, DType::F64, 304);
    check_case({1, 5, 1, 130, false, true, false, true, 100}, DType::F64, 305);
  });
}

TEST(CudaSelectiveScan, Bf16) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] {
    uint64_t seed = 400;
    for (int64_t L : {1, 64, 65, 300}) {
      check_case({3, 33, 16, L, true, true, true, true}, DType::BF16, seed++);
      check_case({1, 5, 1, L, false, false, false, false}, DType::BF16, seed++);
    }
  });
}

TEST(CudaSelectiveScan, ModelLikeShape) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] { check_case({2, 160, 16, 257, true, true, true, true}, DType::F32, 500); });
}

// Every gradient of the sequential backward is bitwise reproducible; the blocked one sums dB
// and dC with atomics (kernels/cuda_impl.h), so those two are only close, the rest bitwise.
TEST(CudaSelectiveScan, BackwardIsDeterministic) {
  HYMBA_REQUIRE_GPU();
  for (ScanImpl impl : kImpls) {
    ImplGuard<ScanImpl> guard(impl);
    SCOPED_TRACE(impl_name(impl));
    const Case c{3, 100, 16, 200, true, true, true, true};
    const Inputs dev = make_inputs(c, 600, DType::F32).map([](const Tensor& t) { return t.to(gpu); });
    auto [out, last, states] = kernels::selective_scan_forward(dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z,
                                                               dev.bias, true);
    const Tensor dout = cudatest::randn_cpu(out.shape(), 601).to(gpu);
    auto run = [&] {
      return kernels::selective_scan_backward(dout, dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z, dev.bias,
                                              true, states);
    };
    const kernels::SelectiveScanGrads a = run(), b = run();
    const bool atomics = impl == ScanImpl::Blocked;
    for (auto [x, y, what] :
         {std::tuple{a.dA, b.dA, "dA"}, std::tuple{a.dB, b.dB, "dB"}, std::tuple{a.dC, b.dC, "dC"},
          std::tuple{a.dD, b.dD, "dD"}, std::tuple{a.ddelta_bias, b.ddelta_bias, "ddelta_bias"},
          std::tuple{a.du, b.du, "du"}, std::tuple{a.ddelta, b.ddelta, "ddelta"}, std::tuple{a.dz, b.dz, "dz"}}) {
      if (atomics && (std::string(what) == "dB" || std::string(what) == "dC"))
        EXPECT_CUDA_CLOSE(x, y, 1e-6, std::string(what) + " of two identical runs");
      else
        EXPECT_EQ(x.to_vector<float>(), y.to_vector<float>()) << what << " differs between two identical runs";
    }
  }
}

// The layout layers/ssm_mixer.cpp passes: delta and z are (B, L, D) activations and B, C
// slices of the (B, L, dt_rank + 2N) x_proj output, all seen as (B, X, L) through transposes,
// so none is contiguous (the blocked kernels copy them). Same tolerance as the f32 cases above.
void check_model_layout_views() {
  const int64_t Bn = 2, Dn = 24, N = 16, L = 70, R = 5;
  Generator g(900);
  const Tensor proj = randn({Bn, L, R + 2 * N}, DType::F32, &g);
  const Tensor dt = rand({Bn, L, Dn}, DType::F32, &g, -3.0, 0.5), zz = randn({Bn, L, Dn}, DType::F32, &g);
  const Tensor u = randn({Bn, Dn, L}, DType::F32, &g), A = rand({Dn, N}, DType::F32, &g, -2.0, -0.1);
  const Tensor D = randn({Dn}, DType::F32, &g), bias = rand({Dn}, DType::F32, &g, 0.0, 0.3);
  const Tensor dout = randn({Bn, Dn, L}, DType::F32, &g);
  auto views = [&](const Tensor& p, const Tensor& d, const Tensor& z) {
    return std::tuple{d.transpose(1, 2), p.narrow(2, R, N).transpose(1, 2), p.narrow(2, R + N, N).transpose(1, 2),
                      z.transpose(1, 2)};
  };
  const auto [dr, Br, Cr, zr] = views(proj, dt, zz);
  const auto [dg, Bg, Cg, zg] = views(proj.to(gpu), dt.to(gpu), zz.to(gpu));
  ASSERT_FALSE(Bg.is_contiguous());
  ASSERT_FALSE(dg.is_contiguous());
  auto [out_r, last_r, states_r] = kernels::cpu::selective_scan_forward(u, dr, A, Br, Cr, D, zr, bias, true, 64);
  auto [out_g, last_g, states_g] = kernels::selective_scan_forward(u.to(gpu), dg, A.to(gpu), Bg, Cg, D.to(gpu), zg,
                                                                   bias.to(gpu), true, 64);
  EXPECT_CUDA_CLOSE(out_g, out_r, 1e-4, "views out");
  EXPECT_CUDA_CLOSE(last_g, last_r, 1e-4, "views final state");
  const kernels::SelectiveScanGrads gr =
      kernels::cpu::selective_scan_backward(dout, u, dr, A, Br, Cr, D, zr, bias, true, states_r, 64);
  const kernels::SelectiveScanGrads gg = kernels::selective_scan_backward(
      dout.to(gpu), u.to(gpu), dg, A.to(gpu), Bg, Cg, D.to(gpu), zg, bias.to(gpu), true, states_g, 64);
  expect_grad(gg.du, gr.du, 1e-4, "views du");
  expect_grad(gg.ddelta, gr.ddelta, 1e-4, "views ddelta");
  expect_grad(gg.dA, gr.dA, 1e-4, "views dA");
  expect_grad(gg.dB, gr.dB, 1e-4, "views dB");
  expect_grad(gg.dC, gr.dC, 1e-4, "views dC");
  expect_grad(gg.dD, gr.dD, 1e-4, "views dD");
  expect_grad(gg.dz, gr.dz, 1e-4, "views dz");
  expect_grad(gg.ddelta_bias, gr.ddelta_bias, 1e-4, "views ddelta_bias");
}

TEST(CudaSelectiveScan, ModelLayoutViews) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] { check_model_layout_views(); });
}

// L single steps from a zero state reproduce the full scan's outputs and final state.
void check_steps(const Case& c, DType dt, double rtol, uint64_t seed) {
  const std::string what = name(c, dt) + " steps";
  const Inputs in = make_inputs(c, seed, dt);
  const Inputs ref = in.map([&](const Tensor& t) { return t.to(ref_of(dt)); });
  const Inputs dev = in.map([&](const Tensor& t) { return t.to(gpu); });
  auto [out_r, last_r, states_r] = kernels::cpu::selective_scan_forward(ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D,
                                                                        ref.z, ref.bias, c.softplus, c.chunk);
  const Tensor state = zeros({c.B, c.D, c.N}, TensorOptions(dt, gpu));
  for (int64_t t = 0; t < c.L; ++t) {
    auto at = [&](const Tensor& x) { return x.defined() ? x.select(2, t) : Tensor(); };
    const Tensor y = kernels::selective_scan_step(state, at(dev.u), at(dev.delta), dev.A, at(dev.B), at(dev.C), dev.D,
                                                  at(dev.z), dev.bias, c.softplus);
    EXPECT_CUDA_CLOSE(y, out_r.select(2, t), rtol, what + " out at t=" + std::to_string(t));
  }
  EXPECT_CUDA_CLOSE(state, last_r, rtol, what + " final state");
}

TEST(CudaSelectiveScan, StepsMatchForward) {
  HYMBA_REQUIRE_GPU();
  check_steps({3, 33, 16, 65, true, true, true, true}, DType::F32, 1e-4, 700);
  check_steps({1, 5, 1, 20, false, false, false, false}, DType::F32, 1e-4, 701);
  check_steps({2, 7, 40, 10, true, false, true, true}, DType::F64, 1e-9, 702);
  // bf16 rounds the state every step; a few steps stay within the bf16 tolerance.
  check_steps({2, 33, 16, 4, true, true, true, true}, DType::BF16, 2e-2, 703);
}

void check_rejects() {
  const Case c{1, 2, 129, 3, false, false, false, true};
  const Inputs dev = make_inputs(c, 800, DType::F32).map([](const Tensor& t) { return t.to(gpu); });
  try {
    kernels::selective_scan_forward(dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z, dev.bias, true);
    ADD_FAILURE() << "N = 129 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("N in [1, 128]"));
  }
  // chunk_states from the CPU forward (f32 is fine) with a wrong chunk count is refused.
  const Case ok{1, 2, 4, 3, false, false, false, true};
  const Inputs d2 = make_inputs(ok, 801, DType::F32).map([](const Tensor& t) { return t.to(gpu); });
  const Tensor bad_states = zeros({1, 2, 2, 4}, TensorOptions(DType::F32, gpu));
  EXPECT_THROW(kernels::selective_scan_backward(zeros({1, 2, 3}, TensorOptions(DType::F32, gpu)), d2.u, d2.delta, d2.A,
                                                d2.B, d2.C, d2.D, d2.z, d2.bias, true, bad_states),
               Error);
}

TEST(CudaSelectiveScan, RejectsWhatItCannotRun) {
  HYMBA_REQUIRE_GPU();
  for_each_impl([] { check_rejects(); });
}

// ---- The blocked kernels' own cases (kernels/cuda/selective_scan_blocked.cu): 4 channels per
// block, a warp per channel whose lanes take 16 steps (forward) or 8 steps (backward) each;
// the comments give the time chunks the forward / backward run.

TEST(CudaSelectiveScan, BlockedSeveralTimeChunks) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // 2 * 2048 + 37, odd (no vector loads): 9 x 512 / 17 x 256, with a tail.
  check_case({1, 3, 16, 2 * 2048 + 37, true, true, true, true}, DType::F32, 1000);
  check_case({2, 1, 16, 2 * 2048 + 37, false, false, false, false}, DType::F32, 1001);
  // 8 x 512 / 16 x 256, vector loads, a tail in the last chunk.
  check_case({2, 2, 16, 4000, true, true, true, true}, DType::F32, 1002);
  // 6 x 512 / 12 x 256.
  check_case({1, 3, 16, 3000, true, true, true, true}, DType::F32, 1003);
  // The Hymba length: 5 x 512 / 9 x 256.
  check_case({1, 4, 16, 2176, true, true, true, true}, DType::F32, 1004);
  // 2 x 512 / 4 x 256.
  check_case({3, 2, 16, 1000, true, true, true, true}, DType::F32, 1005);
}

TEST(CudaSelectiveScan, BlockedOptionsOverSeveralChunks) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // L = 1100: 3 x 512 / 5 x 256; every combination of D, z, delta_bias and softplus.
  uint64_t seed = 1100;
  for (int mask = 0; mask < 16; ++mask)
    check_case({2, 3, 16, 1100, bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8)}, DType::F32,
               seed++);
}

TEST(CudaSelectiveScan, BlockedShortSequences) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // Shorter than, equal to and just over one lane's steps (8 backward, 16 forward), and over
  // one warp's time chunk (256 backward).
  uint64_t seed = 1200;
  for (int64_t L : {1, 2, 5, 8, 9, 15, 16, 17, 255, 257})
    check_case({2, 3, 16, L, true, true, true, true}, DType::F32, seed++);
}

TEST(CudaSelectiveScan, BlockedStateSizes) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // B and C go through shared memory 8 states at a time forward and 4 backward: N = 1 fills
  // one group partly, 16 fills whole groups, 17 leaves a last group of one.
  uint64_t seed = 1300;
  for (int64_t N : {1, 16, 17}) {
    check_case({2, 5, N, 700, true, true, true, true}, DType::F32, seed++);
    check_case({1, 2, N, 1500, true, true, true, true}, DType::F32, seed++);
  }
}

TEST(CudaSelectiveScan, BlockedChannelTails) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // A block holds 4 channels of one batch row. B * D = 3 and 1: the whole problem in one
  // block, 3 and 1 of its 4 warps with a channel. D = 7, 5, 6: the last block of every row
  // holds 3, 1, 2 channels (so dB, dC sum fewer warps there), over several time chunks.
  check_case({1, 3, 16, 300, true, true, true, true}, DType::F32, 1900);
  check_case({1, 1, 16, 600, true, true, true, true}, DType::F32, 1901);
  check_case({2, 7, 16, 700, true, true, true, true}, DType::F32, 1902);
  check_case({3, 5, 17, 1100, true, false, true, true}, DType::F32, 1903);
  check_case({1, 6, 16, 2176, true, true, true, true}, DType::BF16, 1904);
}

TEST(CudaSelectiveScan, BlockedBf16) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // L = 2176 and 4000 are multiples of 8 (bf16 vector loads); 4133 is not.
  check_case({1, 4, 16, 2176, true, true, true, true}, DType::BF16, 1400);
  check_case({2, 2, 17, 4000, true, true, true, true}, DType::BF16, 1401);
  check_case({1, 3, 16, 4133, false, true, false, true}, DType::BF16, 1402);
}

TEST(CudaSelectiveScan, BlockedSaveIntervals) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  // Intervals that divide the backward's time chunk (256): 256 (one saved state per chunk,
  // and with a tail), 128, 32 and 1 (every step saved).
  check_case({2, 3, 16, 2100, true, true, true, true, 256}, DType::F32, 1500);
  check_case({2, 3, 16, 1500, true, true, true, true, 128}, DType::F32, 1501);
  check_case({1, 3, 16, 600, true, true, true, true, 1}, DType::F32, 1502);
  check_case({1, 3, 16, 4133, true, true, true, true, 256}, DType::F32, 1503);
  check_case({1, 5, 16, 700, true, true, true, true, 32}, DType::F32, 1506);
  // The forward stores a lane's state once, after its 16 steps, when the interval is a
  // multiple of 16 (then the lane that holds step L - 1 stores the state after its last step:
  // L - 1 inside that lane above, 2099 = 131 x 16 + 3 and 4132 = 258 x 16 + 4; at its end
  // here, 527 and 2175; odd N), and checks every step otherwise (8, 2, 4; 599 = 37 x 16 + 7).
  check_case({1, 3, 5, 600, true, true, true, true, 16}, DType::F32, 1508);
  check_case({2, 3, 3, 528, true, false, true, true, 16}, DType::F32, 1509);
  check_case({1, 5, 17, 2176, true, true, true, true, 64}, DType::F32, 1510);
  check_case({1, 3, 5, 600, true, true, true, true, 8}, DType::F32, 1511);
  check_case({2, 3, 16, 530, true, true, false, true, 2}, DType::F32, 1512);
  check_case({1, 3, 16, 520, true, true, true, true, 4}, DType::BF16, 1513);
  // Intervals that do not divide 256 run the sequential kernels instead.
  check_case({2, 3, 16, 700, true, true, true, true, 100}, DType::F32, 1504);
  check_case({2, 3, 16, 700, true, true, true, true, 2048}, DType::F32, 1505);
  check_case({2, 3, 16, 1500, true, true, true, true, 512}, DType::F32, 1507);
}

// A contiguous GPU copy of t (a CPU tensor) whose data starts one element past a 16-byte
// boundary, so the blocked kernels cannot use vector loads and stores on it.
Tensor misaligned_copy(const Tensor& t) {
  const Tensor flat = zeros({t.numel() + 1}, TensorOptions(t.dtype(), gpu));
  Tensor v = flat.narrow(0, 1, t.numel()).view(t.shape());
  v.copy_(t);
  return v;
}

// The blocked forward's shapes (kernels/cuda_impl.h, ScanForward): 8 steps per lane
// (256-step chunks), two states at once (odd N leaves one to walk alone), 4 blocks per SM, two
// or four channels per warp (D = 3 and 5 leave a warp with channels past D), tile groups of 8
// states (N = 3, 5 and 40 end in a partial group).
// Save intervals below, at and above 8 steps; L ending inside, at and past a lane; bf16.
TEST(CudaSelectiveScan, BlockedForwardShapes) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  uint64_t seed = 1500;
  for (ScanForward shape : {ScanForward::Steps16, ScanForward::Steps8States2, ScanForward::Steps8Blocks4,
                            ScanForward::Steps16Half, ScanForward::Steps16Quarter, ScanForward::Steps16HalfGroup8}) {
    SCOPED_TRACE(impl_name(shape));
    ImplGuard<ScanForward> fwd(shape);
    check_case({2, 3, 16, 2176, true, true, true, true}, DType::F32, seed++);
    check_case({1, 5, 17, 600, true, true, true, true}, DType::F32, seed++);
    check_case({2, 3, 3, 257, true, false, true, true, 4}, DType::F32, seed++);
    check_case({1, 3, 5, 528, true, true, true, true, 8}, DType::F32, seed++);
    check_case({1, 2, 40, 300, true, true, false, true, 16}, DType::F32, seed++);
    check_case({1, 4, 1, 7, false, false, false, false}, DType::F32, seed++);
    check_case({2, 3, 16, 600, true, true, true, true}, DType::BF16, seed++);
  }
}

// The blocked backward's shapes (ScanBackward): two channels per warp (128-step chunks), a
// warp per channel, four per warp (64-step chunks); save intervals that do not divide the
// chunk (128, 256) fall back to wider shapes; D = 3, 5 and 9 leave warps with channels past
// D, D = 17 has full blocks of every shape beside a tail; awkward L and N; bf16.
TEST(CudaSelectiveScan, BlockedBackwardShapes) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  uint64_t seed = 1700;
  for (ScanBackward shape : {ScanBackward::Steps8Half, ScanBackward::Steps8, ScanBackward::Steps8Quarter}) {
    SCOPED_TRACE(impl_name(shape));
    ImplGuard<ScanBackward> bwd(shape);
    check_case({2, 3, 16, 2176, true, true, true, true}, DType::F32, seed++);
    check_case({1, 5, 17, 600, true, true, true, true}, DType::F32, seed++);
    check_case({2, 3, 3, 257, true, false, true, true, 4}, DType::F32, seed++);
    check_case({1, 9, 5, 300, true, true, true, true, 256}, DType::F32, seed++);
    check_case({1, 6, 4, 400, true, true, true, true, 128}, DType::F32, seed++);
    check_case({1, 17, 16, 600, true, true, true, true}, DType::F32, seed++);  // full blocks of every shape
    check_case({1, 4, 1, 7, false, false, false, false}, DType::F32, seed++);
    check_case({2, 3, 16, 600, true, true, true, true}, DType::BF16, seed++);
  }
}

TEST(CudaSelectiveScan, BlockedMisalignedRows) {
  HYMBA_REQUIRE_GPU();
  ImplGuard<ScanImpl> guard(ScanImpl::Blocked);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Case c{2, 3, 16, 512, true, true, true, true};  // L a multiple of the vector width
    const std::string what = name(c, dt) + " misaligned";
    const Inputs in = make_inputs(c, 1600, dt);
    const Inputs ref = in.map([&](const Tensor& t) { return t.to(ref_of(dt)); });
    const Inputs dev = in.map(misaligned_copy);
    ASSERT_TRUE(dev.u.is_contiguous());
    const double rtol = rtol_of(dt);
    auto [out_r, last_r, states_r] = kernels::cpu::selective_scan_forward(
        ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, true, c.chunk);
    auto [out_g, last_g, states_g] = kernels::selective_scan_forward(dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D,
                                                                     dev.z, dev.bias, true, c.chunk);
    EXPECT_CUDA_CLOSE(out_g, out_r, rtol, what + " out");
    EXPECT_CUDA_CLOSE(last_g, last_r, rtol, what + " final state");
    const Tensor dout = cudatest::randn_cpu(out_r.shape(), 1601, dt);
    const kernels::SelectiveScanGrads gr = kernels::cpu::selective_scan_backward(
        dout.to(ref_of(dt)), ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, true, states_r, c.chunk);
    const kernels::SelectiveScanGrads gg = kernels::selective_scan_backward(
        misaligned_copy(dout), dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z, dev.bias, true, states_g, c.chunk);
    expect_grad(gg.du, gr.du, rtol, what + " du");
    expect_grad(gg.ddelta, gr.ddelta, rtol, what + " ddelta");
    expect_grad(gg.dA, gr.dA, rtol, what + " dA");
    expect_grad(gg.dB, gr.dB, rtol, what + " dB");
    expect_grad(gg.dC, gr.dC, rtol, what + " dC");
    expect_grad(gg.dD, gr.dD, rtol, what + " dD");
    expect_grad(gg.dz, gr.dz, rtol, what + " dz");
    expect_grad(gg.ddelta_bias, gr.ddelta_bias, rtol, what + " ddelta_bias");
  }
}

TEST(CudaSelectiveScan, EmptyShapes) {
  HYMBA_REQUIRE_GPU();
  // No steps (the final state is the zero start, parameter gradients are 0); no batch rows.
  for_each_impl([] {
    check_case({2, 3, 16, 0, true, true, true, true}, DType::F32, 1700);
    check_case({0, 3, 16, 70, true, true, true, true}, DType::F32, 1701);
  });
}

// chunk_states is one layout for both implementations: each forward's states match the CPU
// kernel's, and a backward run with either implementation on the states of the other gives
// the CPU gradients.
TEST(CudaSelectiveScan, ChunkStatesAcrossImplementations) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1800;
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t L : {int64_t(700), int64_t(2 * 2048 + 37)}) {
      const Case c{2, 5, 16, L, true, true, true, true};
      const Inputs in = make_inputs(c, seed++, dt);
      const Inputs ref = in.map([&](const Tensor& t) { return t.to(ref_of(dt)); });
      const Inputs dev = in.map([&](const Tensor& t) { return t.to(gpu); });
      const double rtol = rtol_of(dt);
      auto [out_r, last_r, states_r] = kernels::cpu::selective_scan_forward(
          ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, true, c.chunk);
      const Tensor dout = cudatest::randn_cpu(out_r.shape(), seed++, dt);
      const kernels::SelectiveScanGrads gr = kernels::cpu::selective_scan_backward(
          dout.to(ref_of(dt)), ref.u, ref.delta, ref.A, ref.B, ref.C, ref.D, ref.z, ref.bias, true, states_r,
          c.chunk);
      Tensor states[2];
      for (int k = 0; k < 2; ++k) {
        ImplGuard<ScanImpl> guard(kImpls[k]);
        states[k] = std::get<2>(kernels::selective_scan_forward(dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z,
                                                                dev.bias, true, c.chunk));
        EXPECT_CUDA_CLOSE(states[k], states_r, rtol, name(c, dt) + " chunk_states of " + impl_name(kImpls[k]));
      }
      for (int k = 0; k < 2; ++k) {
        ImplGuard<ScanImpl> guard(kImpls[1 - k]);
        const std::string what =
            name(c, dt) + " " + impl_name(kImpls[1 - k]) + " backward on " + impl_name(kImpls[k]) + " states";
        const kernels::SelectiveScanGrads gg = kernels::selective_scan_backward(
            dout.to(gpu), dev.u, dev.delta, dev.A, dev.B, dev.C, dev.D, dev.z, dev.bias, true, states[k], c.chunk);
        expect_grad(gg.du, gr.du, rtol, what + " du");
        expect_grad(gg.ddelta, gr.ddelta, rtol, what + " ddelta");
        expect_grad(gg.dA, gr.dA, rtol, what + " dA");
        expect_grad(gg.dB, gr.dB, rtol, what + " dB");
        expect_grad(gg.dC, gr.dC, rtol, what + " dC");
        expect_grad(gg.dD, gr.dD, rtol, what + " dD");
        expect_grad(gg.dz, gr.dz, rtol, what + " dz");
        expect_grad(gg.ddelta_bias, gr.ddelta_bias, rtol, what + " ddelta_bias");
      }
    }
}

}  // namespace
}  // namespace hymba
