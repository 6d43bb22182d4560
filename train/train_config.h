// The training recipe: one YAML file with five sections, validated once.
//
//   model: configs/tiny/hymba.yaml     # a model config file, or the model config inline (a map)
//   data:
//     train: data/brown                # a `hymba prepare` directory or a single .h5 shard
//     val: data/brown                  # optional; default: the train path (its val split)
//     train_split: train               # split names inside a directory
//     val_split: val
//     mode: random                     # random | packed
//     seq_len: 256
//   optim: {lr: 3.0e-3, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, weight_decay: 0.1,
//           no_decay: [memory_tokens, "*embed*", "*norm*", bias, A_log, D], grad_clip: 1.0,
//           zero: 0}
//   schedule: {kind: wsd, warmup_steps: 20, min_lr: 1.0e-5, total_steps: 0,   # 0: run.steps
//              decay_fraction: 0.2, decay_shape: 1-sqrt}
//   run: {steps: 300, global_batch_tokens: 8192, micro_batch: 8, seed: 0, eval_every: 100,
//         eval_batches: 20, ckpt_every: 100, keep_last: 3, log_every: 10, out_dir: runs/tiny,
//         device: cpu, precision: fp32, peak_tflops: 0, max_bad_steps: 5, recompute: false,
//         ddp_bucket_mb: 25}
//
// run.global_batch (samples per optimizer step) may be given instead of global_batch_tokens
// (which must then be a multiple of data.seq_len); the global batch must be a multiple of
// run.micro_batch (the number of micro-batches accumulated per step is their ratio).
//
// Relative paths are resolved against the working directory, or, when nothing exists there,
// against the config file's directory (so a recipe works from the repo root and from its
// own folder).
//
// Every problem is a hymba::UserError naming the file, the line and the dotted key. --set
// overrides (`optim.lr=1e-3`, `model.hidden_size=32`) are applied to the YAML tree before
// validation, so they get the same checks; an error in an override names it ("--set
// optim.lr"). `model.*` overrides work for a model given as a file too (the file is read
// into the tree first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/model_config.h"
#include "train/lr_schedule.h"

namespace hymba::train {

struct DataSection {
  std::string train;
  std::string val;  // "" : no validation data
  std::string train_split = "train";
  std::string val_split = "val";
  std::string mode = "random";  // random | packed
  int64_t seq_len = 256;
};

struct OptimSection {
  double lr = 3e-3;  // peak learning rate
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  std::vector<std::string> no_decay;  // default: default_no_decay_patterns()
  double grad_clip = 1.0;             // <= 0: no clipping (the norm is still measured)
  int64_t zero = 0;                   // 1: ZeRO-1, moments sharded across data-parallel ranks
};

struct ScheduleSection {
  std::string kind = "cosine";  // constant | cosine | wsd
  int64_t warmup_steps = 0;
  double min_lr = 1e-5;
  int64_t total_steps = 0;  // 0: run.steps
  double decay_fraction = 0.2;
  std::string decay_shape = "1-sqrt";
};

struct RunSection {
  int64_t steps = 100;
  int64_t global_batch_tokens = 0;  // one of these two is given; resolved into both
  int64_t global_batch = 0;         // samples per optimizer step
  int64_t micro_batch = 0;          // samples per forward/backward; 0: the global batch
  uint64_t seed = 0;
  int64_t eval_every = 0;    // 0: only at the end
  int64_t eval_batches = 0;  // 0: the whole val split
  int64_t ckpt_every = 0;    // 0: only at the end
  int64_t keep_last = 3;     // 0: keep every checkpoint
  int64_t log_every = 10;
  std::string out_dir = "runs/run";
  std::string device = "cpu";   // cpu | cuda (the GPU: the node-local rank's, see trainer.h)
  std::string precision;        // bf16 | fp32 compute dtype (masters stay fp32); default bf16
                                // on cuda, fp32 on cpu (bf16 on cpu is refused)
  double peak_tflops = 0.0;     // the GPU's peak dense bf16 TFLOP/s for MFU; 0: by device name
  int64_t max_bad_steps = 5;
  bool recompute = false;       // recompute each block's activations in backward (a KV-sharing
                                // group of layers is one unit)
  double ddp_bucket_mb = 25.0;  // data parallelism: gradient bucket size
};

struct TrainConfig {
  std::string source = "<memory>";  // the recipe file, for messages
  std::string model_source;         // the model config file ("" when inline)
  ModelConfig model;
  DataSection data;
  OptimSection optim;
  ScheduleSection schedule;
  RunSection run;

  int64_t accum_steps() const { return run.global_batch / run.micro_batch; }
  ScheduleParams schedule_params() const;
};

// `overrides` are "dotted.key=value" strings (the --set flags), applied in order.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});
TrainConfig parse_train_config_string(const std::string& yaml, const std::string& file = "<string>",
                                      const std::vector<std::string>& overrides = {});

// The resolved config as YAML, the model inline and every default spelled out:
// parse_train_config_string of it gives the same config. Printed at start, saved in the run
// dir (config.yaml) and in every checkpoint.
std::string dump_train_config(const TrainConfig& cfg);

}  // namespace hymba::train
