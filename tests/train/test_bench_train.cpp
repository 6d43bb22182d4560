// `hymba bench train` (train/bench_train.h): a step is timed, its FLOP rate follows the
// model_info formula, the op-family profile covers the kernels a hybrid step runs (and its
// self times fit inside the step time), the sgemm baseline picks the largest linear, and
// CONFIG may be a recipe or a bare model config. Also: the dispatch macros open profiler
// scopes named after the kernel. run.device: cuda never falls back to the CPU, and the output
// and JSON say where the step ran (tests/cuda_train runs it on a GPU).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/profiler.h"
#include "core/rng.h"
#include "kernels/matmul.h"
#include "train/bench_train.h"
#include "train/model_info.h"
#include "tests/train/train_test_util.h"

using namespace hymba;
using namespace hymba::train;
using ::testing::HasSubstr;

namespace {

TrainConfig tiny_recipe() {
  std::string yaml = std::string("model:") + hymba::train::testing::kTinyModelYaml +
                     "data: {train: /nonexistent/data, seq_len: 16}\n"
                     "run: {global_batch: 2, micro_batch: 2}\n";
  return parse_train_config_string(yaml);
}

double family_seconds(const BenchTrainResult& r, const std::string& fam) {
  for (const auto& f : r.families)
    if (f.family == fam) return f.self_seconds;
  return -1.0;
}

}  // namespace

TEST(BenchTrain, TimesStepsAndSplitsThemByFamily) {
  BenchTrainOptions o;
  o.steps = 2;
  o.warmup = 1;
  o.sgemm = false;
  BenchTrainResult r = bench_train(tiny_recipe(), o);
  EXPECT_EQ(r.data, "random tokens");  // the recipe's data path does not exist
  EXPECT_EQ(r.batch, 2);
  EXPECT_EQ(r.seq_len, 16);
  EXPECT_GT(r.tokens_per_second, 0.0);
  EXPECT_NEAR(r.tokens_per_second * r.seconds_per_step, 32.0, 1e-9);
  EXPECT_DOUBLE_EQ(r.flops_per_token, model_info(tiny_recipe().model, 16).train_flops_per_token);
  EXPECT_NEAR(r.gflops, r.flops_per_token * r.tokens_per_second / 1e9, 1e-12);
  EXPECT_TRUE(std::isfinite(r.final_loss));
  for (const char* fam : {"matmul", "attention", "selective scan", "conv1d", "norm", "elementwise", "meta tokens",
                          "cross-entropy", "rope", "adamw", "autograd"})
    EXPECT_GT(family_seconds(r, fam), 0.0) << fam;
  EXPECT_LE(r.profiled_seconds, r.seconds_per_step * double(r.steps) * 1.001);
  for (const auto& k : r.kernels)
    if (k.name == "adamw_step") {
      EXPECT_EQ(k.calls % r.steps, 0);
    }
  EXPECT_FALSE(profiler::enabled());

  std::string text = format_bench_train(r);
  EXPECT_THAT(text, HasSubstr("tokens/s"));
  EXPECT_THAT(text, HasSubstr("selective scan"));
  std::string json = bench_train_json(r);
  EXPECT_THAT(json, HasSubstr("\"tokens_per_second\""));
  EXPECT_THAT(json, HasSubstr("\"families\""));
}

TEST(BenchTrain, SgemmBaselineAtTheLargestLinear) {
  BenchTrainOptions o;
  o.steps = 1;
  o.warmup = 0;
  o.profile = false;
  BenchTrainResult r = bench_train(tiny_recipe(), o);
  EXPECT_TRUE(r.families.empty());
  ASSERT_EQ(r.sgemm.size(), 2u);
  // The producer's in_proj, 16 -> q 8 + k 8 + v 16 + x 32 + z 32 = 104 rows, is the largest
  // 2-D weight of the tiny model (the tied head is 64 x 16).
  EXPECT_EQ(r.sgemm[0].m, 32);
  EXPECT_EQ(r.sgemm[0].n, 104);
  EXPECT_EQ(r.sgemm[0].k, 16);
  EXPECT_THAT(r.sgemm[0].what, HasSubstr("layers.0.mixer.in_proj.weight"));
  EXPECT_GT(r.sgemm[0].gflops, 0.0);
  EXPECT_GT(r.sgemm[1].gflops, 0.0);
  EXPECT_DOUBLE_EQ(r.sgemm_ratio(), r.gflops / r.sgemm[0].gflops);
}

