// Throughput of the fused LM kernels (RMSNorm, SwiGLU, softmax, cross-entropy) on CPU, in
// GB/s of compulsory memory traffic (each input read once, each output written once), next
// to a memcpy moving the same number of bytes: these kernels are meant to be memory-bound,
// so the memcpy row is their roofline.
//
// Two memcpy baselines per size: into a preallocated buffer ("memcpy"), and into a freshly
// allocated tensor ("memcpy_fresh"), which pays the page faults every kernel here pays for
// its output when that output is too large for glibc to recycle (over 32 MiB).
//
//   build/bench/bench_fused_ops --benchmark_min_time=0.2
//   HYMBA_NUM_THREADS=1 build/bench/bench_fused_ops --benchmark_filter=rms_norm
#include <benchmark/benchmark.h>

#include <cstring>
#include <functional>
#include <string>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/norm.h"
#include "kernels/softmax_xent.h"

using namespace hymba;

namespace {

constexpr double kF32 = 4.0;

void report(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["MB"] = bytes * 1e-6;
}

// Copies half of `bytes` into the other half (so `bytes` cross the memory bus), split over
// the same threads the kernels use.
void register_memcpy(const std::string& label, double bytes) {
  const size_t half = size_t(bytes / 2);
  benchmark::RegisterBenchmark(("memcpy/" + label).c_str(), [half, bytes](benchmark::State& st) {
    Tensor src = full({int64_t(half)}, 1.0, DType::U8), dst = zeros({int64_t(half)}, DType::U8);
    const char* s = static_cast<const char*>(src.data_ptr());
    char* d = static_cast<char*>(dst.data_ptr());
    for (auto _ : st) {
      parallel_for(int64_t(half), 1 << 20, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, size_t(e - b)); });
      benchmark::ClobberMemory();
    }
    report(st, bytes);
  })->UseRealTime();
  benchmark::RegisterBenchmark(("memcpy_fresh/" + label).c_str(), [half, bytes](benchmark::State& st) {
    Tensor src = full({int64_t(half)}, 1.0, DType::U8);
    const char* s = static_cast<const char*>(src.data_ptr());
    for (auto _ : st) {
      Tensor dst = empty({int64_t(half)}, DType::U8);
      char* d = static_cast<char*>(dst.data_ptr());
      parallel_for(int64_t(half), 1 << 20, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, size_t(e - b)); });
      benchmark::DoNotOptimize(d);
    }
    report(st, bytes);
  })->UseRealTime();
}

// Registers one kernel benchmark; `setup` builds the inputs once and returns the timed body.
void register_op(const std::string& name, double bytes, std::function<std::function<void()>()> setup) {
  benchmark::RegisterBenchmark(name.c_str(), [bytes, setup](benchmark::State& st) {
    std::function<void()> body = setup();
    for (auto _ : st) body();
    report(st, bytes);
  })->UseRealTime();
}

std::string dims(int64_t a, int64_t b) { return std::to_string(a) + "x" + std::to_string(b); }

