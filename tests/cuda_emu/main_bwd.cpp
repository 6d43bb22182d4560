// tests/cuda_emu driver: runs the emulated kernels/cuda/attention_mma_bwd.cu (mma_backward,
// bf16 inputs, dQ / dK / dV each requested or not) against kernels::cpu::attention_backward in
// f32 on the same bf16-rounded inputs, with the forward's out (rounded to bf16) and lse.
// Usage: emu_bwd MODE... (all: 11 cases over head dims, GQA, window, meta tokens, T = 1 to
// 260; quick: two of them). EMU_CASE=i runs only case i. Tolerance 2e-2 relative to max |ref|
// (absolute where the reference is rounding noise below 1e-4); any NaN fails.
// Last line: "bwd: cases=N failures=F worst rel=..". EMU_ABS=1 also prints the absolute errors.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compare.h"
#include "core/rng.h"
#include "kernels/cuda/attention_mma.h"
using namespace hymba;
using kernels::AttentionParams;

static Tensor rnd(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn(s, DType::F32, &g, 0.0, 1.0).to(DType::BF16);
}

static double rel(const Tensor& got, const Tensor& want, int64_t* nans) {
  const emu::MaxError e = emu::max_error(got, want);
  *nans = e.nans;
  if (getenv("EMU_ABS")) std::printf(" [max err %.3g, max ref %.3g]", e.abs, e.ref);
  // a gradient that is exactly 0 in exact arithmetic (e.g. dq with W = 0) has a reference of
  // rounding noise only: judge it absolutely
  return e.ref < 1e-4 ? e.abs : e.rel();
}

int main(int argc, char** argv) {
  struct C {
    int64_t B, Hq, Hkv, T, dk, dv, W, M;
    bool dq, dk_, dv_;
    double scale;
  };
  std::vector<C> cs = {
      {1, 2, 1, 70, 64, 128, -1, 0, true, true, true, 0},      {1, 2, 2, 100, 40, 24, 31, 5, true, true, true, 0},
      {2, 3, 1, 130, 128, 128, 20, 70, true, true, true, 0.3}, {1, 2, 2, 17, 64, 128, 0, 0, true, false, true, 0},
      {1, 1, 1, 1, 64, 128, -1, 5, true, true, true, 0},       {1, 2, 1, 150, 64, 64, 64, 0, false, true, false, 0},
      {1, 2, 1, 90, 64, 128, 10, 128, true, true, true, 0},    {1, 2, 1, 260, 64, 128, 64, 5, true, true, true, 0},
      {1, 1, 1, 200, 40, 24, -1, 128, true, false, true, 0},   {2, 3, 1, 65, 64, 128, 0, 3, false, true, false, 0},
      {1, 2, 2, 129, 128, 64, 255, 0, true, true, true, 0},
  };
  const int only = std::getenv("EMU_CASE") ? std::atoi(std::getenv("EMU_CASE")) : -1;
  int fails = 0, ran = 0;
  double worst = 0;
  for (int a = 1; a < std::max(argc, 2); ++a) {
    const std::string mode = argc > 1 ? argv[a] : "all";
    if (mode != "all" && mode != "quick") {
      std::fprintf(stderr, "emu_bwd: unknown mode %s (all, quick)\n", mode.c_str());
      return 2;
    }
    for (size_t i = 0; i < cs.size(); ++i) {
      if (only >= 0 && int(i) != only) continue;
      if (mode == "quick" && i != 1 && i != 3) continue;
      const C& c = cs[i];
      Tensor q = rnd({c.B, c.Hq, c.T, c.dk}, 10 * i + 1), k = rnd({c.B, c.Hkv, c.T, c.dk}, 10 * i + 2);
      Tensor v = rnd({c.B, c.Hkv, c.T, c.dv}, 10 * i + 3), dout = rnd({c.B, c.Hq, c.T, c.dv}, 10 * i + 4);
      const AttentionParams p{c.scale, c.W, c.M};
      auto [out, lse] = kernels::cpu::attention_forward(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), p);
      Tensor outs = out.to(DType::BF16);
      auto [rq, rk, rv] =
          kernels::cpu::attention_backward(dout.to(DType::F32), q.to(DType::F32), k.to(DType::F32), v.to(DType::F32),
                                           outs.to(DType::F32), lse, p, true, true, true);
      const kernels::cuda::attn::Dims d{c.B, c.Hq, c.Hkv, c.T, int(c.dk), int(c.dv), int(c.Hq / c.Hkv)};
      auto [gq, gk, gv] = kernels::cuda::attn::mma_backward(dout, q, k, v, outs, lse, d, p, c.dq, c.dk_, c.dv_);
      std::printf("%s %zu B=%ld Hq=%ld Hkv=%ld T=%ld dk=%ld dv=%ld W=%ld M=%ld:", mode.c_str(), i, c.B, c.Hq, c.Hkv,
                  c.T, c.dk, c.dv, c.W, c.M);
      const Tensor* gs[] = {&gq, &gk, &gv};
      const Tensor* rs[] = {&rq, &rk, &rv};
      bool need[] = {c.dq, c.dk_, c.dv_};
      const char* nm[] = {"dq", "dk", "dv"};
      const int before = fails;
      for (int j = 0; j < 3; ++j) {
        if (gs[j]->defined() != need[j]) {
          std::printf(" %s defined mismatch", nm[j]);
          ++fails;
          continue;
        }
        if (!need[j]) continue;
        int64_t nans;
        double r = rel(*gs[j], *rs[j], &nans);
        std::printf(" %s rel=%.3g nan=%ld", nm[j], r, nans);
        worst = std::max(worst, r);
        if (nans || !(r <= 2e-2)) ++fails;
      }
      ++ran;
      fails = before + (fails > before);
      std::printf("%s\n", fails > before ? "  FAIL" : "");
      std::fflush(stdout);
    }
  }
  std::printf("bwd: cases=%d failures=%d worst rel=%.3g\n", ran, fails, worst);
  return fails != 0;
}
