// GPU throughput of the kernels, through their public APIs (kernels/*.h on CUDA tensors), each
// beside a baseline measured in the same run on the same card:
//
//   GEMM (bf16, f32)          TFLOP/s   vs cublasGemmEx of the same shape and layout
//   rms_norm, SwiGLU,         GB/s of compulsory traffic (each input read once, each output
//   cross-entropy, AdamW,     written once) vs a device-to-device cudaMemcpy moving the same
//   selective scan            number of bytes (read + written): the card's copy bandwidth
//   attention                 TFLOP/s over visible query-key pairs only vs the 150 TFLOP/s target
//
// The scan and attention run under each CUDA implementation (kernels/cuda_impl.h), tagged
// [sequential]/[blocked] and [wmma]/[mma]; a fast one's result is compared with the reference
// one's at the same shape, and a mismatch counts as a failure.
//
// Shapes are Hymba-1.5B's (HYMBA_SPEC.md) at 8 sequences of 2048 tokens plus 128 meta tokens.
// Times are the median of several runs after a warm-up, measured with CUDA events on the
// legacy default stream, where every kernel runs. A case whose kernel throws (a family with
// no CUDA kernel yet) prints "n/a: <message>" beside its baseline and the program goes on.
//
//   build/bench/bench_gpu                      full sizes
//   build/bench/bench_gpu --quick              small sizes: a smoke test of every case
//   build/bench/bench_gpu --filter attention   only cases whose name contains "attention"
//
// Output: '#' lines describe the card, '|' lines are the results table (markdown), one per case.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/allocator.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/activation.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cuda_impl.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/selective_scan.h"
#include "kernels/softmax_xent.h"
#ifdef HYMBA_SCAN_BASELINE
// An earlier kernels/cuda/selective_scan_blocked.cu is built into this program with its
// namespace renamed from scan_blocked (bench/CMakeLists.txt): the same rename here declares its
// entry points. The current kernels are reached through the public API (kernels/selective_scan.h).
#define scan_blocked scan_blocked_baseline
#include "kernels/cuda/selective_scan_blocked.h"
#undef scan_blocked
#endif

using namespace hymba;
namespace K = hymba::kernels;
namespace KC = hymba::kernels::cuda;

namespace {

const Device kGpu = Device::cuda(0);
constexpr double kAttentionTargetTflops = 150.0;

// ---------------------------------------------------------------- options and sizes

struct Options {
  bool quick = false;
  std::string filter;
  int max_reps = 20;
  double target_ms = 300;   // time per measured op, split over its repetitions
  double max_seconds = 0;   // whole-program budget; 0: none
};

// Hymba-1.5B: d 1600, attention/SSM width 3200, fused in_proj 1600 -> 8960 (q|k|v|x|z of a
// KV producer), MLP 5504, vocab 32001; 8 sequences of 2048 + 128 meta tokens.
struct Sizes {
  int64_t batch, seq;                                  // tokens = batch * seq
  int64_t d_model, d_inner, d_in_proj, d_mlp, vocab;
  int64_t heads_q, heads_kv, dk, dv, window, meta;
  int64_t d_state;
  int64_t adamw_params;
  int64_t sq_m, sq_n, sq_k;                            // the plain reference GEMM
  int64_t tokens() const { return batch * seq; }
};

Sizes full_sizes() {
  return {8, 2048 + 128, 1600, 3200, 8960, 5504, 32001, 25, 5, 64, 128, 1024, 128, 16, 100'000'000,
          16384, 3200, 3200};
}
// Every dimension small and off the usual tile multiples, so --quick also exercises edges.
Sizes quick_sizes() { return {2, 200, 160, 320, 1000, 552, 3001, 5, 1, 64, 128, 64, 16, 16, 1'000'003, 500, 320, 320}; }

// ---------------------------------------------------------------- formatting

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(v);
  }
  return s;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The first line of an exception's message, without '|' (it would split the table cell).
std::string short_message(const char* what) {
  std::string m(what);
  m = m.substr(0, m.find('\n'));
  std::replace(m.begin(), m.end(), '|', '/');
  if (m.size() > 160) m = m.substr(0, 157) + "...";
  return m;
}

// One line of the results table. `ours` is empty when the kernel threw (then `error` says
// why); the baseline is always there when it could be measured.
struct Row {
  std::string name, shape, dtype;
  std::optional<double> ours_ms;
  std::string error;
  double amount = 0;          // FLOPs or bytes per run of our op
  bool flops = true;          // TFLOP/s (true) or GB/s
  std::string baseline_name;  // "cuBLAS", "copy", "target"
  std::optional<double> baseline_rate;  // in the same unit as ours
  std::string note;
};

double rate_of(const Row& r, double ms) { return r.amount / (ms * 1e-3) / (r.flops ? 1e12 : 1e9); }

