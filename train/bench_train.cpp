#include "train/bench_train.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/ops.h"
#include "core/allocator.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "kernels/matmul.h"
#include "layers/model.h"
#include "layers/precision.h"
#include "train/device_info.h"
#include "train/model_info.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#ifdef HYMBA_WITH_CUDA
#include "core/cuda_ops.h"
#endif

namespace hymba::train {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct StepBatch {
  Tensor ids, targets;
};

// B rows of L + 1 uniform tokens: inputs are the first L, targets the last L.
std::vector<StepBatch> random_batches(int64_t n, int64_t B, int64_t L, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  std::vector<StepBatch> out;
  for (int64_t s = 0; s < n; ++s) {
    std::vector<float> u = rand({B, L + 1}, {}, &g, 0.0, double(vocab)).to_vector<float>();
    std::vector<int32_t> in(size_t(B * L)), tg(size_t(B * L));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) {
        auto tok = [&](int64_t i) { return std::min<int32_t>(int32_t(u[size_t(b * (L + 1) + i)]), int32_t(vocab - 1)); };
        in[size_t(b * L + t)] = tok(t);
        tg[size_t(b * L + t)] = tok(t + 1);
      }
    out.push_back({from_vector(in, {B, L}, DType::I32), from_vector(tg, {B, L}, DType::I32)});
  }
  return out;
}

std::vector<StepBatch> data_batches(const TrainConfig& cfg, int64_t n, int64_t B, int64_t L) {
  auto ds = data::TokenDataset::open(cfg.data.train, cfg.data.train_split);
  if (ds->vocab_size() > uint64_t(cfg.model.vocab_size))
    HYMBA_USER_ERROR(cfg.data.train, ": data vocabulary of ", ds->vocab_size(), " tokens does not fit the model's vocab_size ",
                     cfg.model.vocab_size);
  data::LoaderConfig lc;
  lc.mode = data::parse_loader_mode(cfg.data.mode);
  lc.seq_len = L;
  lc.global_batch = B;
  lc.seed = cfg.run.seed;
  data::DataLoader loader(ds, lc);
  std::vector<StepBatch> out;
  for (int64_t s = 0; s < n; ++s) {
    data::Batch b = loader.next();
    out.push_back({from_vector(b.inputs, {B, L}, DType::I32), from_vector(b.targets, {B, L}, DType::I32)});
  }
  return out;
}

// Waits for the work queued on a GPU (the current device's); nothing to wait for on the CPU,
// whose kernels return when done.
void sync(Device d) {
  if (!d.is_cuda()) return;
#ifdef HYMBA_WITH_CUDA
  cuda::synchronize();
#endif
}

// GFLOP/s of c = a * b^T (or a * b) at M x N x K in `dtype` on `device`, repeated for at least
// `min_seconds`. On the CPU every call returns when done; on CUDA calls are queued in
// growing rounds and the clock is read after a device sync, so it counts kernel time, not
// launches, without a sync per call.
double gemm_gflops(Device device, DType dtype, int64_t M, int64_t N, int64_t K, bool trans_b,
                   double min_seconds = 0.3) {
  Generator g(1);
  const TensorOptions to(dtype, device);
  Tensor a = randn({M, K}, to, &g), b = trans_b ? randn({N, K}, to, &g) : randn({K, N}, to, &g);
  Tensor c = empty({M, N}, to);
  kernels::matmul_out(c, a, b, false, trans_b);  // warm-up: first-touch pages, BLAS threads, cuBLASLt plan
  sync(device);
  int64_t reps = 0, round = 1;
  auto t0 = Clock::now();
  double t = 0.0;
  do {
    for (int64_t i = 0; i < round; ++i) kernels::matmul_out(c, a, b, false, trans_b);
    sync(device);
    reps += round;
    if (device.is_cuda()) round = std::min<int64_t>(round * 2, 256);
    t = seconds_since(t0);
  } while (t < min_seconds);
  return 2.0 * double(M) * double(N) * double(K) * double(reps) / t / 1e9;
}

}  // namespace