void register_all() {
  static Generator gen(0);  // used by the setups, which run after this returns
  Generator* g = &gen;
  for (int64_t d : {1024, 1600}) {
    const int64_t n = 4096;
    const double elems = double(n * d);
    // forward: read x, write y; backward: read dy and x, write dx (w, rstd, dw are O(n + d)).
    register_op("rms_norm_fwd/" + dims(n, d), 2 * elems * kF32, [=] {
      Tensor x = randn({n, d}, DType::F32, g), w = randn({d}, DType::F32, g);
      return [=] { benchmark::DoNotOptimize(kernels::rms_norm_forward(x, w, 1e-6)); };
    });
    register_op("rms_norm_bwd/" + dims(n, d), 3 * elems * kF32, [=] {
      Tensor x = randn({n, d}, DType::F32, g), w = randn({d}, DType::F32, g), dy = randn({n, d}, DType::F32, g);
      Tensor rstd = std::get<1>(kernels::rms_norm_forward(x, w, 1e-6));
      return [=] { benchmark::DoNotOptimize(kernels::rms_norm_backward(dy, x, w, rstd)); };
    });
    register_memcpy(dims(n, d) + "_x2", 2 * elems * kF32);
    register_memcpy(dims(n, d) + "_x3", 3 * elems * kF32);
  }
  {
    // The Hymba-1.5B MLP gate: 4096 tokens x 5504 intermediate channels.
    const int64_t n = 4096, h = 5504;
    const double elems = double(n * h);
    // forward: read gate and up, write y; backward: read dy, gate, up, write dgate and dup.
    register_op("swiglu_fwd/" + dims(n, h), 3 * elems * kF32, [=] {
      Tensor gate = randn({n, h}, DType::F32, g), up = randn({n, h}, DType::F32, g);
      return [=] { benchmark::DoNotOptimize(kernels::swiglu_forward(gate, up)); };
    });
    register_op("swiglu_bwd/" + dims(n, h), 5 * elems * kF32, [=] {
      Tensor gate = randn({n, h}, DType::F32, g), up = randn({n, h}, DType::F32, g), dy = randn({n, h}, DType::F32, g);
      return [=] { benchmark::DoNotOptimize(kernels::swiglu_backward(dy, gate, up)); };
    });
    register_op("silu_fwd/" + dims(n, h), 2 * elems * kF32, [=] {
      Tensor x = randn({n, h}, DType::F32, g);
      return [=] { benchmark::DoNotOptimize(kernels::silu_forward(x)); };
    });
    register_memcpy(dims(n, h) + "_x3", 3 * elems * kF32);
    register_memcpy(dims(n, h) + "_x5", 5 * elems * kF32);
  }
  for (auto [n, v] : {std::pair<int64_t, int64_t>{2048, 32001}, {8192, 4096}}) {
    const double elems = double(n * v);
    // softmax: read x, write y. cross-entropy forward reads the logits; backward reads them
    // again and writes dlogits (targets, stats and the loss are O(n)).
    register_op("softmax_fwd/" + dims(n, v), 2 * elems * kF32, [=] {
      Tensor x = randn({n, v}, DType::F32, g, 0.0, 3.0);
      return [=] { benchmark::DoNotOptimize(kernels::softmax_forward(x, -1)); };
    });
    register_op("softmax_bwd/" + dims(n, v), 3 * elems * kF32, [=] {
      Tensor y = kernels::softmax_forward(randn({n, v}, DType::F32, g, 0.0, 3.0), -1), dy = randn({n, v}, DType::F32, g);
      return [=] { benchmark::DoNotOptimize(kernels::softmax_backward(dy, y, -1)); };
    });
    register_op("cross_entropy_fwd/" + dims(n, v), elems * kF32, [=] {
      Tensor logits = randn({n, v}, DType::F32, g, 0.0, 3.0);
      Tensor targets = rand({n}, DType::F32, g, 0.0, double(v) - 1.0).to(DType::I64);
      return [=] { benchmark::DoNotOptimize(kernels::cross_entropy_forward(logits, targets)); };
    });
    register_op("cross_entropy_fwd_bwd/" + dims(n, v), 3 * elems * kF32, [=] {
      Tensor logits = randn({n, v}, DType::F32, g, 0.0, 3.0);
      Tensor targets = rand({n}, DType::F32, g, 0.0, double(v) - 1.0).to(DType::I64);
      Tensor one = ones({});
      return [=] {
        kernels::CrossEntropyForward f = kernels::cross_entropy_forward(logits, targets);
        benchmark::DoNotOptimize(
            kernels::cross_entropy_backward(one, logits, targets, f.stats, -100, 1.0 / double(f.count)));
      };
    });
    // The op training uses: one row pass for the statistics and dlogits while the row is in
    // cache (compulsory traffic: read the logits, write dlogits).
    register_op("cross_entropy_fused_fwd_bwd/" + dims(n, v), 2 * elems * kF32, [=] {
      Tensor logits = randn({n, v}, DType::F32, g, 0.0, 3.0);
      Tensor targets = rand({n}, DType::F32, g, 0.0, double(v) - 1.0).to(DType::I64);
      return [=] { benchmark::DoNotOptimize(kernels::cross_entropy_forward_backward(logits, targets)); };
    });
    register_memcpy(dims(n, v) + "_x1", elems * kF32);
    register_memcpy(dims(n, v) + "_x2", 2 * elems * kF32);
    register_memcpy(dims(n, v) + "_x3", 3 * elems * kF32);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("threads", std::to_string(num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