void print_header() {
  std::printf("| case | shape | dtype | time | achieved | baseline | ratio | note |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
}

void print_row(const Row& r) {
  const char* unit = r.flops ? "TFLOP/s" : "GB/s";
  const char* rate_fmt = r.flops ? "%.1f" : "%.0f";
  std::string time, achieved, ratio;
  if (r.ours_ms) {
    const double rate = rate_of(r, *r.ours_ms);
    time = fmt(*r.ours_ms < 1 ? "%.3f ms" : "%.2f ms", *r.ours_ms);
    achieved = fmt(rate_fmt, rate) + " " + unit;
    if (r.baseline_rate && *r.baseline_rate > 0) ratio = fmt("%.2f", rate / *r.baseline_rate);
  } else {
    time = "n/a: " + r.error;
  }
  std::string base = r.baseline_rate ? r.baseline_name + " " + fmt(rate_fmt, *r.baseline_rate) + " " + unit
                                     : r.baseline_name + " n/a";
  std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name.c_str(), r.shape.c_str(), r.dtype.c_str(),
              time.c_str(), achieved.c_str(), base.c_str(), ratio.c_str(), r.note.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------- timing

// Written before every timed run so that no run finds the previous run's data in L2 (50-60
// MB on Hopper, the size of one activation here): twice the L2 size, set up in main.
void* g_l2_flush = nullptr;
size_t g_l2_flush_bytes = 0;

// Runs of fn() timed with CUDA events on stream 0 (where every kernel and the cuBLAS handle
// below run), each after the L2 flush.
class EventTimer {
 public:
  EventTimer() {
    HYMBA_CUDA_CHECK(cudaEventCreate(&start_));
    HYMBA_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  double once(const std::function<void()>& fn) {
    if (g_l2_flush) HYMBA_CUDA_CHECK(cudaMemsetAsync(g_l2_flush, 0, g_l2_flush_bytes, 0));
    HYMBA_CUDA_CHECK(cudaEventRecord(start_, 0));
    fn();
    HYMBA_CUDA_CHECK(cudaEventRecord(stop_, 0));
    HYMBA_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    HYMBA_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return double(ms);
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

double median_of(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median milliseconds of fn() over several runs. Two warm-up runs keep module loading,
// allocator growth and cuBLAS's heuristics out of the numbers; the second also sizes the
// repetitions so each measured op costs about target_ms in all.
double median_ms(const Options& o, const std::function<void()>& fn) {
  EventTimer timer;
  timer.once(fn);
  const double warm = timer.once(fn);
  const int reps = std::clamp(int(o.target_ms / std::max(warm, 1e-3)), 3, o.max_reps);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(timer.once(fn));
  return median_of(std::move(t));
}

// The median milliseconds of fa() and of fb(), their runs alternating (a, b, a, b, ...) after
// two warm-ups of each, so that a drift of the clocks or the temperature falls on both alike.
std::pair<double, double> median_ms_ab(const Options& o, const std::function<void()>& fa,
                                       const std::function<void()>& fb) {
  EventTimer timer;
  timer.once(fa);
  timer.once(fb);
  const double warm = timer.once(fa) + timer.once(fb);
  const int reps = std::clamp(int(o.target_ms / std::max(warm, 1e-3)), 3, o.max_reps);
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i) {
    ta.push_back(timer.once(fa));
    tb.push_back(timer.once(fb));
  }
  return {median_of(std::move(ta)), median_of(std::move(tb))};
}

// ---------------------------------------------------------------- inputs

Tensor randn_gpu(const Shape& s, DType dt, uint64_t seed, double mean = 0.0, double std = 1.0) {
  Generator g(seed);
  return randn(s, TensorOptions(dt, kGpu), &g, mean, std);
}

Tensor rand_gpu(const Shape& s, DType dt, uint64_t seed, double low, double high) {
  Generator g(seed);
  return rand(s, TensorOptions(dt, kGpu), &g, low, high);
}

// ---------------------------------------------------------------- FLOP and byte counts

// A matrix product (M x K) @ (K x N): one multiply and one add per (m, n, k).
double gemm_flops(int64_t m, int64_t n, int64_t k) { return 2.0 * double(m) * double(n) * double(k); }

// RMSNorm forward over (rows, d): x read, w read; y and the f32 rstd per row written.
double rms_norm_fwd_bytes(int64_t rows, int64_t d, double es) {
  return 2.0 * rows * d * es + d * es + rows * 4.0;
}
// RMSNorm backward: dy, x, w and rstd read; dx and dw written.
double rms_norm_bwd_bytes(int64_t rows, int64_t d, double es) {
  return 3.0 * rows * d * es + 2.0 * d * es + rows * 4.0;
}
// SwiGLU forward silu(gate) * up: gate and up read, out written.
double swiglu_fwd_bytes(int64_t rows, int64_t h, double es) { return 3.0 * rows * h * es; }
// SwiGLU backward: dy, gate, up read; dgate, dup written.
double swiglu_bwd_bytes(int64_t rows, int64_t h, double es) { return 5.0 * rows * h * es; }
// Cross-entropy forward: logits and i64 targets read; stats (2 f32 per row) written.
double xent_fwd_bytes(int64_t rows, int64_t v, double es) { return rows * v * es + rows * 8.0 + rows * 8.0; }
// Cross-entropy backward: logits, targets, stats read; dlogits written.
double xent_bwd_bytes(int64_t rows, int64_t v, double es) { return 2.0 * rows * v * es + rows * 16.0; }
// AdamW: param, grad, exp_avg, exp_avg_sq read; param and both moments written (f32).
double adamw_bytes(int64_t n) { return 7.0 * n * 4.0; }

// Selective scan forward (u, delta, z: B x D x L; B, C: B x N x L; A: D x N; D, delta_bias: D):
// inputs read once; out written, plus the final state and the chunk-end states (f32), which
// backward needs. This is the floor: a fused scan keeps the state h in registers.
double scan_fwd_bytes(int64_t b, int64_t d, int64_t l, int64_t n, double es) {
  const double chunks = double((l + K::kScanChunk - 1) / K::kScanChunk);
  const double inputs = 3.0 * b * d * l * es + 2.0 * b * n * l * es + d * n * es + 2.0 * d * es;
  const double outputs = b * d * l * es + b * d * n * 4.0 + b * d * chunks * n * 4.0;
  return inputs + outputs;
}
// Selective scan backward: dout and the forward inputs read, chunk states read; one gradient
// per input written (dA, dD, ddelta_bias reduced over the batch; dB, dC over the channels).
double scan_bwd_bytes(int64_t b, int64_t d, int64_t l, int64_t n, double es) {
  const double chunks = double((l + K::kScanChunk - 1) / K::kScanChunk);
  const double reads =
      4.0 * b * d * l * es + 2.0 * b * n * l * es + d * n * es + 2.0 * d * es + b * d * chunks * n * 4.0;
  const double writes = 3.0 * b * d * l * es + 2.0 * b * n * l * es + d * n * es + 2.0 * d * es;
  return reads + writes;
}

// Visible (query, key) pairs of one (batch, head), counted with the kernels' own mask rule.
int64_t attention_pairs(int64_t t, int64_t window, int64_t meta) {
  int64_t n = 0;
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j <= i; ++j) n += K::attention_visible(i, j, window, meta) ? 1 : 0;
  return n;
}
// Attention forward: per visible pair, q.k (2 dk FLOPs) and p.v (2 dv FLOPs); the softmax's
// exponentials are not counted. Backward is counted as 2.5x forward (recomputing q.k, then
// dv, dp, dq, dk: 5 products against the forward's 2), the usual flash-attention convention.
double attention_fwd_flops(int64_t pairs_total, int64_t dk, int64_t dv) {
  return double(pairs_total) * (2.0 * dk + 2.0 * dv);
}
constexpr double kAttentionBwdOverFwd = 2.5;

// ---------------------------------------------------------------- baselines

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)), t0_(std::chrono::steady_clock::now()) {
    HYMBA_CUBLAS_CHECK(cublasCreate(&cublas_));
    HYMBA_CUBLAS_CHECK(cublasSetStream(cublas_, cudaStream_t(0)));
  }
  ~Bench() { cublasDestroy(cublas_); }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  const Options& options() const { return o_; }
  int failures() const { return failures_; }
  void add_failure() { ++failures_; }

  // Runs one case unless filtered out or out of time; a throw becomes an n/a row.
  void run(const std::string& name, const std::string& shape, DType dt, const std::function<void(Row&)>& body) {
    if (!o_.filter.empty() && name.find(o_.filter) == std::string::npos) return;
    Row r;
    r.name = name;
    r.shape = shape;
    r.dtype = dtype_name(dt);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (o_.max_seconds > 0 && elapsed > o_.max_seconds) {
      r.error = fmt("skipped: the %.0f s budget is spent", o_.max_seconds);
      print_row(r);
      return;
    }
    try {
      body(r);
    } catch (const std::exception& e) {
      r.ours_ms.reset();
      r.error = short_message(e.what());
      ++failures_;
    }
    (void)cudaGetLastError();  // a failed launch must not be reported again by the next case
    print_row(r);
    // Each case allocates its own large tensors; give them back so cases do not add up.
    get_allocator(kGpu)->empty_cache();
  }

  // GB/s of a device-to-device copy moving `bytes` (half read, half written).
  double copy_gbs(double bytes) {
    const int64_t half = std::max<int64_t>(1, int64_t(bytes / 2));
    Tensor src = empty({half}, TensorOptions(DType::U8, kGpu)), dst = empty({half}, TensorOptions(DType::U8, kGpu));
    HYMBA_CUDA_CHECK(cudaMemset(src.data_ptr(), 1, size_t(half)));
    const double ms = median_ms(o_, [&] {
      HYMBA_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), size_t(half), cudaMemcpyDeviceToDevice, 0));
    });
    return 2.0 * double(half) / (ms * 1e-3) / 1e9;
  }

  // c = op(a) @ op(b) through cublasGemmEx on row-major tensors: cuBLAS is column-major, so
  // it computes c^T = op(b)^T op(a)^T, reading each row-major buffer as its transpose.
  void cublas_gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool ta, bool tb) {
    const int64_t m = c.size(0), n = c.size(1), k = ta ? a.size(0) : a.size(1), ldc = c.stride(0);
    const cudaDataType_t type = c.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const float alpha = 1.0f, beta = 0.0f;
    HYMBA_CUBLAS_CHECK(cublasGemmEx(cublas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
                                    int(m), int(k), &alpha, b.data_ptr(), type, int(tb ? k : n), a.data_ptr(), type,
                                    int(ta ? m : k), &beta, c.data_ptr(), type, int(ldc), CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
  }

  // max |got - want| / max |want| over all elements, computed on the device in f32.
  double max_rel_diff(const Tensor& got, const Tensor& want) {
    // g is overwritten with the difference, so it must be a copy even when got is f32 already.
    Tensor g = got.dtype() == DType::F32 ? got.clone() : got.to(DType::F32).contiguous();
    Tensor w = want.to(DType::F32).contiguous();
    const int64_t n = g.numel();
    const float minus_one = -1.0f;
    HYMBA_CUBLAS_CHECK(cublasSaxpy_64(cublas_, n, &minus_one, static_cast<const float*>(w.data_ptr()), 1,
                                      static_cast<float*>(g.data_ptr()), 1));
    auto amax = [&](const Tensor& t) {
      int64_t i = 0;
      HYMBA_CUBLAS_CHECK(cublasIsamax_64(cublas_, n, static_cast<const float*>(t.data_ptr()), 1, &i));
      float v = 0;
      HYMBA_CUDA_CHECK(cudaMemcpy(&v, static_cast<const float*>(t.data_ptr()) + (i - 1), sizeof v,
                                  cudaMemcpyDeviceToHost));
      return double(std::abs(v));
    };
    const double ref = amax(w);
    return amax(g) / std::max(ref, 1e-30);
  }

 private:
  Options o_;
  std::chrono::steady_clock::time_point t0_;
  cublasHandle_t cublas_ = nullptr;
  int failures_ = 0;
};

// Times our op into r, leaving r.error set if it throws; the baseline stays measured either way.
// A family without a CUDA kernel, or a dtype it does not take, is n/a; a CUDA or cuBLAS error
// is a bug and counts as a failure (the program then exits 1).
void time_ours(Bench& b, Row& r, const std::function<void()>& fn) {
  try {
    r.ours_ms = median_ms(b.options(), fn);
  } catch (const std::exception& e) {
    r.error = short_message(e.what());
    const std::string m = e.what();
    if (m.find("CUDA error ") != std::string::npos || m.find("cuBLAS error ") != std::string::npos)
      b.add_failure();
  }
}

// Compares a fast implementation's result with the reference implementation's on the same
// inputs (max |diff| / max |want|); a mismatch beyond tol counts as a failure and is shown in
// the note, so a fast kernel that is wrong at the real shape cannot report a good time.
void compare(Bench& b, Row& r, const char* what, const Tensor& got, const Tensor& want, double tol) {
  const double d = b.max_rel_diff(got, want);
  const bool ok = d <= tol;
  if (!ok) b.add_failure();
  r.note += (r.note.empty() ? "" : "; ") + std::string(what) + fmt(" rel diff %.1e", d) + (ok ? "" : " MISMATCH");
}

// ---------------------------------------------------------------- cases

struct GemmCase {
  const char* name;
  int64_t m, n, k;
  bool ta, tb;
  int64_t ldc = 0;  // the output's row stride (0: n); a view of a wider buffer otherwise
};

int64_t padded_vocab(const Sizes& s) { return (s.vocab + 127) / 128 * 128; }

void bench_gemm(Bench& b, const Sizes& s, DType dt) {
  const int64_t t = s.tokens();
  const std::vector<GemmCase> cases = {
      {"gemm.square NN", s.sq_m, s.sq_n, s.sq_k, false, false},
      {"gemm.in_proj fwd NT", t, s.d_in_proj, s.d_model, false, true},  // x W^T
      {"gemm.in_proj dx NN", t, s.d_model, s.d_in_proj, false, false},  // dy W
      {"gemm.in_proj dW TN", s.d_in_proj, s.d_model, t, true, false},   // dy^T x
      {"gemm.out_proj fwd NT", t, s.d_model, s.d_inner, false, true},
      {"gemm.mlp_gate_up fwd NT", t, 2 * s.d_mlp, s.d_model, false, true},
      {"gemm.mlp_down fwd NT", t, s.d_model, s.d_mlp, false, true},
      {"gemm.lm_head fwd NT", t, s.vocab, s.d_model, false, true},
      {"gemm.lm_head dx NN", t, s.d_model, s.vocab, false, false},
      {"gemm.lm_head dW TN", s.vocab, s.d_model, t, true, false},
      // cuBLAS runs the odd vocabulary (32001) at 99-153 TFLOP/s on an H100, so kernels::matmul
      // runs these three on zero-padded copies (kernels/matmul.h): the baseline column is
      // cuBLAS on the unpadded shape, the rows below are cuBLAS on a vocabulary padded to a
      // multiple of 128, the ceiling the padded products approach.
      {"gemm.lm_head fwd NT, vocab % 128 == 0", t, padded_vocab(s), s.d_model, false, true},
      {"gemm.lm_head dx NN, vocab % 128 == 0", t, s.d_model, padded_vocab(s), false, false},
      {"gemm.lm_head dW TN, vocab % 128 == 0", padded_vocab(s), s.d_model, t, true, false},
  };
  for (const GemmCase& c : cases) {
    b.run(c.name, dims({c.m, c.n, c.k}), dt, [&](Row& r) {
      r.amount = gemm_flops(c.m, c.n, c.k);
      r.baseline_name = "cuBLAS";
      Tensor a = randn_gpu(c.ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, dt, 1);
      Tensor w = randn_gpu(c.tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, dt, 2);
      const int64_t ldc = c.ldc > 0 ? c.ldc : c.n;
      Tensor ref = empty({c.m, ldc}, TensorOptions(dt, kGpu)).narrow(1, 0, c.n);
      Tensor out = empty({c.m, ldc}, TensorOptions(dt, kGpu)).narrow(1, 0, c.n);
      r.baseline_rate = rate_of(r, median_ms(b.options(), [&] { b.cublas_gemm(ref, a, w, c.ta, c.tb); }));
      time_ours(b, r, [&] { K::matmul_out(out, a, w, c.ta, c.tb); });
      if (r.ours_ms) {
        // Both sum K products in fp32 in different orders; bf16 adds the output's rounding.
        // TF32 (HYMBA_ALLOW_TF32) rounds f32 inputs to 10 mantissa bits.
        const double tol = dt == DType::BF16 || std::getenv("HYMBA_ALLOW_TF32") ? 2e-2 : 1e-4;
        const double err = b.max_rel_diff(out, ref);
        r.note = fmt("err %.1e", err);
        if (!(err <= tol)) {
          r.note += fmt(" WRONG (tolerance %.0e)", tol);
          b.add_failure();
        }
      }
    });
  }
}

// Fills in a memory-bound row: the copy baseline for r.amount bytes, then our op.
void memory_bound(Bench& b, Row& r, double bytes, const std::function<void()>& fn) {
  r.flops = false;
  r.amount = bytes;
  r.baseline_name = "copy";
  r.note = fmt("%.0f MB", bytes * 1e-6);
  r.baseline_rate = b.copy_gbs(bytes);
  time_ours(b, r, fn);
}

void bench_fused(Bench& b, const Sizes& s, DType dt) {
  const int64_t rows = s.tokens(), d = s.d_model, h = s.d_mlp, v = s.vocab;
  const double es = double(dtype_size(dt));

  // The hidden-size norms, then the SSM's inner norms on B / C (d_state wide) and on dt
  // (dt_rank = hidden / 16 wide): narrow rows, which the Hymba-125M profile showed taking most
  // of the norm time (bench/RESULTS.md).
  const struct {
    const char* tag;
    int64_t width;
  } norms[] = {{"", d}, {", inner B/C", s.d_state}, {", inner dt", d / 16}};
  for (const auto& n : norms) {
    const int64_t nd = n.width;
    b.run(std::string("rms_norm fwd") + n.tag, dims({rows, nd}), dt, [&](Row& r) {
      Tensor x = randn_gpu({rows, nd}, dt, 3), w = randn_gpu({nd}, dt, 4, 1.0, 0.1);
      memory_bound(b, r, rms_norm_fwd_bytes(rows, nd, es), [&] { K::rms_norm_forward(x, w, 1e-6); });
    });
    b.run(std::string("rms_norm bwd") + n.tag, dims({rows, nd}), dt, [&](Row& r) {
      Tensor x = randn_gpu({rows, nd}, dt, 3), w = randn_gpu({nd}, dt, 4, 1.0, 0.1), dy = randn_gpu({rows, nd}, dt, 5);
      Tensor rstd;
      memory_bound(b, r, rms_norm_bwd_bytes(rows, nd, es), [&] {
        if (!rstd.defined()) rstd = std::get<1>(K::rms_norm_forward(x, w, 1e-6));
        K::rms_norm_backward(dy, x, w, rstd);
      });
    });
  }
  b.run("swiglu fwd", dims({rows, h}), dt, [&](Row& r) {
    Tensor g = randn_gpu({rows, h}, dt, 6), u = randn_gpu({rows, h}, dt, 7);
    memory_bound(b, r, swiglu_fwd_bytes(rows, h, es), [&] { K::swiglu_forward(g, u); });
  });
  b.run("swiglu bwd", dims({rows, h}), dt, [&](Row& r) {
    Tensor g = randn_gpu({rows, h}, dt, 6), u = randn_gpu({rows, h}, dt, 7), dy = randn_gpu({rows, h}, dt, 8);
    memory_bound(b, r, swiglu_bwd_bytes(rows, h, es), [&] { K::swiglu_backward(dy, g, u); });
  });

  // Targets drawn on the host: every class index in [0, V), none ignored.
  std::mt19937_64 rng(9);
  std::vector<int64_t> tv(static_cast<size_t>(rows));
  for (auto& x : tv) x = int64_t(rng() % uint64_t(v));
  auto targets = [&] { return from_vector<int64_t>(tv, {rows}, TensorOptions(DType::I64, kGpu)); };
  b.run("cross_entropy fwd", dims({rows, v}), dt, [&](Row& r) {
    Tensor logits = randn_gpu({rows, v}, dt, 10, 0.0, 2.0), tg = targets();
    memory_bound(b, r, xent_fwd_bytes(rows, v, es), [&] { K::cross_entropy_forward(logits, tg); });
  });
  b.run("cross_entropy fwd+bwd", dims({rows, v}), dt, [&](Row& r) {
    Tensor logits = randn_gpu({rows, v}, dt, 10, 0.0, 2.0), tg = targets();
    Tensor grad = scalar_tensor(1.0, TensorOptions(dt, kGpu));
    memory_bound(b, r, xent_fwd_bytes(rows, v, es) + xent_bwd_bytes(rows, v, es), [&] {
      K::CrossEntropyForward f = K::cross_entropy_forward(logits, tg);
      K::cross_entropy_backward(grad, logits, tg, f.stats, -100, 1.0 / double(std::max<int64_t>(f.count, 1)));
    });
  });
  // The fused op the training loss uses: one read of the logits, dlogits written in the same
  // pass (the row stays in shared memory); its dlogits checked against the two-kernel path.
  b.run("cross_entropy fused fwd+bwd", dims({rows, v}), dt, [&](Row& r) {
    Tensor logits = randn_gpu({rows, v}, dt, 10, 0.0, 2.0), tg = targets();
    memory_bound(b, r, xent_fwd_bytes(rows, v, es) + double(rows) * double(v) * es,
                 [&] { K::cross_entropy_forward_backward(logits, tg); });
    if (r.ours_ms) {
      const Tensor got = K::cross_entropy_forward_backward(logits, tg).dlogits;
      const K::CrossEntropyForward f = K::cross_entropy_forward(logits, tg);
      const Tensor want = K::cross_entropy_backward(scalar_tensor(1.0, TensorOptions(dt, kGpu)), logits, tg, f.stats,
                                                    -100, 1.0 / double(std::max<int64_t>(f.count, 1)));
      compare(b, r, "dlogits", got, want, dt == DType::BF16 ? 2e-2 : 1e-4);
    }
  });
}

void bench_adamw(Bench& b, const Sizes& s) {
  const int64_t n = s.adamw_params;
  b.run("adamw step", dims({n}), DType::F32, [&](Row& r) {
    Tensor p = randn_gpu({n}, DType::F32, 11, 0.0, 0.02), g = randn_gpu({n}, DType::F32, 12, 0.0, 1e-3);
    Tensor m = randn_gpu({n}, DType::F32, 13, 0.0, 1e-4), v = rand_gpu({n}, DType::F32, 14, 0.0, 1e-6);
    memory_bound(b, r, adamw_bytes(n), [&] { K::adamw_step(p, g, m, v, 1e-4, 0.9, 0.95, 1e-8, 0.1, 10); });
  });
}

// The scan's inputs at the benchmark shape: random, with A = -exp(A_log), A_log[d, n] =
// log(n + 1) as Mamba initialises it, and steps dt of about 0.1.
struct ScanInputs {
  Tensor u, delta, A, Bm, C, Dv, z, bias;
};
ScanInputs make_scan_inputs(const Sizes& s, DType dt) {
  const int64_t B = s.batch, D = s.d_inner, L = s.seq, N = s.d_state;
  ScanInputs in;
  in.u = randn_gpu({B, D, L}, dt, 20);
  in.delta = randn_gpu({B, D, L}, dt, 21, -2.0, 0.5);  // softplus(-2 +- 0.5): steps of about 0.1
  std::vector<float> a(static_cast<size_t>(D * N));
  for (int64_t i = 0; i < D * N; ++i) a[size_t(i)] = -float(i % N + 1);
  in.A = from_vector<float>(a, {D, N}, TensorOptions(DType::F32, kGpu)).to(dt);
  in.Bm = randn_gpu({B, N, L}, dt, 22);
  in.C = randn_gpu({B, N, L}, dt, 23);
  in.Dv = randn_gpu({D}, dt, 24, 1.0, 0.1);
  in.z = randn_gpu({B, D, L}, dt, 25);
  in.bias = randn_gpu({D}, dt, 26, 0.0, 0.1);
  return in;
}

void bench_scan(Bench& b, const Sizes& s, DType dt) {
  const int64_t B = s.batch, D = s.d_inner, L = s.seq, N = s.d_state;
  const double es = double(dtype_size(dt));
  const std::string shape = dims({B, D, L, N});
  // Both CUDA implementations (kernels/cuda_impl.h), each checked against the sequential one
  // on the same inputs: the tests cover awkward small shapes, this covers the real one.
  const double tol = dt == DType::BF16 ? 2e-2 : 1e-3;
  for (const KC::ScanImpl impl : {KC::ScanImpl::Sequential, KC::ScanImpl::Blocked}) {
    const KC::ImplGuard<KC::ScanImpl> use(impl);
    const std::string tag = std::string(" [") + KC::impl_name(impl) + "]";
    const bool check = impl != KC::ScanImpl::Sequential;
    // The blocked forward in each of its shapes (kernels/cuda_impl.h, ScanForward): the
    // default keeps the plain [blocked] tag, the others are timed to pick the next default.
    std::vector<KC::ScanForward> shapes = {KC::ScanForward::Steps16Half};
    if (check)
      shapes = {KC::ScanForward::Steps16Half, KC::ScanForward::Steps16, KC::ScanForward::Steps8States2,
                KC::ScanForward::Steps8Blocks4, KC::ScanForward::Steps16Quarter, KC::ScanForward::Steps16HalfGroup8};
    for (const KC::ScanForward fwd_shape : shapes) {
      const KC::ImplGuard<KC::ScanForward> use_shape(fwd_shape);
      const std::string fwd_tag = fwd_shape == KC::ScanForward::Steps16Half
                                      ? tag
                                      : std::string(" [blocked ") + KC::impl_name(fwd_shape) + "]";
      b.run("selective_scan fwd" + fwd_tag, shape, dt, [&](Row& r) {
        ScanInputs in = make_scan_inputs(s, dt);
        memory_bound(b, r, scan_fwd_bytes(B, D, L, N, es), [&] {
          K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true);
        });
        if (check && r.ours_ms) {
          Tensor out =
              std::get<0>(K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true));
          const KC::ImplGuard<KC::ScanImpl> ref(KC::ScanImpl::Sequential);
          Tensor want =
              std::get<0>(K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true));
          compare(b, r, "out", out, want, tol);
        }
      });
    }
    // The blocked backward in each of its shapes (ScanBackward): the default keeps the tag.
    std::vector<KC::ScanBackward> bwd_shapes = {KC::ScanBackward::Steps8Half};
    if (check)
      bwd_shapes = {KC::ScanBackward::Steps8Half, KC::ScanBackward::Steps8, KC::ScanBackward::Steps8Quarter};
    for (const KC::ScanBackward bwd_shape : bwd_shapes) {
      const KC::ImplGuard<KC::ScanBackward> use_bwd(bwd_shape);
      const std::string bwd_tag = bwd_shape == KC::ScanBackward::Steps8Half
                                      ? tag
                                      : std::string(" [blocked, backward ") + KC::impl_name(bwd_shape) + "]";
      b.run("selective_scan fwd+bwd" + bwd_tag, shape, dt, [&](Row& r) {
        ScanInputs in = make_scan_inputs(s, dt);
        Tensor dout = randn_gpu({B, D, L}, dt, 27);
        auto fwd_bwd = [&] {
          auto [out, last, chunks] =
              K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true);
          return K::selective_scan_backward(dout, in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true,
                                            chunks);
        };
        memory_bound(b, r, scan_fwd_bytes(B, D, L, N, es) + scan_bwd_bytes(B, D, L, N, es), [&] { fwd_bwd(); });
        if (check && r.ours_ms) {
          K::SelectiveScanGrads got = fwd_bwd();
          const KC::ImplGuard<KC::ScanImpl> ref(KC::ScanImpl::Sequential);
          K::SelectiveScanGrads want = fwd_bwd();
          compare(b, r, "du", got.du, want.du, tol);
          compare(b, r, "ddelta", got.ddelta, want.ddelta, tol);
          compare(b, r, "dB", got.dB, want.dB, tol);
          compare(b, r, "dA", got.dA, want.dA, tol);
        }
      });
    }
  }
}

