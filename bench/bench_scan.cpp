// CPU throughput of the selective scan and causal conv1d kernels at Hymba-like shapes (N = 16,
// width 4). Counters: items_per_second = (b, d, t) elements per second; bytes_per_second =
// the minimum memory traffic of the kernel (every input read once, every output written once),
// so it compares with the machine's bandwidth; for the scan, state_updates/s = B*D*L*N per second (the
// scan's arithmetic unit: one exp and four multiply-adds each).
#include <benchmark/benchmark.h>

#include "core/rng.h"
#include "kernels/conv1d.h"
#include "kernels/selective_scan.h"

using namespace hymba;

namespace {

constexpr int64_t kN = 16;
constexpr int64_t kW = 4;

struct ScanData {
  Tensor u, delta, A, B, C, D, z, bias, dout;
};

ScanData make_scan(int64_t b, int64_t d, int64_t l) {
  Generator g(1);
  ScanData s;
  s.u = randn({b, d, l}, DType::F32, &g);
  s.delta = rand({b, d, l}, DType::F32, &g, -4.0, 0.0);
  s.A = rand({d, kN}, DType::F32, &g, -16.0, -1.0);
  s.B = randn({b, kN, l}, DType::F32, &g);
  s.C = randn({b, kN, l}, DType::F32, &g);
  s.D = ones({d});
  s.z = randn({b, d, l}, DType::F32, &g);
  s.bias = zeros({d});
  s.dout = randn({b, d, l}, DType::F32, &g);
  return s;
}

void set_counters(benchmark::State& st, int64_t b, int64_t d, int64_t l, double bytes_per_iter, bool scan) {
  const double elems = double(b * d * l);
  st.SetItemsProcessed(int64_t(st.iterations() * elems));
  st.SetBytesProcessed(int64_t(st.iterations() * bytes_per_iter));
  if (scan) st.counters["state_updates/s"] = benchmark::Counter(elems * kN, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_ScanForward(benchmark::State& st) {
  const int64_t b = st.range(0), d = st.range(1), l = st.range(2);
  ScanData s = make_scan(b, d, l);
  for (auto _ : st) {
    auto r = kernels::selective_scan_forward(s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true);
    benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
  }
  // Reads u, delta, z; B, C; writes out. (A, D, bias and the states are negligible.)
  set_counters(st, b, d, l, 4.0 * (4.0 * b * d * l + 2.0 * b * kN * l), true);
}

void BM_ScanForwardBackward(benchmark::State& st) {
  const int64_t b = st.range(0), d = st.range(1), l = st.range(2);
  ScanData s = make_scan(b, d, l);
  for (auto _ : st) {
    auto [out, last, states] = kernels::selective_scan_forward(s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true);
    auto g = kernels::selective_scan_backward(s.dout, s.u, s.delta, s.A, s.B, s.C, s.D, s.z, s.bias, true, states);
    benchmark::DoNotOptimize(g.du.data_ptr());
  }
  // Forward, then backward: reads dout, u, delta, z, B, C; writes du, ddelta, dz, dB, dC.
  set_counters(st, b, d, l, 4.0 * ((4.0 + 7.0) * b * d * l + (2.0 + 4.0) * b * kN * l), true);
}

void BM_Conv1dForward(benchmark::State& st) {
  const int64_t b = st.range(0), d = st.range(1), l = st.range(2);
  Tensor x = randn({b, d, l}), w = randn({d, kW}), bias = randn({d});
  for (auto _ : st) benchmark::DoNotOptimize(kernels::causal_conv1d_forward(x, w, bias, true).data_ptr());
  set_counters(st, b, d, l, 4.0 * 2.0 * b * d * l, false);
}

void BM_Conv1dForwardBackward(benchmark::State& st) {
  const int64_t b = st.range(0), d = st.range(1), l = st.range(2);
  Tensor x = randn({b, d, l}), w = randn({d, kW}), bias = randn({d}), dy = randn({b, d, l});
  for (auto _ : st) {
    benchmark::DoNotOptimize(kernels::causal_conv1d_forward(x, w, bias, true).data_ptr());
    auto [dx, dw, db] = kernels::causal_conv1d_backward(dy, x, w, bias, true);
    benchmark::DoNotOptimize(dx.data_ptr());
  }
  // Forward (x in, y out) and backward (dy, x in, dx out).
  set_counters(st, b, d, l, 4.0 * 5.0 * b * d * l, false);
}

// Each of B, D and L swept with the other two fixed, around B = 1 at half the Hymba-1.5B SSM
// width (D = 1600), plus B = 8 at D = 512 over L and the Hymba-1.5B layer's own width and
// batch at the longest L (B 8, D 3200, L 4096: seconds per call).
void Shapes(benchmark::internal::Benchmark* bm) {
  for (int64_t l : {256, 1024, 4096}) bm->Args({1, 1600, l});
  for (int64_t b : {2, 4, 8}) bm->Args({b, 1600, 1024});
  for (int64_t d : {800, 3200}) bm->Args({1, d, 1024});
  for (int64_t l : {256, 1024, 4096}) bm->Args({8, 512, l});
  bm->Args({8, 3200, 4096});
  // The warm-up keeps first-touch page faults of fresh buffers out of the figures (a single
  // timed iteration of the largest shapes otherwise paid them: up to 2.5x slower).
  bm->ArgNames({"B", "D", "L"})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2)->MinWarmUpTime(0.2);
}

}  // namespace

BENCHMARK(BM_ScanForward)->Apply(Shapes);
BENCHMARK(BM_ScanForwardBackward)->Apply(Shapes);
BENCHMARK(BM_Conv1dForward)->Apply(Shapes);
BENCHMARK(BM_Conv1dForwardBackward)->Apply(Shapes);

BENCHMARK_MAIN();
