// tests/cuda_emu driver: runs the emulated kernels/cuda/selective_scan_blocked.cu (forward,
// backward, and the parameter-gradient reduction scan_detail::reduce_param_grads of
// selective_scan.cu) against kernels::cpu::selective_scan_forward / _backward in f32 on the
// same (bf16-rounded, for bf16) inputs. Every output and gradient is compared.
// Usage: emu_scan MODE... (grid: L x N x chunk with z/D/bias/softplus rotating, f32; edge:
// L = 0, N at the limit, N > 32, chunk boundaries, save intervals below and at a forward lane's
// 16 steps with L - 1 inside and at the end of a lane; bf16: four bf16 cases; quick: three f32
// cases and one bf16). EMU_CASE=i runs only case i of each mode. Tolerance: 1e-4 relative to max |ref|
// (f32), 2e-2 (bf16); any NaN fails. Last line: "scan: cases=N failures=F worst ..." (f32).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compare.h"
#include "core/rng.h"
#include "kernels/cuda/selective_scan_blocked.h"
using namespace hymba;

static Tensor rnd(const Shape& s, uint64_t seed, double mean, double sd, DType dt, float (*f)(float) = nullptr) {
  Generator g(seed);
  Tensor t = randn(s, DType::F32, &g, mean, sd).contiguous();
  if (f)
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = f(t.data<float>()[i]);
  return t.to(dt);
}
static double err(const Tensor& got, const Tensor& want, int64_t* nans) {
  const emu::MaxError e = emu::max_error(got, want);
  *nans = e.nans;
  if (!e.ref_finite) {  // a case whose recurrence overflows tests nothing: count it as failed
    std::printf(" [reference not finite]");
    *nans = std::max<int64_t>(*nans, 1);
    return 0;
  }
  return e.rel();
}

