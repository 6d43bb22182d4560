#include "train/trainer.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "autograd/ops.h"
#include "core/rng.h"
#include "layers/precision.h"
#include "train/checkpoint.h"
#include "train/device_info.h"
#include "train/distributed.h"
#include "train/model_info.h"
#ifdef HYMBA_WITH_CUDA
#include "core/cuda_check.h"
#include "core/cuda_ops.h"
#endif

namespace hymba::train {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

// The config parser already refuses cuda in a CPU-only build; a recipe built in code may not.
Device training_device(const TrainConfig& cfg) {
  if (cfg.run.device != "cuda") return Device::cpu();
#ifdef HYMBA_WITH_CUDA
  if (!cuda_available())
    HYMBA_USER_ERROR(cfg.source, ": run.device is cuda, but no GPU is visible to this process "
                                 "(check CUDA_VISIBLE_DEVICES and the driver), or use run.device: cpu");
  const int index = cuda::choose_device_from_env();
  cuda::set_device(index);
  return Device::cuda(index);
#else
  HYMBA_USER_ERROR(cfg.source, ": run.device is cuda, but this build has no CUDA (configure with -DHYMBA_CUDA=ON)");
#endif
}

std::optional<DType> training_compute_dtype(const TrainConfig& cfg, Device device) {
  if (cfg.run.precision != "bf16") return std::nullopt;
  if (!device.is_cuda()) HYMBA_USER_ERROR(cfg.source, ": run.precision bf16 needs run.device: cuda");
  return DType::BF16;
}

Tensor training_loss(const Model& model, const Tensor& ids, const Tensor& targets, double weight,
                     std::optional<DType> dtype) {
  return dtype ? model_loss(model, ids, targets, weight) : model.loss(ids, targets, weight);
}

void Trainer::install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // One-shot: a second Ctrl-C gets the default action and kills a run stuck in a long step.
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}
void Trainer::request_stop() { g_stop.store(true); }
bool Trainer::stop_requested() { return g_stop.load(); }
void Trainer::clear_stop() { g_stop.store(false); }

Trainer::Trainer(TrainConfig cfg, TrainerOptions opts, TrainerHooks hooks)
    : cfg_(std::move(cfg)), opts_(std::move(opts)), hooks_(std::move(hooks)) {
  run_dir_ = opts_.run_dir.empty() ? cfg_.run.out_dir : opts_.run_dir;
  cfg_.run.out_dir = run_dir_;
  config_yaml_ = dump_train_config(cfg_);
  if (opts_.comm) {
    opts_.rank = opts_.comm->rank();
    opts_.world = opts_.comm->world();
  }
  const bool ddp = opts_.comm && opts_.world > 1;

  device_ = training_device(cfg_);
  compute_dtype_ = training_compute_dtype(cfg_, device_);
  manual_seed(cfg_.run.seed);
  model_ = std::make_unique<Model>(cfg_.model, cfg_.run.seed);
  model_->train();
  model_->set_recompute(cfg_.run.recompute);
  // Before the optimizer: its moments are allocated on the parameters' device.
  if (device_.is_cuda()) model_->to(device_);
  flops_per_token_ = model_info(cfg_.model, cfg_.data.seq_len).train_flops_per_token;
  if (device_.is_cuda()) {
    device_name_ = cuda_device_name(device_.index);
    peak_flops_ = peak_flops(device_name_, cfg_.run.peak_tflops);
  }
  std::vector<ParamGroup> groups =
      default_param_groups(model_->named_parameters(), cfg_.optim.weight_decay, cfg_.optim.no_decay);
  const AdamWOptions adam{cfg_.optim.beta1, cfg_.optim.beta2, cfg_.optim.eps};
  if (ddp) {
    Communicator& comm = *opts_.comm;
    std::vector<Tensor> trainable;
    {
      NoGradGuard ng;
      // Every rank seeds the same way, but a rank-dependent initialization must never start
      // a run with diverged replicas: rank 0's parameters are the truth.
      for (const auto& [name, p] : model_->named_parameters()) {
        comm.broadcast(p.detach(), 0);
        if (p.requires_grad()) trainable.push_back(p);
      }
    }
    const bool zero = cfg_.optim.zero == 1;
    reducer_ = std::make_unique<GradReducer>(opts_.comm, trainable, cfg_.run.ddp_bucket_mb,
                                             zero ? ReduceMode::ReduceScatter : ReduceMode::AllReduce);
    if (zero) zero_ = std::make_unique<ShardedAdamW>(std::move(groups), adam, *reducer_);
    if (!hooks_.reduce_count)
      hooks_.reduce_count = [c = opts_.comm](int64_t n) { return c->all_reduce_sum(n); };
    if (!hooks_.reduce_scalar)
      hooks_.reduce_scalar = [c = opts_.comm](double x) { return c->all_reduce_sum(x); };
  }
  // One process: ZeRO-1 has nothing to shard and is plain AdamW.
  if (!zero_) optim_ = std::make_unique<AdamW>(std::move(groups), adam);
  schedule_ = make_lr_schedule(cfg_.schedule_params());

  train_data_ = data::TokenDataset::open(cfg_.data.train, cfg_.data.train_split);
  if (train_data_->vocab_size() > uint64_t(cfg_.model.vocab_size))
    HYMBA_USER_ERROR(cfg_.data.train, ": data vocabulary of ", train_data_->vocab_size(),
                     " tokens does not fit the model's vocab_size ", cfg_.model.vocab_size);
  data::LoaderConfig lc;
  lc.mode = data::parse_loader_mode(cfg_.data.mode);
  lc.seq_len = cfg_.data.seq_len;
  lc.global_batch = cfg_.run.global_batch;
  lc.rank = opts_.rank;
  lc.world = opts_.world;
  lc.seed = cfg_.run.seed;
  loader_ = std::make_unique<data::DataLoader>(train_data_, lc);
  HYMBA_CHECK(loader_->local_batch() % cfg_.run.micro_batch == 0, "run.micro_batch ", cfg_.run.micro_batch,
              " does not divide the per-rank batch ", loader_->local_batch());

  if (!cfg_.data.val.empty()) {
    // A val split defaulted from a directory is optional; one named explicitly is not.
    bool is_dir = fs::is_directory(cfg_.data.val);
    if (!is_dir || !data::TokenDataset::shard_paths(cfg_.data.val, cfg_.data.val_split).empty())
      val_ = data::TokenDataset::open(cfg_.data.val, cfg_.data.val_split);
    else if (opts_.log && is_root())
      spdlog::warn("no '{}' split in {}: training without validation", cfg_.data.val_split, cfg_.data.val);
  }
}

