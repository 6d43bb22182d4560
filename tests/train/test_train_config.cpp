// The training recipe parser: defaults, resolution of the global batch, --set overrides, and
// errors that name the file, the line and the key.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>

#include "core/device.h"
#include "core/error.h"
#include "train/device_info.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "tests/train/train_test_util.h"

namespace hymba::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const char* const kModel = testing::kTinyModelYaml;

std::string recipe(const std::string& extra_run = "", const std::string& extra_optim = "") {
  return std::string("model:") + kModel +
         "data:\n  train: /nonexistent/data\n  seq_len: 16\n"
         "optim:\n  lr: 0.01\n" + extra_optim +
         "schedule: {kind: cosine, warmup_steps: 2}\n"
         "run:\n  steps: 10\n  global_batch_tokens: 128\n  micro_batch: 4\n" + extra_run;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "<no UserError>";
}

TEST(TrainConfig, DefaultsAndResolvedBatch) {
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml");
  EXPECT_EQ(c.model.vocab_size, 64);
  EXPECT_EQ(c.data.seq_len, 16);
  EXPECT_EQ(c.run.global_batch, 8);  // 128 tokens / 16
  EXPECT_EQ(c.run.global_batch_tokens, 128);
  EXPECT_EQ(c.run.micro_batch, 4);
  EXPECT_EQ(c.accum_steps(), 2);
  EXPECT_EQ(c.schedule.total_steps, 10);  // defaults to run.steps
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.01);
  EXPECT_DOUBLE_EQ(c.schedule_params().peak_lr, 0.01);
  EXPECT_EQ(c.data.mode, "random");
  EXPECT_EQ(c.run.max_bad_steps, 5);
  EXPECT_FALSE(c.optim.no_decay.empty());
  EXPECT_EQ(c.data.val, "");  // the train path is not a directory: no default val
}

TEST(TrainConfig, DumpRoundTrips) {
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml", {"optim.lr=0.0025", "run.seed=7"});
  std::string y = dump_train_config(c);
  TrainConfig d = parse_train_config_string(y, "dumped.yaml");
  EXPECT_EQ(dump_train_config(d), y);
  EXPECT_DOUBLE_EQ(d.optim.lr, 0.0025);
  EXPECT_EQ(d.run.seed, 7u);
  EXPECT_EQ(d.run.global_batch, 8);
}