struct C {
  int64_t B, D, L, N, chunk;
  bool z, Dp, bias, sp;
  DType dt;
};
static double worst[16];
static const char* names[] = {"out", "last", "states", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"};

static std::vector<C> cases_of(const std::string& mode) {
  const int64_t Ls[] = {1, 7, 255, 256, 257, 600, 2176}, Ns[] = {1, 16, 17}, chunks[] = {64, 256, 1};
  const int64_t BD[][2] = {{1, 5}, {2, 3}, {1, 6}, {3, 1}};
  std::vector<C> cs;
  if (mode == "grid") {
    int i = 0;
    for (int64_t L : Ls)
      for (int64_t N : Ns)
        for (int64_t ch : chunks) {
          const int o = i % 4;
          const auto& bd = BD[(i / 4) % 4];
          // the longest sequences with fewer channels, to keep the emulation short
          const int64_t B = L >= 2176 ? 1 : bd[0], D = L >= 2176 ? 5 : bd[1];
          cs.push_back({B, D, L, N, ch, o == 0 || o == 2, o == 0 || o == 3, o == 0 || o == 3, o != 3, DType::F32});
          ++i;
        }
  } else if (mode == "edge") {
    cs.push_back({1, 5, 0, 16, 64, true, true, true, true, DType::F32});       // L = 0
    cs.push_back({1, 4, 7, 256, 64, true, true, true, true, DType::F32});      // N at the limit, D % 4 == 0
    cs.push_back({2, 4, 513, 16, 128, false, true, false, true, DType::F32});  // one past the forward's 512-step chunk
    cs.push_back({1, 7, 1024, 3, 32, true, false, true, true, DType::F32});
    cs.push_back({1, 2, 300, 40, 2, true, true, true, true, DType::F32});  // N > 32: lanes loop over carries
    // Save intervals, a multiple of a forward lane's 16 steps (one store per lane, after its
    // walk) or not (every step checked): L - 1 inside a lane (599 = 37 x 16 + 7) and at a
    // lane's last step (528), odd N.
    cs.push_back({1, 3, 600, 5, 16, true, true, true, true, DType::F32});
    cs.push_back({2, 3, 528, 3, 16, false, true, true, true, DType::F32});
    cs.push_back({1, 3, 600, 5, 8, true, true, true, true, DType::F32});
    cs.push_back({1, 2, 520, 2, 4, true, false, true, true, DType::F32});
    // Full blocks of every shape (4, 8 or 16 channels per block) beside a tail block: the
    // backward's dB/dC sum takes another path when every channel of its block is real.
    cs.push_back({1, 17, 300, 5, 64, true, true, true, true, DType::F32});
    cs.push_back({2, 16, 257, 16, 64, true, false, true, true, DType::F32});
  } else if (mode == "bf16") {
    cs.push_back({2, 3, 600, 16, 64, true, true, true, true, DType::BF16});
    cs.push_back({1, 17, 300, 16, 64, true, true, true, true, DType::BF16});
    cs.push_back({1, 5, 257, 17, 256, false, false, false, false, DType::BF16});
    cs.push_back({1, 6, 256, 16, 1, true, true, false, true, DType::BF16});
  } else if (mode == "quick") {
    cs.push_back({1, 5, 600, 17, 64, true, true, true, true, DType::F32});
    cs.push_back({2, 3, 257, 16, 1, false, false, false, false, DType::F32});
    cs.push_back({1, 17, 130, 4, 64, true, true, true, true, DType::F32});  // full blocks and a tail
    // bf16 with aligned rows (L % 8 == 0): B/C staged and widened into the float tiles.
    cs.push_back({1, 5, 304, 16, 64, true, true, true, true, DType::BF16});
  } else {
    std::fprintf(stderr, "emu_scan: unknown mode %s (grid, edge, bf16, quick)\n", mode.c_str());
    std::exit(2);
  }
  return cs;
}

int main(int argc, char** argv) {
  const int only = std::getenv("EMU_CASE") ? std::atoi(std::getenv("EMU_CASE")) : -1;
  int fails = 0, ran = 0;
  for (int a = 1; a < std::max(argc, 2); ++a) {
    const std::string mode = argc > 1 ? argv[a] : "grid";
    const std::vector<C> cs = cases_of(mode);
    for (size_t i = 0; i < cs.size(); ++i) {
      if (only >= 0 && int(i) != only) continue;
      const C& c = cs[i];
      const DType T = c.dt;
      const uint64_t s = 100 * i;
      Tensor u = rnd({c.B, c.D, c.L}, s + 1, 0, 1, T);
      Tensor delta = c.sp ? rnd({c.B, c.D, c.L}, s + 2, -1.5, 0.7, T)
                          : rnd({c.B, c.D, c.L}, s + 2, 0, 1, T, [](float x) { return 0.1f * std::abs(x); });
      Tensor A = rnd({c.D, c.N}, s + 3, 0, 0.5, T, [](float x) { return -std::exp(x); });
      Tensor Bm = rnd({c.B, c.N, c.L}, s + 4, 0, 1, T), Cm = rnd({c.B, c.N, c.L}, s + 5, 0, 1, T);
      Tensor Dv = c.Dp ? rnd({c.D}, s + 6, 0, 1, T) : Tensor();
      Tensor z = c.z ? rnd({c.B, c.D, c.L}, s + 7, 0, 1, T) : Tensor();
      // without softplus a negative delta + bias makes the recurrence grow without bound
      Tensor bias = !c.bias ? Tensor()
                    : c.sp  ? rnd({c.D}, s + 8, 0, 0.3, T)
                            : rnd({c.D}, s + 8, 0, 1, T, [](float x) { return 0.05f * std::abs(x); });
      Tensor dout = rnd({c.B, c.D, c.L}, s + 9, 0, 1, T);
      // the reference in f32 on the same (bf16-rounded, for bf16) inputs
      auto f = [](const Tensor& t) { return t.defined() ? t.to(DType::F32) : Tensor(); };
      auto [ro, rl, rs] =
          kernels::cpu::selective_scan_forward(f(u), f(delta), f(A), f(Bm), f(Cm), f(Dv), f(z), f(bias), c.sp, c.chunk);
      auto rg = kernels::cpu::selective_scan_backward(f(dout), f(u), f(delta), f(A), f(Bm), f(Cm), f(Dv), f(z), f(bias),
                                                      c.sp, rs, c.chunk);
      namespace sb = kernels::cuda::scan_blocked;
      if (!sb::supports(T, c.N, c.chunk)) {
        std::printf("%s %zu unsupported\n", mode.c_str(), i);
        ++fails;
        continue;
      }
      auto [go, gl, gs] = sb::forward(u, delta, A, Bm, Cm, Dv, z, bias, c.sp, c.chunk);
      auto gg = sb::backward(dout, u, delta, A, Bm, Cm, Dv, z, bias, c.sp, gs, c.chunk);
      const Tensor* got[] = {&go,    &gl,    &gs,    &gg.du, &gg.ddelta,     &gg.dA,
                             &gg.dB, &gg.dC, &gg.dD, &gg.dz, &gg.ddelta_bias};
      const Tensor* want[] = {&ro,    &rl,    &rs,    &rg.du, &rg.ddelta,     &rg.dA,
                              &rg.dB, &rg.dC, &rg.dD, &rg.dz, &rg.ddelta_bias};
      const double tol = T == DType::F32 ? 1e-4 : 2e-2;
      std::printf("%s %zu %s B=%ld D=%ld L=%ld N=%ld chunk=%ld z=%d D=%d bias=%d sp=%d:", mode.c_str(), i,
                  T == DType::F32 ? "f32" : "bf16", c.B, c.D, c.L, c.N, c.chunk, c.z, c.Dp, c.bias, c.sp);
      bool bad = false;
      for (int j = 0; j < 11; ++j) {
        if (got[j]->defined() != want[j]->defined()) {
          std::printf(" %s:defined-mismatch", names[j]);
          bad = true;
          continue;
        }
        if (!want[j]->defined()) continue;
        if (got[j]->shape() != want[j]->shape()) {
          std::printf(" %s:shape-mismatch", names[j]);
          bad = true;
          continue;
        }
        int64_t nn;
        const double e = err(*got[j], *want[j], &nn);
        if (T == DType::F32) worst[j] = std::max(worst[j], e);
        const bool b = nn || !(e <= tol);
        bad |= b;
        std::printf(" %s=%.2g%s", names[j], e, nn ? "(NaN)" : b ? "(!)" : "");
      }
      fails += bad;
      ++ran;
      std::printf("%s\n", bad ? "  FAIL" : "");
      std::fflush(stdout);
    }
  }
  std::printf("scan: cases=%d failures=%d worst (f32, rel):", ran, fails);
  for (int j = 0; j < 11; ++j) std::printf(" %s=%.2g", names[j], worst[j]);
  std::printf("\n");
  return fails != 0;
}