TEST(BenchTrain, RecomputeGivesTheSameLoss) {
  BenchTrainOptions o;
  o.steps = 2;
  o.warmup = 0;
  o.sgemm = false;
  o.profile = false;
  BenchTrainResult a = bench_train(tiny_recipe(), o);
  o.recompute = true;
  BenchTrainResult b = bench_train(tiny_recipe(), o);
  EXPECT_TRUE(b.recompute);
  EXPECT_EQ(a.final_loss, b.final_loss);
}

TEST(BenchTrain, ConfigIsARecipeOrAModel) {
  TrainConfig m = load_bench_config(std::string(HYMBA_SOURCE_DIR) + "/configs/tiny/hymba.yaml", {"data.seq_len=64"});
  EXPECT_TRUE(m.data.train.empty());
  EXPECT_EQ(m.data.seq_len, 64);
  EXPECT_EQ(m.run.micro_batch, 8);
  EXPECT_EQ(m.model.num_meta_tokens, 16);
  // The recipe names its model relative to the repository root, where it is run from.
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(HYMBA_SOURCE_DIR);
  TrainConfig r = load_bench_config("configs/train/tiny-hymba.yaml", {});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(r.run.micro_batch, 8);
  EXPECT_EQ(r.data.seq_len, 256);
  EXPECT_THAT(r.data.train, HasSubstr("brown"));
  EXPECT_THROW(load_bench_config("/nonexistent.yaml", {}), UserError);
}

TEST(BenchTrain, DispatchOpensAScopePerKernelCall) {
  profiler::reset();
  profiler::set_enabled(true);
  Generator g(1);
  Tensor a = randn({8, 8}, {}, &g);
  for (int i = 0; i < 3; ++i) kernels::matmul(a, a);
  profiler::set_enabled(false);
  kernels::matmul(a, a);  // not recorded
  int64_t calls = 0;
  for (const auto& e : profiler::snapshot())
    if (e.name == "matmul") calls = e.calls;
  EXPECT_EQ(calls, 3);
}

TEST(BenchTrain, JsonAndTextSayTheDeviceAndPrecision) {
  BenchTrainOptions o;
  o.steps = 1;
  o.warmup = 0;
  o.profile = false;
  BenchTrainResult r = bench_train(tiny_recipe(), o);
  EXPECT_EQ(r.device, "cpu");
  EXPECT_EQ(r.precision, "fp32");
  EXPECT_FALSE(r.on_cuda());
  EXPECT_EQ(r.mfu(), 0.0);
  ASSERT_FALSE(r.sgemm.empty());
  EXPECT_EQ(r.sgemm[0].dtype, "f32");
  const nlohmann::json j = nlohmann::json::parse(bench_train_json(r));
  EXPECT_EQ(j.at("device"), "cpu");
  EXPECT_EQ(j.at("precision"), "fp32");
  EXPECT_TRUE(j.contains("sgemm"));
  EXPECT_TRUE(j.contains("sgemm_ratio"));
  EXPECT_FALSE(j.contains("gemm"));
  EXPECT_FALSE(j.contains("mfu"));
  const std::string text = format_bench_train(r);
  EXPECT_THAT(text, HasSubstr("sgemm"));
  EXPECT_THAT(text, HasSubstr("GFLOP/s achieved"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("MFU")));
}