#ifdef HYMBA_SCAN_BASELINE
// The blocked scan against an earlier version of itself, both in this program (bench/CMakeLists.txt,
// HYMBA_SCAN_BASELINE; docs/gpu.md): the baseline's forward at its default shape (steps16h)
// against the current one at that shape and at steps16hg, and the same for the backward alone
// (steps8h; steps8q), their runs alternating. Ours is the current kernel, the baseline column
// the earlier one, so the ratio is the speed-up; both see the same inputs, and their results
// must agree (the tolerance of the comparison with the sequential kernels), so that neither
// can report a time for a wrong answer.
void bench_scan_ab(Bench& b, const Sizes& s, DType dt) {
  namespace then = KC::scan_blocked_baseline;
  const KC::ImplGuard<KC::ScanImpl> blocked(KC::ScanImpl::Blocked);
  const int64_t B = s.batch, D = s.d_inner, L = s.seq, N = s.d_state;
  const double es = double(dtype_size(dt)), tol = dt == DType::BF16 ? 2e-2 : 1e-3;
  const std::string shape = dims({B, D, L, N}), base = std::string("baseline ") + HYMBA_SCAN_BASELINE;
  auto ab = [&](Row& r, double bytes, const std::function<void()>& current, const std::function<void()>& earlier) {
    r.flops = false;
    r.amount = bytes;
    r.baseline_name = base;
    r.note = fmt("%.0f MB", bytes * 1e-6);
    try {
      const auto [ms_now, ms_then] = median_ms_ab(b.options(), current, earlier);
      r.ours_ms = ms_now;
      r.baseline_rate = rate_of(r, ms_then);
    } catch (const std::exception& e) {
      r.error = short_message(e.what());
      b.add_failure();
    }
  };
  const int64_t chunk = K::kScanChunk;
  for (const KC::ScanForward shape_now : {KC::ScanForward::Steps16Half, KC::ScanForward::Steps16HalfGroup8}) {
    b.run(std::string("selective_scan fwd A/B [blocked ") + KC::impl_name(shape_now) + "]", shape, dt, [&](Row& r) {
      const ScanInputs in = make_scan_inputs(s, dt);
      auto run_now = [&] {
        const KC::ImplGuard<KC::ScanForward> use(shape_now);
        return K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true, chunk);
      };
      auto run_then = [&] {
        const KC::ImplGuard<KC::ScanForward> use(KC::ScanForward::Steps16Half);
        return then::forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true, chunk);
      };
      ab(r, scan_fwd_bytes(B, D, L, N, es), [&] { run_now(); }, [&] { run_then(); });
      if (!r.ours_ms) return;
      const auto [out, last, states] = run_now();
      const auto [out0, last0, states0] = run_then();
      compare(b, r, "out", out, out0, tol);
      compare(b, r, "last", last, last0, tol);
      compare(b, r, "states", states, states0, tol);
    });
  }
  for (const KC::ScanBackward shape_now : {KC::ScanBackward::Steps8Half, KC::ScanBackward::Steps8Quarter}) {
    b.run(std::string("selective_scan bwd A/B [blocked ") + KC::impl_name(shape_now) + "]", shape, dt, [&](Row& r) {
      const ScanInputs in = make_scan_inputs(s, dt);
      const Tensor dout = randn_gpu({B, D, L}, dt, 27);
      // One forward's chunk states for both: the two share their layout (selective_scan_blocked.h).
      const Tensor states =
          std::get<2>(K::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true, chunk));
      auto run_now = [&] {
        const KC::ImplGuard<KC::ScanBackward> use(shape_now);
        return K::selective_scan_backward(dout, in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true, states,
                                          chunk);
      };
      auto run_then = [&] {
        const KC::ImplGuard<KC::ScanBackward> use(KC::ScanBackward::Steps8Half);
        return then::backward(dout, in.u, in.delta, in.A, in.Bm, in.C, in.Dv, in.z, in.bias, true, states, chunk);
      };
      ab(r, scan_bwd_bytes(B, D, L, N, es), [&] { run_now(); }, [&] { run_then(); });
      if (!r.ours_ms) return;
      const K::SelectiveScanGrads got = run_now(), want = run_then();
      compare(b, r, "du", got.du, want.du, tol);
      compare(b, r, "ddelta", got.ddelta, want.ddelta, tol);
      compare(b, r, "dz", got.dz, want.dz, tol);
      compare(b, r, "dB", got.dB, want.dB, tol);
      compare(b, r, "dC", got.dC, want.dC, tol);
      compare(b, r, "dA", got.dA, want.dA, tol);
      compare(b, r, "dD", got.dD, want.dD, tol);
      compare(b, r, "ddelta_bias", got.ddelta_bias, want.ddelta_bias, tol);
    });
  }
}
#endif

