// Training on CUDA against the CPU: (a) the tiny model's loss and every parameter gradient in
// fp32; (b) bf16 mixed precision (fp32 masters) against fp32 over 50 AdamW steps on the same
// data. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "layers/model.h"
#include "layers/precision.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/train/train_test_util.h"
#include "train/checkpoint.h"
#include "train/eval.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace hymba::train {
namespace {

ModelConfig tiny(bool meta_tokens) {
  std::string y = testing::kTinyModelYaml;
  if (!meta_tokens) {
    // The meta-token embedding is cast to the compute dtype in Model::run_layers; without
    // that cast a bf16 run needs a model without meta tokens.
    const std::string meta = "num_meta_tokens: 2";
    y.replace(y.find(meta), meta.size(), "num_meta_tokens: 0");
  }
  return parse_model_config_string(y, "tiny.yaml");
}

// ids and next-token targets (B, L) on the CPU: a noisy repeating pattern, so a few dozen
// steps visibly lower the loss.
std::pair<Tensor, Tensor> batch(uint64_t seed, int64_t B = 3, int64_t L = 13) {
  Generator gen(seed);
  Tensor u = rand({B, L}, {}, &gen);
  const float* up = u.data<float>();
  std::vector<int32_t> ids(size_t(B * L)), tgt(size_t(B * L), -100);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) {
      const size_t i = size_t(b * L + t);
      ids[i] = up[i] < 0.8f ? int32_t((b * 7 + t * 3) % 64) : int32_t(up[i] * 63.0f);
    }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < L; ++t) tgt[size_t(b * L + t)] = ids[size_t(b * L + t + 1)];
  return {from_vector(ids, {B, L}, DType::I32), from_vector(tgt, {B, L}, DType::I32)};
}

TEST(CudaTraining, Fp32LossAndGradientsMatchCpu) {
  HYMBA_REQUIRE_GPU();
  const ModelConfig cfg = tiny(/*meta_tokens=*/true);
  Model cpu(cfg, 4), gpu(cfg, 4);
  gpu.to(Device::cuda());
  auto [ids, tgt] = batch(17);
  Tensor lc = cpu.loss(ids, tgt);
  lc.backward();
  Tensor lg = gpu.loss(ids.to(Device::cuda()), tgt.to(Device::cuda()));
  lg.backward();
  EXPECT_TRUE(lg.device().is_cuda());
  // Different summation orders (cuBLAS, tiled attention, parallel scan reductions).
  EXPECT_CUDA_CLOSE(lg.detach(), lc.detach(), 1e-3, "loss");
  const NamedTensors pc = cpu.named_parameters(), pg = gpu.named_parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_TRUE(pg[i].second.grad().defined()) << pg[i].first;
    EXPECT_TRUE(pg[i].second.grad().device().is_cuda()) << pg[i].first;
    EXPECT_CUDA_CLOSE(pg[i].second.grad(), pc[i].second.grad(), 1e-3, pc[i].first.c_str());
  }
}

