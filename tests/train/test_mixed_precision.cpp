// Mixed precision (layers/precision.h) tested on the CPU with f64 master weights and f32
// compute: the same casts, gradient flow back into the masters and optimizer on masters that
// bf16 compute with fp32 masters uses on CUDA. Without a compute dtype, or with the masters'
// own, the computation must be today's bit for bit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "layers/model.h"
#include "layers/precision.h"
#include "train/eval.h"
#include "train/optimizer.h"
#include "tests/train/train_test_util.h"

namespace hymba::train {
namespace {

// The tiny hybrid model without meta tokens (their embedding is cast in Model::run_layers,
// which this change does not own) and optionally with an untied LM head (a Linear).
ModelConfig tiny(bool tied) {
  std::string y = testing::kTinyModelYaml;
  const std::string meta = "num_meta_tokens: 2";
  y.replace(y.find(meta), meta.size(), "num_meta_tokens: 0");
  if (!tied) y += "  tie_embeddings: false\n";
  return parse_model_config_string(y, "tiny.yaml");
}

struct Batch {
  Tensor ids, targets;
};

Batch batch(uint64_t seed) {
  const int64_t B = 3, L = 11;
  Generator gen(seed);
  Tensor u = rand({B, L}, {}, &gen);
  std::vector<int32_t> ids(size_t(B * L)), tgt(size_t(B * L), -100);
  const float* up = u.data<float>();
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(std::min(63.0f, up[i] * 64.0f));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < L; ++t) tgt[size_t(b * L + t)] = ids[size_t(b * L + t + 1)];
  return {from_vector(ids, {B, L}, DType::I32), from_vector(tgt, {B, L}, DType::I32)};
}

double max_abs(const Tensor& t) {
  Tensor d = t.detach().to(DType::F64).contiguous();
  double m = 0;
  for (int64_t i = 0; i < d.numel(); ++i) m = std::max(m, std::abs(d.data<double>()[i]));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  Tensor x = a.detach().to(DType::F64).contiguous(), y = b.detach().to(DType::F64).contiguous();
  EXPECT_EQ(x.shape(), y.shape());
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) m = std::max(m, std::abs(x.data<double>()[i] - y.data<double>()[i]));
  return m;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor x = a.detach().contiguous(), y = b.detach().contiguous();
  return std::equal(x.data<float>(), x.data<float>() + x.numel(), y.data<float>());
}

TEST(MixedPrecision, GuardSetsAndRestoresTheComputeDtype) {
  EXPECT_FALSE(compute_dtype().has_value());
  {
    PrecisionGuard g(DType::F32);
    EXPECT_EQ(compute_dtype(), DType::F32);
    {
      PrecisionGuard inner(std::nullopt);
      EXPECT_FALSE(compute_dtype().has_value());
    }
    EXPECT_EQ(compute_dtype(), DType::F32);
  }
  EXPECT_FALSE(compute_dtype().has_value());
  EXPECT_THROW(set_compute_dtype(DType::I32), Error);

  Tensor m = ones({3}, DType::F64);
  EXPECT_EQ(compute_cast(m).impl(), m.impl());  // nothing set: the tensor itself
  PrecisionGuard g(DType::F32);
  EXPECT_EQ(compute_cast(m).dtype(), DType::F32);
  Tensor i = zeros({3}, DType::I64);
  EXPECT_EQ(compute_cast(i).dtype(), DType::I64);  // integers are never cast
  EXPECT_EQ(cast_like(m, ones({2}, DType::F32)).dtype(), DType::F32);
  EXPECT_FALSE(cast_like(Tensor(), m).defined());
  EXPECT_EQ(loss_logits(ones({2}, DType::BF16)).dtype(), DType::F32);
}

// f64 masters with f32 compute against the pure f64 model: the loss to 1e-5 relative, every
// master gradient close, and the masters and their gradients still f64.
void check_against_f64(bool tied) {
  const ModelConfig cfg = tiny(tied);
  Model ref(cfg, 5), mp(cfg, 5);
  ref.to(DType::F64);
  mp.to(DType::F64);
  const Batch b = batch(11);

  Tensor ref_loss = model_loss(ref, b.ids, b.targets);
  ref_loss.backward();
  Tensor loss;
  {
    PrecisionGuard g(DType::F32);
    EXPECT_EQ(model_logits(mp, b.ids).dtype(), DType::F32);  // the products ran in f32
    loss = model_loss(mp, b.ids, b.targets);
    loss.backward();
  }
  EXPECT_EQ(ref_loss.dtype(), DType::F64);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_NEAR(loss.item(), ref_loss.item(), 1e-5 * std::abs(ref_loss.item()));
  // f32 rounding alone makes the two differ: the test must see that the compute dtype took.
  EXPECT_NE(loss.item(), ref_loss.item());

  const NamedTensors rp = ref.named_parameters(), mpp = mp.named_parameters();
  ASSERT_EQ(rp.size(), mpp.size());
  for (size_t i = 0; i < rp.size(); ++i) {
    const std::string& name = rp[i].first;
    const Tensor& p = mpp[i].second;
    EXPECT_EQ(p.dtype(), DType::F64) << name;
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    EXPECT_EQ(p.grad().dtype(), DType::F64) << name;
    const Tensor& want = rp[i].second.grad();
    // f32 compute: ~1e-7 relative per op, a few hundred ops deep; 1e-4 of the tensor's scale.
    EXPECT_LE(max_abs_diff(p.grad(), want), 1e-4 * max_abs(want) + 1e-12) << name;
  }
}

