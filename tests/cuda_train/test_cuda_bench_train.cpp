// `hymba bench train` on a GPU (train/bench_train.h): the tiny Hymba model with run.device
// cuda runs its steps on the device in the compute dtype, with a finite loss, a token rate, an
// MFU inside (0, 1) and a cuBLASLt baseline in that dtype. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/cuda_check.h"
#include "tests/cuda/cuda_test_util.h"
#include "train/bench_train.h"
#include "train/device_info.h"

namespace hymba::train {
namespace {

TrainConfig tiny_hymba_on_cuda(const std::string& precision) {
  TrainConfig cfg = load_bench_config(std::string(HYMBA_SOURCE_DIR) + "/configs/tiny/hymba.yaml",
                                      {"run.device=cuda", "run.precision=" + precision, "data.seq_len=128"});
  // A card missing from the peak table would give no MFU: any positive peak tests the ratio.
  if (peak_bf16_flops_for_name(cuda_device_name(cuda::choose_device_from_env())) <= 0) cfg.run.peak_tflops = 100;
  return cfg;
}

TEST(CudaBenchTrain, TinyHymbaBf16RunsOnTheGpu) {
  HYMBA_REQUIRE_GPU();
  BenchTrainOptions o;
  o.steps = 2;
  o.warmup = 1;
  const BenchTrainResult r = bench_train(tiny_hymba_on_cuda("bf16"), o);
  EXPECT_EQ(r.device.rfind("cuda:", 0), 0u) << r.device;
  EXPECT_FALSE(r.device_name.empty());
  EXPECT_EQ(r.precision, "bf16");
  EXPECT_EQ(r.batch, 8);
  EXPECT_EQ(r.seq_len, 128);
  // Allocation poisoning is on: a kernel output left unwritten would make the loss NaN.
  EXPECT_TRUE(std::isfinite(r.final_loss)) << r.final_loss;
  EXPECT_GT(r.tokens_per_second, 0.0);
  EXPECT_NEAR(r.tokens_per_second * r.seconds_per_step, 8.0 * 128.0, 1e-6);
  EXPECT_GT(r.peak_flops, 0.0);
  EXPECT_GT(r.mfu(), 0.0);
  EXPECT_LT(r.mfu(), 1.0);
  // Activations live on the GPU during the step, on top of the model and its moments.
  EXPECT_GT(r.peak_mb, 0.0);
  EXPECT_GT(r.peak_total_mb, r.peak_mb);
  EXPECT_GE(r.reserved_mb, r.peak_total_mb * 0.999);
  // The profile comes from a second, synchronized pass: its split is device time, it covers
  // the step's families, and the pass is slower than the timed steps, not faster.
  EXPECT_FALSE(r.profile_note.empty());
  EXPECT_FALSE(r.families.empty());
  EXPECT_GE(r.profile_seconds, 0.5 * r.seconds_per_step * double(r.steps));
  EXPECT_LE(r.profiled_seconds, r.profile_seconds * 1.001);
  for (const char* fam : {"matmul", "attention", "selective scan", "adamw"}) {
    double sec = 0.0;
    for (const auto& f : r.families)
      if (f.family == fam) sec = f.self_seconds;
    EXPECT_GT(sec, 0.0) << fam;
  }
  ASSERT_EQ(r.sgemm.size(), 2u);
  for (const auto& g : r.sgemm) {
    EXPECT_EQ(g.dtype, "bf16") << g.what;
    EXPECT_GT(g.gflops, 0.0) << g.what;
  }
  EXPECT_EQ(r.sgemm[0].m, 8 * 128);
  const std::string text = format_bench_train(r);
  EXPECT_NE(text.find("MFU"), std::string::npos) << text;
  EXPECT_NE(text.find("cuBLASLt"), std::string::npos) << text;
  EXPECT_NE(text.find("time by op family"), std::string::npos) << text;  // the profile is printed on CUDA too
}

// fp32 on the same GPU computes the same step: its loss after the same steps on the same
// tokens is within bf16 rounding of the bf16 run's (both start near ln(4096) = 8.3).
TEST(CudaBenchTrain, Fp32AndBf16StepsAgree) {
  HYMBA_REQUIRE_GPU();
  BenchTrainOptions o;
  o.steps = 2;
  o.warmup = 1;
  o.sgemm = false;
  o.profile = false;
  const BenchTrainResult r16 = bench_train(tiny_hymba_on_cuda("bf16"), o);
  const BenchTrainResult r32 = bench_train(tiny_hymba_on_cuda("fp32"), o);
  EXPECT_EQ(r32.precision, "fp32");
  ASSERT_TRUE(std::isfinite(r32.final_loss));
  EXPECT_NEAR(r16.final_loss, r32.final_loss, 0.03 * r32.final_loss);
  EXPECT_TRUE(r32.sgemm.empty());
  EXPECT_TRUE(r32.profile_note.empty());  // no profile was asked for
}

}  // namespace
}  // namespace hymba::train