Trainer::~Trainer() = default;

AdamW& Trainer::optimizer() {
  HYMBA_CHECK(optim_ != nullptr, "Trainer::optimizer: optim.zero: 1 shards the optimizer (sharded_optimizer())");
  return *optim_;
}

double Trainer::grad_norm_and_clip() {
  const double clip = cfg_.optim.grad_clip;
  if (zero_) return clip > 0 ? zero_->clip_grad_norm_(clip) : zero_->grad_norm();
  return clip > 0 ? optim_->clip_grad_norm_(clip) : optim_->grad_norm();
}

NamedTensors Trainer::optimizer_state() const { return zero_ ? zero_->state_dict() : optim_->state_dict(); }

bool Trainer::stop_agreed() {
  // A signal reaches the ranks at slightly different times; every rank must stop (and write
  // its share of the checkpoint) at the same step.
  const bool local = stop_requested();
  if (!reducer_) return local;
  return opts_.comm->all_reduce_sum(int64_t(local)) > 0;
}

std::string Trainer::resume(const std::string& spec) {
  if (spec.empty()) return "";
  std::string path = spec;
  if (spec == "auto") {
    path = latest_checkpoint(run_dir_);
    if (path.empty()) {
      if (opts_.log && is_root()) spdlog::info("--resume auto: no checkpoint in {}, starting fresh", run_dir_);
      return "";
    }
  }
  load(path);
  return path;
}

void Trainer::load(const std::string& path) {
  Checkpoint ck = load_checkpoint(path, /*with_optimizer=*/true);
  if (ck.model_config_yaml != dump_model_config(cfg_.model))
    HYMBA_USER_ERROR(path, ": the checkpoint's model (key 'model_config') differs from the configured model; "
                           "resume with the same model config");
  model_->load_state_dict(ck.model, /*strict=*/true);
  if (zero_)
    zero_->load_state_dict(ck.optimizer);
  else
    optim_->load_state_dict(ck.optimizer);
  auto need = [&](const nlohmann::json& j, const char* obj, const char* key) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(key)) HYMBA_USER_ERROR(path, ": checkpoint is missing key '", obj, ".", key, "'");
    return j[key];
  };
  try {
    data::LoaderState ls = ck.loader_state.get<data::LoaderState>();
    loader_->set_state(ls);
    default_generator().set_state(need(ck.rng_state, "rng_state", "seed").get<uint64_t>(),
                                  need(ck.rng_state, "rng_state", "offset").get<uint64_t>());
    bad_streak_ = need(ck.meta, "meta", "bad_streak").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    HYMBA_USER_ERROR(path, ": malformed checkpoint state (", e.what(), ")");
  }
  step_ = ck.step;
  tokens_seen_ = ck.tokens_seen;
  last_checkpoint_ = path;
  last_ckpt_step_ = step_;
  if (opts_.log && is_root()) spdlog::info("resumed from {} at step {} ({} tokens seen)", path, step_, tokens_seen_);
}

