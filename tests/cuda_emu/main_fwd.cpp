// tests/cuda_emu driver: runs the emulated kernels/cuda/attention_mma_fwd.cu (mma_forward,
// bf16 inputs) against kernels::cpu::attention_forward in f32 on the same bf16-rounded inputs.
// Usage: emu_fwd MODE... (grid: every T x window x meta-token count; configs: every head-dim
// pair x GQA x batch; edge: tile-exact and limit cases, 128-row query tiles; quick: two
// mixed cases). EMU_CASE=i runs only case i of each mode. Tolerances: out 2e-2 relative to
// max |out| (bf16 P and V), lse 1e-3 absolute; any NaN fails (outputs start NaN, so an
// unwritten element fails).
// Last line: "fwd: cases=N failures=F worst out_rel=.. lse_abs=..".
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compare.h"
#include "core/rng.h"
#include "kernels/cuda/attention_mma.h"
using namespace hymba;
using kernels::AttentionParams;

static Tensor rnd(const Shape& s, uint64_t seed, double sd) {
  Generator g(seed);
  return randn(s, DType::F32, &g, 0.0, sd).to(DType::BF16);
}

// max |got - want| / max |want| (or absolute when norm = false); NaNs counted apart.
static double err(const Tensor& got, const Tensor& want, int64_t* nans, bool norm) {
  const emu::MaxError e = emu::max_error(got, want);
  *nans = e.nans;
  return norm ? e.rel() : e.abs;
}

struct C {
  int64_t B, Hq, Hkv, T;
  int dk, dv;
  int64_t W, M;
  double scale;
};

static std::vector<C> cases_of(const std::string& mode) {
  const int64_t Ts[] = {1, 17, 65, 100, 300}, Ws[] = {-1, 0, 31, 64, 255}, Ms[] = {0, 5, 130};
  const int dims[][2] = {{64, 128}, {128, 128}, {40, 24}, {64, 64}, {128, 64}};
  std::vector<C> cs;
  if (mode == "grid") {
    // every (T, W, M); head dims, GQA and batch rotate through the combos
    int i = 0;
    for (int64_t T : Ts)
      for (int64_t W : Ws)
        for (int64_t M : Ms) {
          const int* dd = dims[i % 5];
          const bool gqa = (i / 5) % 2 == 0;
          const int64_t B = 1 + (i / 10) % 2;
          cs.push_back({B, gqa ? 6 : 2, 2, T, dd[0], dd[1], W, M, i % 7 == 3 ? 0.3 : 0.0});
          ++i;
        }
  } else if (mode == "configs") {
    // every head dims x GQA x batch at two awkward problems
    for (auto& dd : dims)
      for (int gqa = 0; gqa < 2; ++gqa)
        for (int64_t B = 1; B <= 2; ++B) {
          cs.push_back({B, gqa ? 6 : 2, 2, 100, dd[0], dd[1], 31, 5, 0});
          cs.push_back({B, gqa ? 6 : 2, 2, 130, dd[0], dd[1], -1, 0, 0});
        }
  } else if (mode == "edge") {
    cs.push_back({1, 2, 1, 64, 72, 120, -1, 0, 0});    // tile-exact T, dims padded to 128
    cs.push_back({1, 2, 2, 128, 8, 8, 64, 5, 0});      // smallest dims, T = 1 tile, W = 2 key tiles
    cs.push_back({1, 3, 1, 129, 128, 8, 63, 64, 0});   // M = 2 key tiles, W = 2 key tiles - 1
    cs.push_back({1, 1, 1, 200, 64, 64, 1000, 0, 0});  // window longer than T
    cs.push_back({1, 1, 1, 200, 64, 64, -1, 500, 0});  // every key a meta key
    // Two row tiles per warp: 128-row query tiles, 32-key tiles (all dims but 128 / 128).
    cs.push_back({1, 2, 1, 127, 64, 128, -1, 0, 0});     // one tile, its last row past T
    cs.push_back({1, 2, 2, 129, 64, 128, 100, 70, 0});   // window and meta end inside a tile
    cs.push_back({2, 2, 1, 257, 64, 128, 40, 130, 0});   // warps of one block see disjoint keys
    cs.push_back({1, 2, 2, 255, 40, 24, 63, 70, 0});     // padded dims, W = 2 key tiles - 1
    cs.push_back({1, 1, 1, 257, 128, 64, 100, 5, 0});    // Q in registers, dk = 128
    cs.push_back({1, 1, 1, 256, 64, 64, 160, 0, 0});     // tile-exact T
    cs.push_back({1, 2, 2, 257, 128, 128, 100, 70, 0});  // the one-row-tile path at T = 2 tiles + 1
    // W % 32 in [15, 30]: a key tile wholly visible to a warp's first row tile but not to its
    // second (the warp's mask decision must cover both).
    cs.push_back({1, 2, 1, 300, 64, 128, 50, 0, 0});
    cs.push_back({1, 1, 1, 257, 64, 64, 90, 5, 0});
  } else if (mode == "quick") {
    cs.push_back({2, 6, 2, 300, 64, 128, 64, 130, 0});
    cs.push_back({1, 2, 2, 65, 128, 128, 0, 5, 0});
  } else {
    std::fprintf(stderr, "emu_fwd: unknown mode %s (grid, configs, edge, quick)\n", mode.c_str());
    std::exit(2);
  }
  return cs;
}