TrainConfig load_bench_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!fs::exists(path)) HYMBA_USER_ERROR(path, ": file does not exist");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    HYMBA_USER_ERROR(path, ": invalid YAML: ", e.what());
  }
  if (root.IsMap() && root["model"]) return load_train_config(path, overrides);
  // A bare model config: a recipe around it with no data (random tokens), one micro-batch
  // of 8 x 256 per step, the default optimizer.
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "model" << YAML::Value << fs::absolute(path).string();
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap << YAML::Key << "train" << YAML::Value
    << "(none: random tokens)" << YAML::Key << "seq_len" << YAML::Value << 256 << YAML::EndMap;
  e << YAML::Key << "run" << YAML::Value << YAML::BeginMap << YAML::Key << "global_batch" << YAML::Value << 8
    << YAML::Key << "micro_batch" << YAML::Value << 8 << YAML::EndMap << YAML::EndMap;
  TrainConfig cfg = parse_train_config_string(e.c_str(), path, overrides);
  cfg.data.train.clear();
  cfg.data.val.clear();
  return cfg;
}

BenchTrainResult bench_train(const TrainConfig& cfg, const BenchTrainOptions& opts) {
  if (opts.steps <= 0) HYMBA_USER_ERROR("--steps must be positive, got ", opts.steps);
  if (opts.warmup < 0) HYMBA_USER_ERROR("--warmup must be >= 0, got ", opts.warmup);
  BenchTrainResult r;
  r.config = cfg.source;
  r.model_name = cfg.model_source.empty() ? cfg.source : cfg.model_source;
  r.batch = opts.batch > 0 ? opts.batch : cfg.run.micro_batch;
  r.seq_len = opts.seq_len > 0 ? opts.seq_len : cfg.data.seq_len;
  r.meta_tokens = cfg.model.num_meta_tokens;
  r.threads = num_threads();
  r.recompute = opts.recompute || cfg.run.recompute;
  r.steps = opts.steps;
  r.warmup = opts.warmup;
  r.params = count_parameters(cfg.model);
  const int64_t B = r.batch, L = r.seq_len, n = opts.warmup + opts.steps;

  // The Trainer's device and compute dtype, refused before any work when unavailable.
  const Device device = training_device(cfg);
  const std::optional<DType> compute = training_compute_dtype(cfg, device);
  r.device = device.str();
  r.precision = compute ? "bf16" : "fp32";
  if (device.is_cuda()) {
    r.device_name = cuda_device_name(device.index);
    if (cfg.run.peak_tflops > 0) {
      r.peak_flops = cfg.run.peak_tflops * 1e12;
      r.peak_source = "run.peak_tflops";
    } else if (compute == DType::BF16) {
      // The table holds bf16 tensor-core peaks only: an fp32 run needs run.peak_tflops for MFU.
      r.peak_flops = peak_bf16_flops_for_name(r.device_name);
      if (r.peak_flops > 0) r.peak_source = "device table";
    }
  }

  const bool real = !cfg.data.train.empty() && fs::exists(cfg.data.train);
  r.data = real ? cfg.data.train : "random tokens";
  std::vector<StepBatch> batches =
      real ? data_batches(cfg, n, B, L) : random_batches(n, B, L, cfg.model.vocab_size, cfg.run.seed);
  // Copied before timing: the Trainer's per-step copy of B x L token ids is negligible.
  if (device.is_cuda())
    for (StepBatch& b : batches) b = {b.ids.to(device), b.targets.to(device)};

  manual_seed(cfg.run.seed);
  Model model(cfg.model, cfg.run.seed);
  model.train();
  model.set_recompute(r.recompute);
  // Before the optimizer, as in the Trainer: the AdamW moments are made on the parameters' device.
  if (device.is_cuda()) model.to(device);
  AdamW optim(default_param_groups(model.named_parameters(), cfg.optim.weight_decay, cfg.optim.no_decay),
              AdamWOptions{cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps});
  auto step = [&](const StepBatch& b) {
    // For the whole step, as in Trainer::train_step: recomputation reruns the forward in backward.
    PrecisionGuard precision(compute);
    Tensor loss = training_loss(model, b.ids, b.targets, 1.0, compute);
    const double lv = loss.item();
    loss.backward();
    if (cfg.optim.grad_clip > 0)
      optim.clip_grad_norm_(cfg.optim.grad_clip);
    else
      optim.grad_norm();
    optim.step(cfg.optim.lr);
    optim.zero_grad();
    return lv;
  };

  for (int64_t s = 0; s < opts.warmup; ++s) step(batches[size_t(s)]);

  // The timed steps. On CUDA they run unprofiled: host clocks around asynchronous kernels
  // would time their launches, and synchronizing scopes would slow the steps down.
  const bool profile_timed = opts.profile && !device.is_cuda();
  Allocator* alloc = get_allocator(device);
  sync(device);  // the warm-up's optimizer step is still queued on a GPU
  alloc->reset_peak();
  const size_t base = alloc->stats().allocated;
  profiler::reset();
  profiler::set_enabled(profile_timed);
  auto t0 = Clock::now();
  for (int64_t s = opts.warmup; s < n; ++s) r.final_loss = step(batches[size_t(s)]);
  sync(device);  // the last optimizer step belongs to the timed work
  const double total = seconds_since(t0);
  profiler::set_enabled(false);
  const AllocatorStats st = alloc->stats();
  r.peak_mb = double(st.peak_allocated - std::min(base, st.peak_allocated)) / 1e6;
  if (device.is_cuda()) {
    r.peak_total_mb = double(st.peak_allocated) / 1e6;
    r.reserved_mb = double(st.reserved) / 1e6;
  }

  r.seconds_per_step = total / double(opts.steps);
  r.tokens_per_second = double(B * L) / r.seconds_per_step;
  r.flops_per_token = model_info(cfg.model, L).train_flops_per_token;
  r.gflops = r.flops_per_token * r.tokens_per_second / 1e9;
  r.profile_seconds = total;

#ifdef HYMBA_WITH_CUDA
  if (opts.profile && device.is_cuda()) {
    // The same steps again (the model moves on; the split per op does not depend on that),
    // each scope waiting for the device at both ends.
    profiler::set_synchronizer(+[] { cuda::synchronize(); });
    profiler::set_enabled(true);
    auto t1 = Clock::now();
    for (int64_t s = opts.warmup; s < n; ++s) step(batches[size_t(s)]);
    sync(device);
    r.profile_seconds = seconds_since(t1);
    profiler::set_enabled(false);
    profiler::set_synchronizer(nullptr);
    char note[256];
    std::snprintf(note, sizeof note,
                  "a second pass over the %lld steps, the device synchronized around every op: %.2f ms/step, "
                  "against %.2f unprofiled; the split below is of that pass",
                  static_cast<long long>(opts.steps), r.profile_seconds * 1e3 / double(opts.steps),
                  r.seconds_per_step * 1e3);
    r.profile_note = note;
  }
#endif

  if (opts.profile) {
    r.kernels = profiler::snapshot();
    r.families = profiler::by_family(r.kernels);
    for (const auto& f : r.families) r.profiled_seconds += f.self_seconds;
    r.untracked_seconds = std::max(0.0, r.profile_seconds - r.profiled_seconds);
  }

  if (opts.sgemm) {
    // The GEMM the step's matmuls run: f32 on the CPU, the compute dtype on CUDA.
    const DType dt = compute.value_or(DType::F32);
    std::string dt_label = dtype_name(dt);
#ifdef HYMBA_WITH_CUDA
    // Settled by the step's own f32 products, which read HYMBA_ALLOW_TF32 on first use.
    if (device.is_cuda() && dt == DType::F32 && kernels::cuda::allow_tf32()) dt_label = "f32 (tf32 tensor cores)";
#endif
    // The largest weight used in a matrix product, at the step's token count.
    std::string name;
    Shape shape;
    for (const auto& [nm, sh] : parameter_shapes(cfg.model)) {
      if (sh.size() != 2 || nm.find("conv1d") != std::string::npos || nm == "memory_tokens") continue;
      if (shape.empty() || sh[0] * sh[1] > shape[0] * shape[1]) name = nm, shape = sh;
    }
    if (!shape.empty()) {
      const int64_t M = B * L, N = shape[0], K = shape[1];
      r.sgemm.push_back({M, N, K, "x * W^T, W = " + name, dt_label, gemm_gflops(device, dt, M, N, K, true)});
    }
    // A square product big enough to approach the card's peak; 1024^3 already does on a CPU.
    const int64_t S = device.is_cuda() ? 8192 : 1024;
    r.sgemm.push_back({S, S, S, std::to_string(S) + "^3 square", dt_label, gemm_gflops(device, dt, S, S, S, false)});
  }
  return r;
}