StepStats Trainer::train_step() {
  auto t0 = Clock::now();
  // For the whole step: recomputation (run.recompute) reruns the forward inside backward.
  PrecisionGuard precision(compute_dtype_);
  maybe_inject_test_failure(opts_.rank, step_);
  StepStats s;
  data::Batch batch = loader_->next();
  const int64_t L = batch.seq_len, rows = batch.batch, mb = cfg_.run.micro_batch;
  const int64_t n_micro = rows / mb;

  std::vector<int64_t> counts(size_t(n_micro), 0);
  int64_t local_count = 0;
  for (int64_t m = 0; m < n_micro; ++m) {
    for (int64_t i = m * mb * L; i < (m + 1) * mb * L; ++i)
      counts[size_t(m)] += batch.targets[size_t(i)] != data::kIgnoreIndex;
    local_count += counts[size_t(m)];
  }
  const int64_t total = hooks_.reduce_count ? hooks_.reduce_count(local_count) : local_count;

  double loss_sum = 0.0;  // sum over counted targets of their loss, this rank
  if (total > 0) {
    int64_t last_m = -1;  // the last micro-batch that runs a backward
    for (int64_t m = 0; m < n_micro; ++m)
      if (counts[size_t(m)] > 0) last_m = m;
    for (int64_t m = 0; m < n_micro; ++m) {
      const int64_t n = counts[size_t(m)];
      if (n == 0) continue;
      if (hooks_.before_backward) hooks_.before_backward(m == last_m);
      if (reducer_) reducer_->begin_backward(m == last_m);
      auto first = batch.inputs.begin() + m * mb * L;
      auto tfirst = batch.targets.begin() + m * mb * L;
      Tensor ids = from_vector(std::vector<int32_t>(first, first + mb * L), {mb, L}, DType::I32).to(device_);
      Tensor tgt = from_vector(std::vector<int32_t>(tfirst, tfirst + mb * L), {mb, L}, DType::I32).to(device_);
      // model_loss casts the LM head and takes an fp32 loss from the logits (bf16 on CUDA, read
      // as they are); without a compute dtype Model::loss is the same computation. The
      // micro-batch's weight n / total is applied inside the cross entropy, whose gradient is
      // then complete for backward's upstream 1 (no extra pass over the logits).
      const double weight = double(n) / double(total);
      Tensor loss = training_loss(*model_, ids, tgt, weight, compute_dtype_);
      loss_sum += loss.item() * double(total);  // = the micro-batch's mean loss times n
      loss.backward();
    }
  }
  if (hooks_.reduce_scalar) loss_sum = hooks_.reduce_scalar(loss_sum);
  const std::vector<Tensor> params = zero_ ? zero_->params() : optim_->params();
  if (reducer_) {
    reducer_->finish();
    s.comm_seconds = reducer_->wait_seconds();
  }
  if (hooks_.reduce_gradients) hooks_.reduce_gradients(params);

  s.loss = total > 0 ? loss_sum / double(total) : std::nan("");
  if (hooks_.after_backward) hooks_.after_backward(step_, s.loss, params);
  s.grad_norm = grad_norm_and_clip();
  s.lr = schedule_->lr(step_);
  s.tokens = total;

  if (!std::isfinite(s.loss) || !std::isfinite(s.grad_norm)) {
    s.skipped = true;
    ++bad_streak_;
  } else {
    bad_streak_ = 0;
    if (zero_)
      zero_->step(s.lr);
    else
      optim_->step(s.lr);
  }
  if (zero_)
    zero_->zero_grad();
  else
    optim_->zero_grad();
  ++step_;
  tokens_seen_ += cfg_.run.global_batch * L;
  if (s.skipped) {
    if (opts_.log)
      spdlog::warn("{}step {}: non-finite {} (loss {}, grad norm {}): update skipped ({} in a row, limit {})",
                   opts_.world > 1 ? fmt::format("[rank {}] ", opts_.rank) : std::string(), step_,
                   std::isfinite(s.loss) ? "gradient" : "loss", s.loss, s.grad_norm, bad_streak_,
                   cfg_.run.max_bad_steps);
    if (bad_streak_ >= cfg_.run.max_bad_steps)
      throw TrainingDiverged(::hymba::detail::str_cat(
          "training stopped at step ", step_, ": ", bad_streak_,
          " steps in a row had a non-finite loss or gradient (run.max_bad_steps = ", cfg_.run.max_bad_steps,
          "); lower optim.lr or check the data. Last good checkpoint: ",
          last_checkpoint_.empty() ? std::string("none") : last_checkpoint_));
  }
  s.step = step_;
  s.seconds = seconds_since(t0);
  return s;
}

