// The training loop: gradient accumulation, clipping, AdamW with a schedule, non-finite step
// skipping, periodic eval, metrics, checkpoints and exact resume.
//
// One step (Trainer::train_step):
//   1. The loader yields this rank's rows of the global batch (run.global_batch samples of
//      data.seq_len tokens). They are cut into micro-batches of run.micro_batch rows.
//   2. N = the number of counted targets (not -100) in the whole global batch (summed over
//      ranks by hooks.reduce_count). Micro-batch i with n_i counted targets computes
//      loss_i = the mean cross entropy over its n_i targets (Model::loss) and back-propagates
//      loss_i * n_i / N. The accumulated gradient is therefore exactly the gradient of
//      sum_i loss_i * n_i / N = (sum of every counted token's loss) / N, the mean over the
//      counted tokens of the global batch, independent of how it is cut into micro-batches.
//      A micro-batch with no counted target is skipped (it contributes nothing).
//   3. hooks.reduce_gradients (data parallelism: all-reduce SUM of the per-rank gradients,
//      which already carry the global 1/N) then hooks.after_backward (tests) run.
//   4. The global grad norm is measured and clipped to optim.grad_clip (when > 0).
//   5. A non-finite loss or grad norm skips the update with a warning (the batch is consumed,
//      the step counter advances, the optimizer's bias-correction count does not);
//      run.max_bad_steps such steps in a row throw TrainingDiverged, naming the last
//      good checkpoint, without writing a new one (periodic checkpoints are also not
//      written while a streak of skipped steps is running).
//   6. Otherwise AdamW steps with lr = schedule(step), step = completed steps before this one.
//
// Resume: a checkpoint holds the parameters, the AdamW moments and count, the step, the
// tokens seen, the bad-step streak, the loader state and the default RNG state; training N
// steps, saving, and continuing in fresh objects gives bit-identical parameters and moments
// to training straight through (same hardware, thread count and rank count).
//
// Data parallelism (docs/distributed.md): TrainerOptions::comm with more than one rank makes
// the trainer a DDP worker. The constructor broadcasts the parameters from rank 0 and
// installs a GradReducer (train/ddp.h): gradients are summed over ranks in buckets that
// start reducing during the last micro-batch's backward. With optim.zero: 1 the optimizer is
// ShardedAdamW (train/zero.h) instead of AdamW. The counted-target count, the loss sum and
// a stop request are also summed over ranks, so every rank takes the same decisions. Only
// rank 0 logs progress and writes files; checkpoints have the unsharded format, and a run
// resumes on any rank count (the loader's state is global). Every rank evaluates the whole
// validation split.
//
// Device and precision (docs/training.md): run.device: cuda trains on the GPU chosen from the
// node-local rank (cuda::choose_device_from_env); the model is moved there before the
// optimizer is built, batches are copied there, and eval runs there. run.precision: bf16 makes
// bf16 the compute dtype (layers/precision.h) for every step and eval: the parameters and the
// AdamW moments stay fp32 masters. Checkpoints hold host copies and load back onto the device.
// On a GPU the progress line adds achieved TFLOP/s and MFU (train/device_info.h).
//
// Signals: install_signal_handlers() makes SIGINT and SIGTERM set a flag; run() finishes the
// current step, writes a checkpoint and returns with interrupted = true. A second signal
// kills the process (the handler is one-shot).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/model.h"
#include "train/communicator.h"
#include "train/eval.h"
#include "train/lr_schedule.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/train_config.h"
#include "train/zero.h"