std::string format_bench_train(const BenchTrainResult& r) {
  std::ostringstream o;
  char buf[512];
  auto line = [&](const char* fmt, auto... args) {
    std::snprintf(buf, sizeof buf, fmt, args...);
    o << buf << "\n";
  };
  line("bench train: %s", r.config.c_str());
  line("  model       %s, %lld parameters, %lld meta tokens", r.model_name.c_str(), (long long)r.params,
       (long long)r.meta_tokens);
  line("  step        batch %lld x seq %lld = %lld tokens, forward + backward + clip + AdamW%s", (long long)r.batch,
       (long long)r.seq_len, (long long)(r.batch * r.seq_len), r.recompute ? ", activation recomputation" : "");
  line("  data        %s", r.data.c_str());
  // The op-family split, on either device (on CUDA from the synchronized second pass).
  auto profile_table = [&] {
    if (!r.families.empty()) {
      const double total = r.profile_seconds;
      o << "  time by op family (self time per step: a scope less the scopes inside it; autograd = node work outside kernels)\n";
      line("    %-16s %10s %7s %8s", "family", "ms/step", "%", "calls");
      for (const auto& f : r.families)
        line("    %-16s %10.2f %6.1f%% %8.0f", f.family.c_str(), f.self_seconds * 1e3 / double(r.steps),
             100.0 * f.self_seconds / total, double(f.calls) / double(r.steps));
      line("    %-16s %10.2f %6.1f%%", "untracked", r.untracked_seconds * 1e3 / double(r.steps),
           100.0 * r.untracked_seconds / total);
      o << "  top kernels\n";
      for (size_t i = 0; i < r.kernels.size() && i < 12; ++i)
        line("    %-28s %10.2f ms/step %6.1f%%  (%s)", r.kernels[i].name.c_str(),
             r.kernels[i].self_seconds * 1e3 / double(r.steps), 100.0 * r.kernels[i].self_seconds / total,
             profiler::family_of(r.kernels[i].name));
    }
  };
  if (r.on_cuda()) {
    line("  device      %s (%s), compute %s, fp32 master weights and AdamW moments", r.device.c_str(),
         r.device_name.c_str(), r.precision.c_str());
    line("  steps       %lld warm-up + %lld timed, timed to a device sync; last loss %.4f", (long long)r.warmup,
         (long long)r.steps, r.final_loss);
    line("  speed       %.2f ms/step, %.0f tokens/s", r.seconds_per_step * 1e3, r.tokens_per_second);
    if (r.peak_flops > 0)
      line("  compute     %.3g MFLOP/token (train_flops_per_token), %.2f TFLOP/s achieved, MFU %.2f%% of %.0f TFLOP/s "
           "(%s peak, %s)",
           r.flops_per_token / 1e6, r.gflops / 1e3, 100.0 * r.mfu(), r.peak_flops / 1e12, r.precision.c_str(),
           r.peak_source.c_str());
    else
      line("  compute     %.3g MFLOP/token (train_flops_per_token), %.2f TFLOP/s achieved, MFU unknown (no %s peak "
           "for this card: set run.peak_tflops)",
           r.flops_per_token / 1e6, r.gflops / 1e3, r.precision.c_str());
    line("  memory      %.1f MB peak CUDA allocation above the model (%.1f MB in all, with parameters, gradients "
         "and moments); %.1f MB reserved by the caching allocator",
         r.peak_mb, r.peak_total_mb, r.reserved_mb);
    for (size_t i = 0; i < r.sgemm.size(); ++i) {
      const auto& s = r.sgemm[i];
      char of_peak[64] = "";
      if (r.peak_flops > 0)
        std::snprintf(of_peak, sizeof of_peak, " (%.1f%% of peak)", 100.0 * s.gflops * 1e9 / r.peak_flops);
      line("  gemm        %lld x %lld x %lld %s (%s, cuBLASLt): %.2f TFLOP/s%s -> step at %.1f%%", (long long)s.m,
           (long long)s.n, (long long)s.k, s.dtype.c_str(), s.what.c_str(), s.gflops / 1e3, of_peak,
           s.gflops > 0 ? 100.0 * r.gflops / s.gflops : 0.0);
    }
    if (!r.profile_note.empty()) line("  profile     %s", r.profile_note.c_str());
    profile_table();
    return o.str();
  }
  line("  threads     %d; %lld warm-up + %lld timed steps; last loss %.4f", r.threads, (long long)r.warmup,
       (long long)r.steps, r.final_loss);
  line("  speed       %.1f ms/step, %.0f tokens/s", r.seconds_per_step * 1e3, r.tokens_per_second);
  line("  compute     %.3g MFLOP/token (train_flops_per_token), %.2f GFLOP/s achieved", r.flops_per_token / 1e6,
       r.gflops);
  line("  memory      %.1f MB peak CPU allocation above the model during the timed steps", r.peak_mb);
  for (size_t i = 0; i < r.sgemm.size(); ++i) {
    const auto& s = r.sgemm[i];
    line("  sgemm       %lld x %lld x %lld (%s): %.1f GFLOP/s -> step at %.1f%%%s", (long long)s.m, (long long)s.n,
         (long long)s.k, s.what.c_str(), s.gflops, s.gflops > 0 ? 100.0 * r.gflops / s.gflops : 0.0,
         i == 0 ? " (bar: >= 40%)" : "");
  }
  profile_table();
  return o.str();
}