TEST(TrainConfig, RecomputeZeroAndBucketKeys) {
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml");
  EXPECT_FALSE(c.run.recompute);
  EXPECT_EQ(c.optim.zero, 0);
  EXPECT_DOUBLE_EQ(c.run.ddp_bucket_mb, 25.0);
  c = parse_train_config_string(recipe(), "r.yaml", {"run.recompute=true", "optim.zero=1", "run.ddp_bucket_mb=0.5"});
  EXPECT_TRUE(c.run.recompute);
  EXPECT_EQ(c.optim.zero, 1);
  EXPECT_DOUBLE_EQ(c.run.ddp_bucket_mb, 0.5);
  TrainConfig d = parse_train_config_string(dump_train_config(c), "dumped.yaml");
  EXPECT_TRUE(d.run.recompute);
  EXPECT_EQ(d.optim.zero, 1);

  std::string m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.recompute=maybe"}); });
  EXPECT_THAT(m, HasSubstr("run.recompute"));
  EXPECT_THAT(m, HasSubstr("expected true or false"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"optim.zero=2"}); });
  EXPECT_THAT(m, HasSubstr("optim.zero"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.ddp_bucket_mb=0"}); });
  EXPECT_THAT(m, HasSubstr("run.ddp_bucket_mb"));
}

TEST(TrainConfig, DevicePrecisionAndPeakKeys) {
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml");
  EXPECT_EQ(c.run.device, "cpu");
  EXPECT_EQ(c.run.precision, "fp32");  // the CPU default
  EXPECT_DOUBLE_EQ(c.run.peak_tflops, 0.0);
  c = parse_train_config_string(recipe(), "r.yaml", {"run.precision=fp32", "run.peak_tflops=123.5"});
  EXPECT_DOUBLE_EQ(c.run.peak_tflops, 123.5);
  TrainConfig d = parse_train_config_string(dump_train_config(c), "dumped.yaml");
  EXPECT_EQ(d.run.precision, "fp32");
  EXPECT_DOUBLE_EQ(d.run.peak_tflops, 123.5);

  std::string m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.precision=bf16"}); });
  EXPECT_THAT(m, HasSubstr("run.precision"));
  EXPECT_THAT(m, HasSubstr("run.device: cuda"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.precision=fp16"}); });
  EXPECT_THAT(m, HasSubstr("run.precision"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.peak_tflops=-1"}); });
  EXPECT_THAT(m, HasSubstr("run.peak_tflops"));

  if (built_with_cuda()) {
    // Parsing does not need a GPU (a recipe is checked on a login node); the trainer does.
    c = parse_train_config_string(recipe(), "r.yaml", {"run.device=cuda"});
    EXPECT_EQ(c.run.device, "cuda");
    EXPECT_EQ(c.run.precision, "bf16");  // the CUDA default
    d = parse_train_config_string(dump_train_config(c), "dumped.yaml");
    EXPECT_EQ(d.run.device, "cuda");
    EXPECT_EQ(d.run.precision, "bf16");
    c = parse_train_config_string(recipe(), "r.yaml", {"run.device=cuda", "run.precision=fp32"});
    EXPECT_EQ(c.run.precision, "fp32");
  } else {
    m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.device=cuda"}); });
    EXPECT_THAT(m, HasSubstr("run.device"));
    EXPECT_THAT(m, HasSubstr("CUDA"));
  }
}

// run.device: cuda on a CUDA build without a visible GPU: the trainer (not the parser, which
// may run on a login node) refuses it, naming the key.
TEST(TrainConfig, CudaDeviceWithoutGpuIsRefusedByTheTrainer) {
  if (!built_with_cuda() || cuda_available()) GTEST_SKIP() << "needs a CUDA build on a machine without a GPU";
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml", {"run.device=cuda"});
  TrainerOptions o;
  o.write_files = false;
  o.log = false;
  std::string m = error_of([&] { Trainer t(c, o); });
  EXPECT_THAT(m, HasSubstr("run.device"));
  EXPECT_THAT(m, HasSubstr("no GPU"));
}

// The MFU peak table (train/device_info.h), by the names cudaGetDeviceProperties reports.
TEST(TrainConfig, PeakFlopsByDeviceName) {
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("NVIDIA H100 80GB HBM3"), 989e12);  // SXM
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("NVIDIA H100 PCIe"), 756e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("NVIDIA H200"), 989e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("nvidia a100-pcie-40gb"), 312e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops_for_name("NVIDIA GeForce RTX 4090"), 0.0);  // unknown
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA GeForce RTX 4090", 165.0), 165e12);       // run.peak_tflops
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA H100 PCIe", 0.0), 756e12);
  EXPECT_EQ(format_flops(400e12, 989e12), " | 400.0 TFLOP/s | MFU 40.4%");
  EXPECT_EQ(format_flops(400e12, 0.0), " | 400.0 TFLOP/s");
  EXPECT_EQ(format_flops(0.0, 989e12), "");
}

TEST(TrainConfig, SetOverridesAreTypeChecked) {
  TrainConfig c = parse_train_config_string(recipe(), "r.yaml", {"run.steps=3", "optim.no_decay=[bias]",
                                                                  "model.num_meta_tokens=4", "data.mode=packed"});
  EXPECT_EQ(c.run.steps, 3);
  EXPECT_EQ(c.model.num_meta_tokens, 4);
  EXPECT_EQ(c.data.mode, "packed");
  ASSERT_EQ(c.optim.no_decay.size(), 1u);
  EXPECT_EQ(c.optim.no_decay[0], "bias");

  std::string m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.steps=abc"}); });
  EXPECT_THAT(m, HasSubstr("--set run.steps"));
  EXPECT_THAT(m, HasSubstr("expected an integer"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"optim.nope=1"}); });
  EXPECT_THAT(m, HasSubstr("optim.nope"));
  EXPECT_THAT(m, HasSubstr("unknown key"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.steps"}); });
  EXPECT_THAT(m, HasSubstr("expected key=value"));
  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"optim.lr.x=1"}); });
  EXPECT_THAT(m, HasSubstr("not a section"));
}