void bench_attention(Bench& b, const Sizes& s, DType dt) {
  const int64_t B = s.batch, T = s.seq, hq = s.heads_q, hkv = s.heads_kv;
  for (const bool sliding : {true, false}) {
    K::AttentionParams p;
    p.window = sliding ? s.window : -1;
    p.num_meta = s.meta;
    const int64_t pairs = attention_pairs(T, p.window, p.num_meta) * B * hq;
    const double fwd = attention_fwd_flops(pairs, s.dk, s.dv);
    const std::string kind = sliding ? "attention swa" : "attention full";
    const std::string shape = "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(hq) + "/" +
                              std::to_string(hkv) + (sliding ? " W" + std::to_string(s.window) : "") + " M" +
                              std::to_string(s.meta);
    auto setup = [&](Row& r, double flops) {
      r.amount = flops;
      r.baseline_name = "target";
      r.baseline_rate = kAttentionTargetTflops;
      r.note = fmt("%.3g pairs", double(pairs));
    };
    auto inputs = [&] {
      return std::make_tuple(randn_gpu({B, hq, T, s.dk}, dt, 30), randn_gpu({B, hkv, T, s.dk}, dt, 31),
                             randn_gpu({B, hkv, T, s.dv}, dt, 32));
    };
    const double tol = dt == DType::BF16 ? 2e-2 : 1e-3;
    for (const KC::AttentionImpl impl : {KC::AttentionImpl::Wmma, KC::AttentionImpl::Mma}) {
      const KC::ImplGuard<KC::AttentionImpl> use(impl);
      const std::string tag = std::string(" [") + KC::impl_name(impl) + "]";
      // The mma kernels take bf16 only: f32 would run the wmma kernel under both names.
      if (impl != KC::AttentionImpl::Wmma && dt != DType::BF16) continue;
      const bool check = impl != KC::AttentionImpl::Wmma;
      b.run(kind + " fwd" + tag, shape, dt, [&](Row& r) {
        setup(r, fwd);
        auto [q, k, v] = inputs();
        time_ours(b, r, [&] { K::attention_forward(q, k, v, p); });
        if (check && r.ours_ms) {
          Tensor out = std::get<0>(K::attention_forward(q, k, v, p));
          const KC::ImplGuard<KC::AttentionImpl> ref(KC::AttentionImpl::Wmma);
          compare(b, r, "out", out, std::get<0>(K::attention_forward(q, k, v, p)), tol);
        }
      });
      b.run(kind + " fwd+bwd" + tag, shape, dt, [&](Row& r) {
        setup(r, fwd * (1.0 + kAttentionBwdOverFwd));
        auto [q, k, v] = inputs();
        Tensor dout = randn_gpu({B, hq, T, s.dv}, dt, 33);
        auto fwd_bwd = [&] {
          auto [out, lse] = K::attention_forward(q, k, v, p);
          return K::attention_backward(dout, q, k, v, out, lse, p);
        };
        time_ours(b, r, [&] { fwd_bwd(); });
        if (check && r.ours_ms) {
          auto [dq, dk, dv] = fwd_bwd();
          const KC::ImplGuard<KC::AttentionImpl> ref(KC::AttentionImpl::Wmma);
          auto [dq_ref, dk_ref, dv_ref] = fwd_bwd();
          compare(b, r, "dq", dq, dq_ref, tol);
          compare(b, r, "dk", dk, dk_ref, tol);
          compare(b, r, "dv", dv, dv_ref, tol);
        }
      });
    }
  }
}