namespace hymba::train {

// Too many non-finite steps in a row. A UserError: the recipe (lr, data) needs changing.
class TrainingDiverged : public UserError {
 public:
  using UserError::UserError;
};

struct TrainerHooks {
  // Distributed plug-in points (a single process leaves them empty).
  // Sums the per-rank counted-target counts of a global batch.
  std::function<int64_t(int64_t local_count)> reduce_count;
  // Sums the per-rank gradients of `params` in place (their .grad), after the last backward.
  std::function<void(const std::vector<Tensor>& params)> reduce_gradients;
  // Sums a per-rank double (the loss sum of the global batch) for logging.
  std::function<double(double local)> reduce_scalar;
  // Before each micro-batch's backward; last_micro is true for the last one of the step (the
  // one whose backward completes the accumulated gradient).
  std::function<void(bool last_micro)> before_backward;
  // Test hook, after gradient reduction and before the finite check: may alter the loss or
  // the gradients (e.g. inject a NaN). `step` is the number of completed steps before it.
  // With ZeRO-1 on several ranks the reduced gradients live in the optimizer's shards, and
  // the parameters have no .grad here.
  std::function<void(int64_t step, double& loss, const std::vector<Tensor>& params)> after_backward;
};

struct TrainerOptions {
  std::string run_dir;         // "" : cfg.run.out_dir
  int rank = 0, world = 1;     // only rank 0 logs progress and writes files
  // Data parallelism: when set, rank and world come from it, and with world > 1 the trainer
  // reduces gradients over it (the hooks above for counts, gradients and the loss are then
  // provided by the trainer). Null: one process.
  std::shared_ptr<Communicator> comm;
  bool write_files = true;     // metrics, config.yaml, checkpoints
  bool log = true;             // progress lines through spdlog
};

struct StepStats {
  int64_t step = 0;      // completed steps after this one
  double loss = 0.0;     // mean over counted targets of the global batch (NaN if non-finite)
  double lr = 0.0;
  double grad_norm = 0.0;  // before clipping
  int64_t tokens = 0;      // counted targets
  bool skipped = false;
  double seconds = 0.0;
  double comm_seconds = 0.0;  // data parallelism: time blocked waiting for gradient reduction
};

struct TrainResult {
  int64_t step = 0;
  bool interrupted = false;
  std::string last_checkpoint;  // "" when none was written
  std::optional<EvalResult> last_eval;
  double last_loss = 0.0;
};

// How a training step runs on run.device in run.precision, shared by the Trainer and
// `hymba bench train` (train/bench_train.h) so that both measure the same step.
//
// The device of run.device, made current for this thread (kernels launch on the current
// device's default stream): the GPU of the node-local rank (cuda::choose_device_from_env).
// UserError when run.device is cuda and no GPU is visible or the build has no CUDA.
Device training_device(const TrainConfig& cfg);
// The compute dtype of run.precision (layers/precision.h): bf16, or nullopt for fp32 (each
// tensor's own dtype). UserError for bf16 off CUDA.
std::optional<DType> training_compute_dtype(const TrainConfig& cfg, Device device);
// One micro-batch's loss, `weight` applied inside the cross entropy, under the compute dtype
// `dtype` (which the caller's PrecisionGuard sets): model_loss with one (the LM head cast, an
// fp32 loss from the logits), Model::loss without (the same computation in fp32).
Tensor training_loss(const Model& model, const Tensor& ids, const Tensor& targets, double weight,
                     std::optional<DType> dtype);

class Trainer {
 public:
  Trainer(TrainConfig cfg, TrainerOptions opts = {}, TrainerHooks hooks = {});
  ~Trainer();

  // "auto": the newest checkpoint of the run dir, or a fresh start when there is none;
  // otherwise a checkpoint path. Returns the path loaded ("" for a fresh start).
  std::string resume(const std::string& spec);
  void load(const std::string& checkpoint_path);

  StepStats train_step();
  // Trains until run.steps (or a stop request), with eval, logging and checkpoints.
  TrainResult run();
  // Writes RUN_DIR/ckpt_<step>.h5 and prunes to run.keep_last. Returns its path.
  std::string save_checkpoint();
  // Eval on the val split (throws UserError when there is none).
  EvalResult evaluate();
  bool has_val() const { return val_ != nullptr; }

  Model& model() { return *model_; }
  Device device() const { return device_; }
  // The compute dtype of steps and eval (nullopt: the parameters' own, fp32).
  std::optional<DType> compute_dtype() const { return compute_dtype_; }
  // The unsharded optimizer (throws with optim.zero: 1 on several ranks).
  AdamW& optimizer();
  ShardedAdamW* sharded_optimizer() { return zero_.get(); }
  int rank() const { return opts_.rank; }
  int world() const { return opts_.world; }
  const TrainConfig& config() const { return cfg_; }
  const std::string& run_dir() const { return run_dir_; }
  int64_t step() const { return step_; }
  int64_t tokens_seen() const { return tokens_seen_; }

  static void install_signal_handlers();
  static void request_stop();
  static bool stop_requested();
  static void clear_stop();

 private:
  bool is_root() const { return opts_.rank == 0; }
  void log_step(const StepStats& s);
  double grad_norm_and_clip();
  NamedTensors optimizer_state() const;
  bool stop_agreed();

  TrainConfig cfg_;
  TrainerOptions opts_;
  TrainerHooks hooks_;
  std::string run_dir_, config_yaml_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> optim_;            // null with ZeRO-1
  std::unique_ptr<GradReducer> reducer_;    // world > 1
  std::unique_ptr<ShardedAdamW> zero_;      // optim.zero: 1 and world > 1
  std::unique_ptr<LRSchedule> schedule_;
  std::shared_ptr<data::TokenDataset> train_data_, val_;
  std::unique_ptr<data::DataLoader> loader_;
  MetricsWriter metrics_;
  int64_t step_ = 0, tokens_seen_ = 0, bad_streak_ = 0;
  std::string last_checkpoint_;
  int64_t last_ckpt_step_ = -1;
  double ema_step_seconds_ = 0.0;
  Device device_;
  std::optional<DType> compute_dtype_;
  std::string device_name_;        // the GPU's name ("" on the CPU)
  double flops_per_token_ = 0.0;   // train_flops_per_token at data.seq_len
  double peak_flops_ = 0.0;        // 0: unknown (no MFU)
};

}  // namespace hymba::train