TEST(TrainConfig, ErrorsNameFileLineAndKey) {
  std::string m = error_of([] { parse_train_config_string(recipe("", "  lrr: 2\n"), "r.yaml"); });
  // "model:" and the model take lines 1-14, data 15-17, optim 18-20.
  EXPECT_THAT(m, HasSubstr("r.yaml:"));
  EXPECT_THAT(m, HasSubstr("optim.lrr"));
  EXPECT_THAT(m, HasSubstr("unknown key"));
  int line = std::stoi(m.substr(m.find(':') + 1));
  EXPECT_EQ(line, 20) << m;

  m = error_of([] { parse_train_config_string(recipe("  eval_every: often\n"), "r.yaml"); });
  EXPECT_THAT(m, HasSubstr("run.eval_every"));
  EXPECT_THAT(m, HasSubstr("expected an integer, got 'often'"));

  m = error_of([] { parse_train_config_string(recipe("  global_batch: 8\n"), "r.yaml"); });
  EXPECT_THAT(m, HasSubstr("not both"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.global_batch_tokens=100"}); });
  EXPECT_THAT(m, HasSubstr("multiple of data.seq_len"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"run.micro_batch=3"}); });
  EXPECT_THAT(m, HasSubstr("run.micro_batch"));
  EXPECT_THAT(m, HasSubstr("divisor"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"data.mode=shuffled"}); });
  EXPECT_THAT(m, HasSubstr("data.mode"));

  m = error_of([] { parse_train_config_string("data: {train: x}\nrun: {steps: 1, global_batch: 1}\n", "r.yaml"); });
  EXPECT_THAT(m, HasSubstr("model"));
  EXPECT_THAT(m, HasSubstr("missing"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"schedule.warmup_steps=20"}); });
  EXPECT_THAT(m, HasSubstr("schedule"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"model.hidden_size=-3"}); });
  EXPECT_THAT(m, HasSubstr("hidden_size"));

  m = error_of([] { parse_train_config_string(recipe(), "r.yaml", {"extra.key=1"}); });
  EXPECT_THAT(m, HasSubstr("extra"));
}

TEST(TrainConfig, ModelFileRelativeToRecipe) {
  struct Dir {  // removed even when an assertion throws
    fs::path p = fs::temp_directory_path() / ("hymba_tc_" + std::to_string(::getpid()));
    ~Dir() { fs::remove_all(p); }
  } tmp;
  const fs::path& dir = tmp.p;
  fs::create_directories(dir / "models");
  {
    std::ofstream(dir / "models" / "m.yaml") << kModel;
    std::ofstream(dir / "recipe.yaml") << "model: models/m.yaml\ndata: {train: d, seq_len: 8}\n"
                                          "run: {steps: 2, global_batch: 2}\n";
  }
  TrainConfig c = load_train_config((dir / "recipe.yaml").string(), {"model.num_layers=1"});
  EXPECT_EQ(c.model.num_layers, 1);
  EXPECT_EQ(fs::path(c.model_source).lexically_normal(), (dir / "models" / "m.yaml").lexically_normal());
  EXPECT_EQ(c.run.micro_batch, 2);  // defaults to the global batch

  std::string m = error_of([&] { load_train_config((dir / "missing.yaml").string()); });
  EXPECT_THAT(m, HasSubstr("missing.yaml"));
  {
    std::ofstream(dir / "bad.yaml") << "model: models/m.yaml\nrun: [1, 2\n";
  }
  m = error_of([&] { load_train_config((dir / "bad.yaml").string()); });
  EXPECT_THAT(m, HasSubstr("bad.yaml"));
}

}  // namespace
}  // namespace hymba::train