std::string Trainer::save_checkpoint() {
  Checkpoint ck;
  ck.config_yaml = config_yaml_;
  ck.model_config_yaml = dump_model_config(cfg_.model);
  ck.model = model_->state_dict();
  ck.optimizer = optimizer_state();  // collective with ZeRO-1: every rank gets here
  ck.step = step_;
  ck.tokens_seen = tokens_seen_;
  ck.loader_state = loader_->state();
  ck.rng_state = {{"seed", default_generator().seed()}, {"offset", default_generator().offset()}};
  ck.meta = {{"bad_streak", bad_streak_}, {"world", opts_.world}};
  std::string path = (fs::path(run_dir_) / checkpoint_name(step_)).string();
  if (opts_.write_files && is_root()) {
    fs::create_directories(run_dir_);
    train::save_checkpoint(path, ck);
    prune_checkpoints(run_dir_, cfg_.run.keep_last);
  }
  last_checkpoint_ = path;
  last_ckpt_step_ = step_;
  return path;
}

EvalResult Trainer::evaluate() {
  if (!val_) HYMBA_USER_ERROR("no validation data (data.val)");
  EvalOptions eo;
  eo.seq_len = cfg_.data.seq_len;
  eo.batch = cfg_.run.micro_batch;
  eo.max_batches = cfg_.run.eval_batches;
  PrecisionGuard precision(compute_dtype_);
  return train::evaluate(*model_, val_, eo);
}

void Trainer::log_step(const StepStats& s) {
  const double alpha = 0.1;
  ema_step_seconds_ = ema_step_seconds_ == 0.0 ? s.seconds : (1 - alpha) * ema_step_seconds_ + alpha * s.seconds;
  if (!opts_.log || !is_root()) return;
  if (s.step % cfg_.run.log_every != 0 && s.step != cfg_.run.steps && !s.skipped) return;
  const double tps = s.seconds > 0 ? double(cfg_.run.global_batch * cfg_.data.seq_len) / s.seconds : 0.0;
  // Achieved FLOP/s and MFU per GPU (tps counts every rank's tokens).
  const std::string flops =
      device_.is_cuda() ? format_flops(flops_per_token_ * tps / double(opts_.world), peak_flops_) : std::string();
  spdlog::info("step {:>6}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s{} | ETA {}", s.step,
               cfg_.run.steps, s.loss, s.lr, s.grad_norm, tps, flops,
               format_duration(ema_step_seconds_ * double(cfg_.run.steps - s.step)));
}

