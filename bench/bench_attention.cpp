// CPU attention throughput: forward and forward+backward at Hq=8, Hkv=2, dk=64, dv=128, full
// causal vs sliding window W=256 with M=16 meta keys, over T at B=1, over B at T=1024, and the
// sliding window at B=8, T=4096. GFLOP/s counts only visible
// query-key pairs (2 (dk + dv) flops per pair forward; backward counted as 2.5x forward, the
// FlashAttention convention), so full and SWA rates are comparable; the time column shows SWA
// growing linearly in T and full attention quadratically.
#include <benchmark/benchmark.h>

#include "autograd/ops/attention.h"
#include "core/rng.h"
#include "kernels/attention.h"

namespace {

using namespace hymba;

constexpr int64_t kHq = 8, kHkv = 2, kDk = 64, kDv = 128, kW = 256, kM = 16;

int64_t visible_pairs(int64_t T, int64_t W, int64_t M) {
  int64_t n = 0;
  for (int64_t i = 0; i < T; ++i) n += (W < 0) ? i + 1 : std::min(i + 1, W + 1 + std::min(M, std::max<int64_t>(0, i - W)));
  return n;
}

void run(benchmark::State& state, bool backward) {
  const int64_t B = state.range(0), T = state.range(1);
  const bool swa = state.range(2) != 0;
  const kernels::AttentionParams p{0, swa ? kW : -1, swa ? kM : 0};
  Generator g(1);
  Tensor q = randn({B, kHq, T, kDk}, DType::F32, &g), k = randn({B, kHkv, T, kDk}, DType::F32, &g),
         v = randn({B, kHkv, T, kDv}, DType::F32, &g), dout = randn({B, kHq, T, kDv}, DType::F32, &g);
  for (auto _ : state) {
    auto [out, lse] = kernels::attention_forward(q, k, v, p);
    if (backward) {
      auto grads = kernels::attention_backward(dout, q, k, v, out, lse, p);
      benchmark::DoNotOptimize(std::get<0>(grads).data_ptr());
    }
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const double flops = double(visible_pairs(T, p.window, p.num_meta)) * B * kHq * 2.0 * (kDk + kDv) *
                       (backward ? 3.5 : 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(swa ? "swa W=256 M=16" : "full");
}

void BM_AttentionFwd(benchmark::State& s) { run(s, false); }
void BM_AttentionFwdBwd(benchmark::State& s) { run(s, true); }

void args(benchmark::internal::Benchmark* b) {
  for (int swa : {0, 1}) {
    for (int64_t T : {512, 1024, 2048, 4096}) b->Args({1, T, swa});
    for (int64_t B : {2, 4, 8}) b->Args({B, 1024, swa});
  }
  b->Args({8, 4096, 1});
  // Warm-up: as in bench_scan.cpp, the first iteration pays the page faults of fresh buffers.
  b->ArgNames({"B", "T", "swa"})->Unit(benchmark::kMillisecond)->MinTime(0.2)->MinWarmUpTime(0.2)->UseRealTime();
}

BENCHMARK(BM_AttentionFwd)->Apply(args);
BENCHMARK(BM_AttentionFwdBwd)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