std::string bench_train_json(const BenchTrainResult& r) {
  nlohmann::json j;
  j["config"] = r.config;
  j["model"] = r.model_name;
  j["params"] = r.params;
  j["batch"] = r.batch;
  j["seq_len"] = r.seq_len;
  j["meta_tokens"] = r.meta_tokens;
  j["threads"] = r.threads;
  j["recompute"] = r.recompute;
  j["data"] = r.data;
  j["warmup"] = r.warmup;
  j["steps"] = r.steps;
  j["seconds_per_step"] = r.seconds_per_step;
  j["tokens_per_second"] = r.tokens_per_second;
  j["flops_per_token"] = r.flops_per_token;
  j["gflops"] = r.gflops;
  j["final_loss"] = r.final_loss;
  j["peak_mb"] = r.peak_mb;
  j["device"] = r.device;
  j["precision"] = r.precision;
  if (r.on_cuda()) {
    j["device_name"] = r.device_name;
    j["peak_total_mb"] = r.peak_total_mb;
    j["reserved_mb"] = r.reserved_mb;
    j["tflops"] = r.gflops / 1e3;
    // null: the peak of the compute dtype is unknown for this card (no MFU).
    j["peak_tflops"] = r.peak_flops > 0 ? nlohmann::json(r.peak_flops / 1e12) : nlohmann::json(nullptr);
    j["peak_source"] = r.peak_source;
    j["mfu"] = r.peak_flops > 0 ? nlohmann::json(r.mfu()) : nlohmann::json(nullptr);
    if (!r.profile_note.empty()) j["profile_note"] = r.profile_note;
  }
  // The baseline: "sgemm" (OpenBLAS) on the CPU, "gemm" (cuBLASLt, in the compute dtype) on CUDA.
  const std::string base = r.on_cuda() ? "gemm" : "sgemm";
  j[base] = nlohmann::json::array();
  for (const auto& s : r.sgemm)
    j[base].push_back(
        {{"m", s.m}, {"n", s.n}, {"k", s.k}, {"what", s.what}, {"dtype", s.dtype}, {"gflops", s.gflops}});
  j[base + "_ratio"] = r.sgemm_ratio();
  j["families"] = nlohmann::json::array();
  for (const auto& f : r.families)
    j["families"].push_back({{"family", f.family}, {"seconds", f.self_seconds}, {"calls", f.calls}});
  j["kernels"] = nlohmann::json::array();
  for (const auto& k : r.kernels)
    j["kernels"].push_back({{"name", k.name}, {"family", profiler::family_of(k.name)}, {"seconds", k.self_seconds},
                            {"calls", k.calls}});
  j["untracked_seconds"] = r.untracked_seconds;
  j["profile_seconds"] = r.profile_seconds;
  return j.dump(2);
}

}  // namespace hymba::train