TrainResult Trainer::run() {
  TrainResult res;
  const bool files = opts_.write_files && is_root();
  if (files) {
    fs::create_directories(run_dir_);
    std::ofstream(fs::path(run_dir_) / "config.yaml") << config_yaml_;
    const std::string mpath = (fs::path(run_dir_) / "metrics.jsonl").string();
    truncate_metrics_after(mpath, step_);
    metrics_ = MetricsWriter(mpath);
  }
  if (opts_.log && is_root()) {
    spdlog::info("resolved config:\n{}", config_yaml_);
    spdlog::info("model: {} parameters; {} steps of {} samples x {} tokens ({} micro-batches of {}); schedule {}",
                 model_->num_parameters(), cfg_.run.steps, cfg_.run.global_batch, cfg_.data.seq_len,
                 loader_->local_batch() / cfg_.run.micro_batch, cfg_.run.micro_batch, schedule_->describe());
    spdlog::info("run dir: {}", run_dir_);
    if (device_.is_cuda())
      spdlog::info("device: {} ({}), compute {}, fp32 master weights; {:.3g} train FLOP/token; peak {}", device_.str(),
                   device_name_, compute_dtype_ ? dtype_name(*compute_dtype_) : "f32", flops_per_token_,
                   peak_flops_ > 0 ? fmt::format("{:.0f} TFLOP/s bf16", peak_flops_ / 1e12)
                                   : std::string("unknown (set run.peak_tflops for MFU)"));
    if (reducer_) {
      int64_t max_bucket = 0;
      for (const Bucket& b : reducer_->buckets()) max_bucket = std::max(max_bucket, b.numel);
      spdlog::info("data parallel: {} ranks ({}), {} samples per rank, {} gradient buckets (largest {:.2f} MB){}",
                   opts_.world, opts_.comm->backend(), loader_->local_batch(), reducer_->buckets().size(),
                   double(max_bucket) * double(dtype_size(model_->parameters().front().dtype())) / (1024.0 * 1024.0),
                   zero_ ? ", ZeRO-1 sharded optimizer" : "");
    }
  }
  if (step_ >= cfg_.run.steps && opts_.log && is_root())
    spdlog::warn("already at step {} of run.steps = {}: nothing to train (raise run.steps to continue)", step_,
                 cfg_.run.steps);
  int64_t last_eval_step = -1;
  auto do_eval = [&] {
    EvalResult ev = evaluate();
    last_eval_step = step_;
    res.last_eval = ev;
    nlohmann::json j = ev.to_json();
    j["type"] = "eval";
    j["step"] = step_;
    if (files) metrics_.write(j);
    if (opts_.log && is_root()) {
      std::string acc = ev.mqar ? fmt::format(" | mqar acc {:.4f}", ev.accuracy.accuracy()) : std::string();
      spdlog::info("eval step {:>6} | val loss {:.4f} | val ppl {:.2f}{} | {:.0f} tok/s", step_, ev.loss,
                   ev.perplexity, acc, ev.tokens_per_s);
    }
  };
  const auto t_start = Clock::now();
  while (step_ < cfg_.run.steps) {
    StepStats s = train_step();
    res.last_loss = s.loss;
    log_step(s);
    if (files) {
      nlohmann::json j = {{"type", "train"},   {"step", s.step},           {"lr", s.lr},
                          {"tokens", s.tokens}, {"skipped", s.skipped},     {"seconds", s.seconds},
                          {"time", seconds_since(t_start)}};
      j["loss"] = std::isfinite(s.loss) ? nlohmann::json(s.loss) : nlohmann::json(nullptr);
      j["grad_norm"] = std::isfinite(s.grad_norm) ? nlohmann::json(s.grad_norm) : nlohmann::json(nullptr);
      j["tokens_per_s"] = s.seconds > 0 ? double(cfg_.run.global_batch * cfg_.data.seq_len) / s.seconds : 0.0;
      if (reducer_) j["comm_seconds"] = s.comm_seconds;
      if (device_.is_cuda() && s.seconds > 0) {
        // Per GPU: the global token rate divided over the ranks.
        const double achieved = flops_per_token_ * double(cfg_.run.global_batch * cfg_.data.seq_len) / s.seconds /
                                double(opts_.world);
        j["tflops"] = achieved / 1e12;
        if (peak_flops_ > 0) j["mfu"] = achieved / peak_flops_;
      }
      metrics_.write(j);
    }
    if (val_ && cfg_.run.eval_every > 0 && step_ % cfg_.run.eval_every == 0) do_eval();
    // Not during a streak of skipped steps: with keep_last, checkpoints of a diverging run
    // would push out the good ones the user needs to go back to.
    if (cfg_.run.ckpt_every > 0 && step_ % cfg_.run.ckpt_every == 0 && bad_streak_ == 0) save_checkpoint();
    if (stop_agreed()) {
      if (opts_.log && is_root()) spdlog::warn("stop requested: writing a checkpoint at step {} and exiting", step_);
      if (last_ckpt_step_ != step_) save_checkpoint();
      res.interrupted = true;
      break;
    }
  }
  if (!res.interrupted) {
    if (val_ && last_eval_step != step_) do_eval();
    if (last_ckpt_step_ != step_) save_checkpoint();
  }
  res.step = step_;
  res.last_checkpoint = last_checkpoint_;
  return res;
}

}  // namespace hymba::train