int main(int argc, char** argv) {
  const int only = std::getenv("EMU_CASE") ? std::atoi(std::getenv("EMU_CASE")) : -1;
  int fails = 0, ran = 0;
  double worst_o = 0, worst_l = 0;
  for (int a = 1; a < std::max(argc, 2); ++a) {
    const std::string mode = argc > 1 ? argv[a] : "grid";
    const std::vector<C> cs = cases_of(mode);
    for (size_t i = 0; i < cs.size(); ++i) {
      if (only >= 0 && int(i) != only) continue;
      const C& c = cs[i];
      Tensor q = rnd({c.B, c.Hq, c.T, c.dk}, 10 * i + 1, 1.5), k = rnd({c.B, c.Hkv, c.T, c.dk}, 10 * i + 2, 1.5);
      Tensor v = rnd({c.B, c.Hkv, c.T, c.dv}, 10 * i + 3, 1.0);
      const AttentionParams p{c.scale, c.W, c.M};
      auto [ro, rl] = kernels::cpu::attention_forward(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), p);
      const kernels::cuda::attn::Dims d{c.B, c.Hq, c.Hkv, c.T, c.dk, c.dv, int(c.Hq / c.Hkv)};
      auto [go, gl] = kernels::cuda::attn::mma_forward(q, k, v, d, p);
      int64_t no, nl;
      const double eo = err(go, ro, &no, true), el = err(gl, rl, &nl, false);
      const bool bad = no || nl || !(eo <= 2e-2) || !(el <= 1e-3);
      fails += bad;
      ++ran;
      worst_o = std::max(worst_o, eo);
      worst_l = std::max(worst_l, el);
      std::printf(
          "%s %zu B=%ld Hq=%ld Hkv=%ld T=%ld dk=%d dv=%d W=%ld M=%ld sc=%g: out rel=%.3g nan=%ld lse abs=%.3g "
          "nan=%ld%s\n",
          mode.c_str(), i, c.B, c.Hq, c.Hkv, c.T, c.dk, c.dv, c.W, c.M, c.scale, eo, no, el, nl, bad ? "  FAIL" : "");
      std::fflush(stdout);
    }
  }
  std::printf("fwd: cases=%d failures=%d worst out_rel=%.3g lse_abs=%.3g\n", ran, fails, worst_o, worst_l);
  return fails != 0;
}