// The CUDA layout of the report, from a result filled by hand (no GPU needed to format one).
TEST(BenchTrain, CudaResultReportsTflopsMfuAndTheGemmBaseline) {
  BenchTrainResult r;
  r.config = "x.yaml";
  r.model_name = "m";
  r.batch = 8;
  r.seq_len = 1024;
  r.steps = 5;
  r.device = "cuda:0";
  r.device_name = "NVIDIA H100 80GB HBM3";
  r.precision = "bf16";
  r.seconds_per_step = 0.1;
  r.tokens_per_second = 81920;
  r.flops_per_token = 1e9;
  r.gflops = 81920.0;  // 81.92 TFLOP/s
  r.peak_flops = 989e12;
  r.peak_source = "device table";
  r.peak_mb = 1000;
  r.peak_total_mb = 3000;
  r.reserved_mb = 4000;
  r.profile_note = "off on CUDA";
  r.sgemm.push_back({8192, 32000, 768, "x * W^T, W = lm_head", "bf16", 600e3});
  EXPECT_TRUE(r.on_cuda());
  EXPECT_NEAR(r.mfu(), 81.92 / 989.0, 1e-12);
  EXPECT_NEAR(r.sgemm_ratio(), 81920.0 / 600e3, 1e-12);
  const std::string text = format_bench_train(r);
  EXPECT_THAT(text, HasSubstr("cuda:0 (NVIDIA H100 80GB HBM3), compute bf16"));
  EXPECT_THAT(text, HasSubstr("81.92 TFLOP/s achieved, MFU 8.28% of 989 TFLOP/s"));
  EXPECT_THAT(text, HasSubstr("8192 x 32000 x 768 bf16"));
  EXPECT_THAT(text, HasSubstr("600.00 TFLOP/s (60.7% of peak) -> step at 13.7%"));
  EXPECT_THAT(text, HasSubstr("3000.0 MB in all"));
  EXPECT_THAT(text, HasSubstr("profile     off on CUDA"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("sgemm")));
  const nlohmann::json j = nlohmann::json::parse(bench_train_json(r));
  EXPECT_EQ(j.at("device"), "cuda:0");
  EXPECT_EQ(j.at("precision"), "bf16");
  EXPECT_EQ(j.at("device_name"), "NVIDIA H100 80GB HBM3");
  EXPECT_NEAR(j.at("mfu").get<double>(), r.mfu(), 1e-12);
  EXPECT_NEAR(j.at("tflops").get<double>(), 81.92, 1e-9);
  EXPECT_NEAR(j.at("peak_tflops").get<double>(), 989.0, 1e-9);
  ASSERT_TRUE(j.contains("gemm"));
  EXPECT_EQ(j.at("gemm")[0].at("dtype"), "bf16");
  EXPECT_NEAR(j.at("gemm_ratio").get<double>(), r.sgemm_ratio(), 1e-12);
  EXPECT_FALSE(j.contains("sgemm"));
  // A card without a known peak: no MFU, and the text says how to give one.
  r.peak_flops = 0;
  r.peak_source.clear();
  EXPECT_EQ(r.mfu(), 0.0);
  EXPECT_THAT(format_bench_train(r), HasSubstr("MFU unknown"));
  EXPECT_TRUE(nlohmann::json::parse(bench_train_json(r)).at("mfu").is_null());
}

// run.device: cuda must never quietly time the CPU: without a GPU (or without CUDA in the
// build, where the recipe parser already refuses it) it is a UserError naming run.device.
TEST(BenchTrain, CudaDeviceWithoutAGpuIsAnError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is visible: tests/cuda_train runs the bench on it";
  BenchTrainOptions o;
  o.steps = 1;
  o.warmup = 0;
  o.sgemm = false;
  const std::string yaml = std::string("model:") + hymba::train::testing::kTinyModelYaml +
                           "data: {train: /nonexistent/data, seq_len: 16}\n"
                           "run: {global_batch: 2, micro_batch: 2, device: cuda, precision: bf16}\n";
  try {
    bench_train(parse_train_config_string(yaml), o);
    ADD_FAILURE() << "a cuda recipe ran without a GPU";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("run.device"));
  }
  // Built in code, past the parser's check: bench_train itself refuses.
  TrainConfig cfg = tiny_recipe();
  cfg.run.device = "cuda";
  cfg.run.precision = "fp32";
  try {
    bench_train(cfg, o);
    ADD_FAILURE() << "a cuda recipe ran without a GPU";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("run.device"));
  }
  // bf16 is a GPU compute dtype: on the CPU it is refused rather than run in fp32.
  cfg.run.device = "cpu";
  cfg.run.precision = "bf16";
  EXPECT_THROW(bench_train(cfg, o), UserError);
}
