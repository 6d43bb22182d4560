// kernels::matmul against cblas_sgemm called directly on the same buffers: the difference is
// our overhead (shape checks, layout mapping, allocation of the output, batch folding).
//
//   bench_matmul --benchmark_min_time=0.1
//
// Args: M, N, K, trans_a, trans_b. LM shapes are one linear layer of a small model with
// B*T = 2048 tokens, 512 -> 1536: forward y = x W^T (NT), dx = g W (NN), dW = g^T x (TN).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include "core/parallel.h"
#include "core/rng.h"
#include "kernels/matmul.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using hymba::Tensor;

// Stored operands for op(A) (M x K) and op(B) (K x N): a transposed operand is stored
// transposed, like a weight (out, in) read as W^T.
struct Operands {
  Tensor a, b;
  Operands(int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
    a = hymba::randn(ta ? hymba::Shape{K, M} : hymba::Shape{M, K}, hymba::DType::F32);
    b = hymba::randn(tb ? hymba::Shape{N, K} : hymba::Shape{K, N}, hymba::DType::F32);
  }
};

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_HymbaMatmul(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool ta = state.range(3), tb = state.range(4);
  Operands op(M, N, K, ta, tb);
  for (auto _ : state) {
    Tensor c = hymba::kernels::matmul(op.a, op.b, ta, tb);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_flops(state, 2.0 * double(M) * double(N) * double(K));
}

// Our kernel writing into a preallocated output (matmul_out), as backward accumulation does.
void BM_HymbaMatmulOut(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool ta = state.range(3), tb = state.range(4);
  Operands op(M, N, K, ta, tb);
  Tensor c = hymba::empty({M, N}, hymba::DType::F32);
  for (auto _ : state) {
    hymba::kernels::matmul_out(c, op.a, op.b, ta, tb);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_flops(state, 2.0 * double(M) * double(N) * double(K));
}

void BM_CblasSgemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool ta = state.range(3), tb = state.range(4);
  openblas_set_num_threads(hymba::num_threads());  // what the kernel uses
  Operands op(M, N, K, ta, tb);
  Tensor c = hymba::empty({M, N}, hymba::DType::F32);
  const float* A = op.a.data<float>();
  const float* B = op.b.data<float>();
  float* C = c.data<float>();
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
                1.0f, A, int(ta ? M : K), B, int(tb ? K : N), 0.0f, C, int(N));
    benchmark::DoNotOptimize(C);
  }
  set_flops(state, 2.0 * double(M) * double(N) * double(K));
}

// A batch of activations times a shared weight, x (4, 512, 512) @ W^T with W (1536, 512):
// the kernel folds the batch into one (2048 x 512) gemm, the same work as the LM NT shape.
void BM_HymbaBatchedSharedWeight(benchmark::State& state) {
  Tensor x = hymba::randn({4, 512, 512}, hymba::DType::F32);
  Tensor w = hymba::randn({1536, 512}, hymba::DType::F32);
  for (auto _ : state) {
    Tensor c = hymba::kernels::matmul(x, w, false, true);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_flops(state, 2.0 * 2048.0 * 1536.0 * 512.0);
}

// Many small products (attention-sized): per-call overhead dominates here.
void BM_HymbaBatchedSmall(benchmark::State& state) {
  const int64_t nb = state.range(0), n = state.range(1);
  Tensor a = hymba::randn({nb, n, n}, hymba::DType::F32), b = hymba::randn({nb, n, n}, hymba::DType::F32);
  for (auto _ : state) {
    Tensor c = hymba::kernels::matmul(a, b, false, true);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_flops(state, 2.0 * double(nb) * double(n) * double(n) * double(n));
}

void square_and_lm(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "ta", "tb"});
  for (int64_t s : {256, 512, 1024, 2048}) b->Args({s, s, s, 0, 0});
  b->Args({2048, 1536, 512, 0, 1});  // forward x W^T
  b->Args({2048, 512, 1536, 0, 0});  // dx = g W
  b->Args({1536, 512, 2048, 1, 0});  // dW = g^T x
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_HymbaMatmul)->Apply(square_and_lm);
BENCHMARK(BM_CblasSgemm)->Apply(square_and_lm);
BENCHMARK(BM_HymbaMatmulOut)->Args({2048, 1536, 512, 0, 1})->Args({1536, 512, 2048, 1, 0})
    ->ArgNames({"M", "N", "K", "ta", "tb"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_HymbaBatchedSharedWeight)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_HymbaBatchedSmall)->Args({64, 64})->Args({256, 32})->ArgNames({"batch", "n"})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
