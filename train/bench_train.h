// `hymba bench train`: the speed of a whole training step (forward, backward, gradient
// clipping, AdamW) of a model, with the time split by op family and, measured in the same
// run on the same threads, the OpenBLAS sgemm GFLOP/s the step's FLOP rate compares with.
//
// Achieved GFLOP/s = train_flops_per_token (train/model_info.h: 6 x matmul parameters +
// attention) x tokens/s. The sgemm baseline multiplies at the model's largest linear
// (x (B*L, in) times W^T (in, out), W the largest 2-D weight: usually the output head) and
// at 1024^3 for reference.
//
// run.device and run.precision are honoured as the Trainer honours them (train/trainer.h:
// training_device, training_compute_dtype, training_loss; fp32 master weights and AdamW
// moments). On CUDA the batches are copied to the GPU before timing, the clock is read
// after the step's own sync (loss.item()) and a device synchronize, the memory figures come
// from the CUDA caching allocator, and the baseline is kernels::matmul (cuBLASLt) in the
// compute dtype at the largest linear and at 8192^3, timed with device syncs. MFU =
// achieved FLOP/s / the card's peak dense rate in the compute dtype (train/device_info.h
// for bf16; run.peak_tflops, when set, for either dtype). On CUDA the op-family profile comes
// from a second pass over the steps with the device synchronized around every op (see
// BenchTrainResult::profile_seconds), since host clocks alone would time kernel launches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/profiler.h"
#include "train/train_config.h"

namespace hymba::train {

struct BenchTrainOptions {
  int64_t steps = 5;
  int64_t warmup = 1;
  int64_t batch = 0;    // rows per step; 0: the recipe's run.micro_batch
  int64_t seq_len = 0;  // 0: the recipe's data.seq_len
  bool recompute = false;
  bool profile = true;  // op-family split (a clock read per kernel call; on CUDA a second, synchronized pass)
  bool sgemm = true;    // the GEMM baseline (sgemm on the CPU, cuBLASLt on CUDA)
};

// One GEMM rate of the baseline: OpenBLAS sgemm on the CPU, kernels::matmul (cuBLASLt) in
// the compute dtype on CUDA.
struct SgemmFigure {
  int64_t m = 0, n = 0, k = 0;
  std::string what;
  std::string dtype = "f32";
  double gflops = 0.0;
};

struct BenchTrainResult {
  std::string config, model_name;
  int64_t params = 0, batch = 0, seq_len = 0, meta_tokens = 0;
  int threads = 0;
  bool recompute = false;
  std::string data;  // "random tokens" or the dataset path
  int64_t steps = 0, warmup = 0;
  double seconds_per_step = 0.0, tokens_per_second = 0.0;
  double flops_per_token = 0.0, gflops = 0.0;
  double final_loss = 0.0;
  double peak_mb = 0.0;  // allocator high-water mark during the timed steps, above what was live before
  // Where the step ran: "cpu" or "cuda:N" (device_name: the GPU's name), and run.precision
  // ("fp32" or "bf16": the compute dtype; parameters and moments stay fp32).
  std::string device = "cpu", device_name, precision = "fp32";
  // CUDA: the allocator's whole high-water mark (parameters, gradients, moments and
  // activations) and the bytes the caching allocator holds from the driver at the end.
  double peak_total_mb = 0.0, reserved_mb = 0.0;
  // CUDA: the peak dense FLOP/s of the compute dtype used for MFU (0: unknown) and where it
  // came from ("device table" or "run.peak_tflops").
  double peak_flops = 0.0;
  std::string peak_source;
  // How the op-family profile was taken, when it differs from the timed steps ("" otherwise).
  std::string profile_note;
  // Op-family profile (empty when not profiling); untracked is the step time outside every
  // scope (graph building, views and copies made outside kernels). On the CPU it covers the
  // timed steps. On CUDA the timed steps run unprofiled and the profile comes from a second
  // pass over the same steps that synchronizes the device around every scope (so that the
  // split is device time); profile_seconds is that pass's wall time, the profile's 100 %.
  std::vector<profiler::FamilyEntry> families;
  std::vector<profiler::Entry> kernels;
  double profiled_seconds = 0.0, untracked_seconds = 0.0, profile_seconds = 0.0;
  std::vector<SgemmFigure> sgemm;  // [0]: the largest linear (the ratio's baseline)
  double sgemm_ratio() const { return sgemm.empty() || sgemm[0].gflops <= 0 ? 0.0 : gflops / sgemm[0].gflops; }
  bool on_cuda() const { return device != "cpu"; }
  // Model FLOP utilization: achieved FLOP/s over peak_flops; 0 when the peak is unknown.
  double mfu() const { return peak_flops > 0 ? gflops * 1e9 / peak_flops : 0.0; }
};

// `cfg` is a recipe; its data is used when data.train exists, else random tokens. It runs
// on run.device in run.precision (UserError for cuda without a visible GPU).
BenchTrainResult bench_train(const TrainConfig& cfg, const BenchTrainOptions& opts);
// A training recipe, or a bare model config (then the data is random tokens, batch 8 and
// sequence 256 unless given). `overrides`: --set keys of the recipe (model.* for a model).
TrainConfig load_bench_config(const std::string& path, const std::vector<std::string>& overrides);

std::string format_bench_train(const BenchTrainResult& r);
std::string bench_train_json(const BenchTrainResult& r);

}  // namespace hymba::train