void print_device_and_flush_l2() {
  int dev = 0, rt = 0, drv = 0;
  HYMBA_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  HYMBA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  g_l2_flush_bytes = 2 * size_t(prop.l2CacheSize);
  HYMBA_CUDA_CHECK(cudaMalloc(&g_l2_flush, g_l2_flush_bytes), "the L2 flush buffer");
  HYMBA_CUDA_CHECK(cudaRuntimeGetVersion(&rt));
  HYMBA_CUDA_CHECK(cudaDriverGetVersion(&drv));
  std::printf("# device %d: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB; CUDA runtime %d.%d, driver %d.%d, cuBLAS %d\n",
              dev, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              double(prop.totalGlobalMem) / double(1ull << 30), double(prop.l2CacheSize) / double(1 << 20),
              rt / 1000, rt % 1000 / 10, drv / 1000, drv % 1000 / 10, CUBLAS_VERSION);
}

int usage(const char* argv0, int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: %s [--quick] [--filter SUBSTRING] [--reps N] [--max-seconds S]\n"
               "  --quick          small shapes (a smoke test); default: Hymba-1.5B shapes\n"
               "  --filter S       run only the cases whose name contains S\n"
               "  --reps N         at most N timed runs per measurement (default 20)\n"
               "  --max-seconds S  skip the cases that would start after S seconds\n",
               argv0);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_gpu: %s needs a value\n", a.c_str());
        std::exit(usage(argv[0], 2));
      }
      return argv[++i];
    };
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--filter") {
      o.filter = value();
    } else if (a == "--reps") {
      o.max_reps = std::max(3, std::atoi(value().c_str()));
    } else if (a == "--max-seconds") {
      o.max_seconds = std::atof(value().c_str());
    } else if (a == "--help" || a == "-h") {
      return usage(argv[0], 0);
    } else {
      std::fprintf(stderr, "bench_gpu: unknown argument '%s'\n", a.c_str());
      return usage(argv[0], 2);
    }
  }
  if (!cuda_available()) {
    std::printf("bench_gpu: no CUDA device visible (cudaGetDeviceCount found none); nothing to measure\n");
    return 0;
  }
  try {
    print_device_and_flush_l2();
    const Sizes s = o.quick ? quick_sizes() : full_sizes();
    std::printf("# %s sizes: %lld tokens (%lld x %lld); median of up to %d runs after 2 warm-ups, L2 flushed "
                "before each\n",
                o.quick ? "quick" : "Hymba-1.5B", (long long)s.tokens(), (long long)s.batch, (long long)s.seq,
                o.max_reps);
    // The f32 GEMM baseline is plain fp32 (CUBLAS_COMPUTE_32F); our f32 matmul may be told to
    // use TF32 tensor cores through the environment, which would make the two incomparable.
    if (const char* tf32 = std::getenv("HYMBA_ALLOW_TF32"))
      std::printf("# HYMBA_ALLOW_TF32=%s: f32 GEMMs may run on TF32; their cuBLAS baseline is plain fp32\n", tf32);
    print_header();
    Bench b(o);
    for (DType dt : {DType::BF16, DType::F32}) bench_gemm(b, s, dt);
    for (DType dt : {DType::BF16, DType::F32}) bench_fused(b, s, dt);
    bench_adamw(b, s);
    for (DType dt : {DType::F32, DType::BF16}) bench_scan(b, s, dt);
#ifdef HYMBA_SCAN_BASELINE
    for (DType dt : {DType::F32, DType::BF16}) bench_scan_ab(b, s, dt);
#endif
    for (DType dt : {DType::BF16, DType::F32}) bench_attention(b, s, dt);
    std::printf("# %d failure(s): a CUDA/cuBLAS error, a wrong GEMM result, or a baseline that could not run\n",
                b.failures());
    return b.failures() ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu: %s\n", e.what());
    return 1;
  }
}