// The check: the bf16 loss curve stays within 2% of the fp32 one over 50 steps
// (same seed, same data, AdamW with clipping), and the masters and moments stay fp32.
TEST(CudaTraining, Bf16LossCurveTracksFp32) {
  HYMBA_REQUIRE_GPU();
  const ModelConfig cfg = tiny(/*meta_tokens=*/false);
  Model m32(cfg, 8), m16(cfg, 8);
  m32.to(Device::cuda());
  m16.to(Device::cuda());
  AdamW o32(default_param_groups(m32.named_parameters(), 0.1)), o16(default_param_groups(m16.named_parameters(), 0.1));
  std::vector<double> c32, c16;
  for (int step = 0; step < 50; ++step) {
    auto [ids_h, tgt_h] = batch(1000 + uint64_t(step));
    Tensor ids = ids_h.to(Device::cuda()), tgt = tgt_h.to(Device::cuda());
    Tensor l32 = model_loss(m32, ids, tgt);
    l32.backward();
    c32.push_back(l32.item());
    o32.clip_grad_norm_(1.0);
    o32.step(3e-3);
    o32.zero_grad();
    {
      PrecisionGuard g(DType::BF16);
      EXPECT_EQ(model_logits(m16, ids).dtype(), DType::BF16);
      Tensor l16 = model_loss(m16, ids, tgt);
      EXPECT_EQ(l16.dtype(), DType::F32);  // fp32 loss; the kernel reads the bf16 logits as they are
      l16.backward();
      c16.push_back(l16.item());
      o16.clip_grad_norm_(1.0);
      o16.step(3e-3);
    }
    o16.zero_grad();
  }
  for (size_t i = 0; i < c32.size(); ++i)
    EXPECT_NEAR(c16[i], c32[i], 0.02 * std::abs(c32[i])) << "step " << i;
  EXPECT_LT(c32.back(), 0.9 * c32.front());  // the curve being compared does go down
  for (const auto& [name, p] : m16.named_parameters()) EXPECT_EQ(p.dtype(), DType::F32) << name;
  for (const auto& [name, t] : o16.state_dict())
    if (name != "step") {
      EXPECT_EQ(t.dtype(), DType::F32) << name;
    }
}

using testing::write_split;

// The trainer end to end on the GPU in bf16: the model and moments live on the device as
// fp32, the loss falls, eval runs, and the checkpoint holds host copies that a fresh trainer
// loads back onto the device unchanged.
TEST(CudaTraining, TrainerBf16OnDeviceCheckpointsAndResumes) {
  HYMBA_REQUIRE_GPU();
  testing::TempDir tmp("hymba_cuda_trainer");
  const auto data = tmp.path / "data";
  std::filesystem::create_directories(data);
  write_split(data, "train", 60, 1);
  write_split(data, "val", 6, 2);
  const std::string y = std::string("model:") + testing::kTinyModelYaml + "data: {train: " + data.string() +
                        ", seq_len: 16, mode: random}\n"
                        "optim: {lr: 0.05, weight_decay: 0.1, grad_clip: 1.0}\n"
                        "schedule: {kind: cosine, warmup_steps: 3, min_lr: 0.001}\n"
                        "run: {steps: 30, global_batch: 8, micro_batch: 4, seed: 3, log_every: 10, device: cuda, "
                        "eval_batches: 2, out_dir: " + (tmp.path / "run").string() + "}\n";
  TrainConfig cfg = parse_train_config_string(y, "cuda.yaml", {"model.num_meta_tokens=0"});
  ASSERT_EQ(cfg.run.precision, "bf16");
  TrainerOptions o;
  o.log = false;
  Trainer t(cfg, o);
  EXPECT_TRUE(t.device().is_cuda());
  EXPECT_EQ(t.compute_dtype(), DType::BF16);
  for (const auto& [name, p] : t.model().named_parameters()) {
    EXPECT_TRUE(p.device().is_cuda()) << name;
    EXPECT_EQ(p.dtype(), DType::F32) << name;
  }
  const double before = t.evaluate().loss;  // eval on the device, in bf16
  EXPECT_NEAR(before, std::log(64.0), 0.5);
  TrainResult r = t.run();
  ASSERT_TRUE(r.last_eval.has_value());
  EXPECT_LT(r.last_eval->loss, 0.85 * before) << "val loss " << before << " -> " << r.last_eval->loss;
  for (const auto& [name, m] : t.optimizer().state_dict())
    if (name != "step") {
      EXPECT_TRUE(m.device().is_cuda()) << name;
    }

  Trainer u(cfg, o);
  u.load(r.last_checkpoint);
  const NamedTensors a = t.model().named_parameters(), b = u.model().named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(b[i].second.device().is_cuda()) << a[i].first;
    EXPECT_CUDA_CLOSE(b[i].second.detach(), a[i].second.detach(), 0.0, a[i].first.c_str());  // exact copies
  }
  EXPECT_EQ(u.step(), t.step());
}

}  // namespace
}  // namespace hymba::train
