// `hymba bench train` (train/bench_train.h): a step is timed, its FLOP rate follows the
// model_info formula, the op-family profile covers the kernels a hybrid step runs (and its
// self times fit inside the step time), the sgemm baseline picks the largest linear, and
// CONFIG may be a recipe or a bare model config. Also: the dispatch macros open profiler
// scopes named after the kernel.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

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