TEST(MixedPrecision, F64MastersF32ComputeMatchF64TiedHead) { check_against_f64(true); }
TEST(MixedPrecision, F64MastersF32ComputeMatchF64UntiedHead) { check_against_f64(false); }

// AdamW steps on f64 masters fed by f32-compute gradients track the all-f64 run, and the
// moments stay f64.
TEST(MixedPrecision, TrainingStepsTrackTheF64Run) {
  const ModelConfig cfg = tiny(true);
  Model ref(cfg, 3), mp(cfg, 3);
  ref.to(DType::F64);
  mp.to(DType::F64);
  AdamW opt_ref(default_param_groups(ref.named_parameters(), 0.1)),
      opt_mp(default_param_groups(mp.named_parameters(), 0.1));
  for (const auto& [name, t] : opt_mp.state_dict())
    if (name != "step") {
      EXPECT_EQ(t.dtype(), DType::F64) << name;
    }

  std::vector<double> ref_losses, mp_losses;
  const double lr = 1e-2;
  const Batch b = batch(100);  // one batch, so that a few steps visibly lower the loss
  for (int step = 0; step < 6; ++step) {
    Tensor l = model_loss(ref, b.ids, b.targets);
    l.backward();
    ref_losses.push_back(l.item());
    const double nr = opt_ref.clip_grad_norm_(1.0);
    opt_ref.step(lr);
    opt_ref.zero_grad();
    double nm;
    {
      PrecisionGuard g(DType::F32);
      Tensor lm = model_loss(mp, b.ids, b.targets);
      lm.backward();
      mp_losses.push_back(lm.item());
      nm = opt_mp.clip_grad_norm_(1.0);
      opt_mp.step(lr);
    }
    opt_mp.zero_grad();
    EXPECT_NEAR(nm, nr, 1e-4 * nr) << "step " << step;
  }
  for (size_t i = 0; i < ref_losses.size(); ++i)
    EXPECT_NEAR(mp_losses[i], ref_losses[i], 1e-5 * std::abs(ref_losses[i])) << "step " << i;
  EXPECT_LT(ref_losses.back(), ref_losses.front());  // the steps did train

  const NamedTensors rp = ref.named_parameters(), mpp = mp.named_parameters();
  for (size_t i = 0; i < rp.size(); ++i) {
    EXPECT_EQ(mpp[i].second.dtype(), DType::F64) << rp[i].first;
    // Adam's step is ~lr per element whatever the gradient's size, so a tiny gradient
    // difference can flip an element's early steps: compare against lr, not the weights.
    EXPECT_LE(max_abs_diff(mpp[i].second, rp[i].second), 0.05 * lr) << rp[i].first;
  }
  for (const auto& [name, t] : opt_mp.state_dict())
    if (name != "step") {
      EXPECT_EQ(t.dtype(), DType::F64) << name;
    }
}

// Recomputation reruns the forward inside backward: under the same guard it recomputes in the
// compute dtype, so the gradients are those of the stored forward, bit for bit.
TEST(MixedPrecision, RecomputationRecomputesInTheComputeDtype) {
  const ModelConfig cfg = tiny(true);
  Model a(cfg, 6), b(cfg, 6);
  a.to(DType::F64);
  b.to(DType::F64);
  b.set_recompute(true);
  const Batch bt = batch(31);
  PrecisionGuard g(DType::F32);
  Tensor la = model_loss(a, bt.ids, bt.targets), lb = model_loss(b, bt.ids, bt.targets);
  la.backward();
  lb.backward();
  EXPECT_EQ(la.item(), lb.item());
  const NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_TRUE(pb[i].second.grad().defined()) << pa[i].first;
    EXPECT_EQ(pb[i].second.grad().dtype(), DType::F64) << pa[i].first;
    EXPECT_EQ(max_abs_diff(pb[i].second.grad(), pa[i].second.grad()), 0.0) << pa[i].first;
  }
}

// f32 masters: model_loss is Model::loss, and a compute dtype equal to the masters' casts
// nothing. Loss and every gradient bit for bit.
TEST(MixedPrecision, F32MastersAreUnchangedBitForBit) {
  const ModelConfig cfg = parse_model_config_string(testing::kTinyModelYaml, "tiny.yaml");  // with meta tokens
  Model a(cfg, 9), b(cfg, 9), c(cfg, 9);
  const Batch bt = batch(21);
  Tensor la = a.loss(bt.ids, bt.targets);
  la.backward();
  Tensor lb = model_loss(b, bt.ids, bt.targets);
  lb.backward();
  Tensor lc;
  {
    PrecisionGuard g(DType::F32);
    lc = c.loss(bt.ids, bt.targets);
    lc.backward();
  }
  EXPECT_TRUE(bitwise_equal(lb, la));
  EXPECT_TRUE(bitwise_equal(lc, la));
  const NamedTensors pa = a.named_parameters(), pb = b.named_parameters(), pc = c.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(bitwise_equal(pb[i].second.grad(), pa[i].second.grad())) << pa[i].first;
    EXPECT_TRUE(bitwise_equal(pc[i].second.grad(), pa[i].second.grad())) << pa[i].first;
  }
}

}  // namespace
}  // namespace hymba::train
