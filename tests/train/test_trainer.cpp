// The trainer loop on a tiny model and tiny generated data: exact resume, learning, the
// non-finite step logic, keep-last-K, stop requests, metrics and micro-batch invariance.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/parallel.h"
#include "data/shard_writer.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/trainer.h"
#include "tests/train/train_test_util.h"

namespace hymba::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const char* const kModel = testing::kTinyModelYaml;

// The tiny model's ops are far too small to pay for threads; on a loaded machine OpenMP
// barriers make them 20x slower. One thread per test, restored after.
struct OneThread {
  int prev = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(prev); }
};

struct TempDir : testing::TempDir {
  OneThread one_thread;
  TempDir() : testing::TempDir("hymba_trainer") {}
};

using testing::write_split;

fs::path make_data(const fs::path& root) {
  fs::path d = root / "data";
  fs::create_directories(d);
  write_split(d, "train", 60, 1);
  write_split(d, "val", 6, 2);
  return d;
}

TrainConfig make_config(const fs::path& data, const fs::path& out, const std::vector<std::string>& sets = {}) {
  std::string y = std::string("model:") + kModel + "data: {train: " + data.string() +
                  ", seq_len: 16, mode: random}\n"
                  "optim: {lr: 0.01, weight_decay: 0.1, grad_clip: 1.0}\n"
                  "schedule: {kind: cosine, warmup_steps: 2, min_lr: 0.001}\n"
                  "run: {steps: 6, global_batch: 8, micro_batch: 4, seed: 11, log_every: 1000, out_dir: " +
                  out.string() + ", keep_last: 0}\n";
  return parse_train_config_string(y, "test.yaml", sets);
}

TrainerOptions quiet() {
  TrainerOptions o;
  o.log = false;
  return o;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor x = a.detach().contiguous(), y = b.detach().contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

TEST(Trainer, ResumeIsBitIdentical) {
  TempDir t;
  fs::path data = make_data(t.path);
  const int N = 3;
  // Both runs share the schedule of the full 2N steps.
  std::vector<std::string> sets = {"schedule.total_steps=" + std::to_string(2 * N)};

  auto full_sets = sets;
  full_sets.push_back("run.steps=" + std::to_string(2 * N));
  Trainer straight(make_config(data, t.path / "straight", full_sets), quiet());
  straight.run();

  auto half_sets = sets;
  half_sets.push_back("run.steps=" + std::to_string(N));
  std::string ckpt;
  {
    Trainer first(make_config(data, t.path / "split", half_sets), quiet());
    TrainResult r = first.run();
    ckpt = r.last_checkpoint;
    EXPECT_EQ(r.step, N);
  }
  ASSERT_TRUE(fs::exists(ckpt));
  // Scramble the process-wide RNG: resume must restore it.
  manual_seed(999);
  Trainer second(make_config(data, t.path / "split", full_sets), quiet());
  EXPECT_EQ(second.resume("auto"), ckpt);
  EXPECT_EQ(second.step(), N);
  second.run();

  EXPECT_EQ(second.step(), straight.step());
  EXPECT_EQ(second.tokens_seen(), straight.tokens_seen());
  auto a = straight.model().state_dict(), b = second.model().state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(bit_equal(a[i].second, b[i].second)) << a[i].first;
  auto oa = straight.optimizer().state_dict(), ob = second.optimizer().state_dict();
  ASSERT_EQ(oa.size(), ob.size());
  for (size_t i = 0; i < oa.size(); ++i) EXPECT_TRUE(bit_equal(oa[i].second, ob[i].second)) << oa[i].first;

  // The replayed part of the metrics is not duplicated: one train record per step.
  auto recs = read_metrics((t.path / "split" / "metrics.jsonl").string());
  int train_records = 0;
  for (const auto& r : recs) train_records += r["type"] == "train";
  EXPECT_EQ(train_records, 2 * N);
  EXPECT_TRUE(fs::exists(t.path / "split" / "config.yaml"));

  // Resuming with another model is refused with a clear message.
  Trainer other(make_config(data, t.path / "split", {"model.num_layers=1"}), quiet());
  try {
    other.resume(ckpt);
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("model_config"));
  }
}

TEST(Trainer, LossDecreasesOnLearnableStream) {
  TempDir t;
  fs::path data = make_data(t.path);
  Trainer tr(make_config(data, t.path / "run",
                         {"run.steps=30", "optim.lr=0.05", "run.eval_every=15", "schedule.warmup_steps=3"}),
             quiet());
  ASSERT_TRUE(tr.has_val());
  const double before = tr.evaluate().loss;
  EXPECT_NEAR(before, std::log(64.0), 0.5);  // untrained: near uniform
  TrainResult r = tr.run();
  ASSERT_TRUE(r.last_eval.has_value());
  EXPECT_LT(r.last_eval->loss, 0.6 * before) << "val loss " << before << " -> " << r.last_eval->loss;
  EXPECT_NEAR(r.last_eval->perplexity, std::exp(r.last_eval->loss), 1e-9);
  auto recs = read_metrics((t.path / "run" / "metrics.jsonl").string());
  int evals = 0;
  for (const auto& rec : recs)
    if (rec["type"] == "eval") {
      ++evals;
      EXPECT_TRUE(rec["val_loss"].is_number());
    }
  EXPECT_EQ(evals, 2);  // steps 15 and 30
}

TEST(Trainer, NonFiniteStepsAreSkippedThenStop) {
  TempDir t;
  fs::path data = make_data(t.path);
  // Step 3 (0-based completed count 2) gets a NaN loss; step 5 a NaN gradient.
  TrainerHooks hooks;
  hooks.after_backward = [](int64_t step, double& loss, const std::vector<Tensor>& params) {
    if (step == 2) loss = std::numeric_limits<double>::quiet_NaN();
    if (step == 4) params[0].grad().data<float>()[0] = std::numeric_limits<float>::infinity();
  };
  Trainer tr(make_config(data, t.path / "run"), quiet(), hooks);
  for (int i = 0; i < 2; ++i) EXPECT_FALSE(tr.train_step().skipped);
  auto before = tr.model().state_dict();
  std::vector<Tensor> copies;
  for (auto& [n, p] : before) copies.push_back(p.clone());
  StepStats s = tr.train_step();
  EXPECT_TRUE(s.skipped);
  EXPECT_TRUE(std::isnan(s.loss));
  EXPECT_EQ(tr.optimizer().step_count(), 2);
  EXPECT_EQ(tr.step(), 3);
  auto after = tr.model().state_dict();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(bit_equal(copies[i], after[i].second)) << after[i].first;
  EXPECT_FALSE(tr.train_step().skipped);
  s = tr.train_step();
  EXPECT_TRUE(s.skipped);
  EXPECT_TRUE(std::isinf(s.grad_norm));
  EXPECT_EQ(tr.optimizer().step_count(), 3);
  EXPECT_FALSE(tr.train_step().skipped);

  // max_bad_steps in a row stop the run, naming the last good checkpoint, which survives.
  TrainerHooks always_bad;
  always_bad.after_backward = [](int64_t step, double& loss, const std::vector<Tensor>&) {
    if (step >= 4) loss = std::numeric_limits<double>::quiet_NaN();
  };
  Trainer bad(make_config(data, t.path / "bad", {"run.ckpt_every=2", "run.max_bad_steps=3", "run.steps=20"}),
              quiet(), always_bad);
  try {
    bad.run();
    ADD_FAILURE() << "expected TrainingDiverged";
  } catch (const TrainingDiverged& e) {
    std::string m = e.what();
    EXPECT_THAT(m, HasSubstr("3 steps in a row"));
    EXPECT_THAT(m, HasSubstr("ckpt_00000004.h5"));
  }
  EXPECT_EQ(bad.step(), 7);
  auto ckpts = list_checkpoints((t.path / "bad").string());
  ASSERT_FALSE(ckpts.empty());
  EXPECT_EQ(fs::path(ckpts.back()).filename(), "ckpt_00000004.h5");
  EXPECT_EQ(load_checkpoint(ckpts.back()).step, 4);
}

TEST(Trainer, KeepLastAndStopRequest) {
  TempDir t;
  fs::path data = make_data(t.path);
  {
    Trainer tr(make_config(data, t.path / "run", {"run.ckpt_every=2", "run.keep_last=2", "run.steps=10"}), quiet());
    TrainResult r = tr.run();
    EXPECT_FALSE(r.interrupted);
  }
  auto ckpts = list_checkpoints((t.path / "run").string());
  ASSERT_EQ(ckpts.size(), 2u);
  EXPECT_EQ(fs::path(ckpts[0]).filename(), "ckpt_00000008.h5");
  EXPECT_EQ(fs::path(ckpts[1]).filename(), "ckpt_00000010.h5");
  for (const auto& e : fs::directory_iterator(t.path / "run"))
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();

  // A stop request (what SIGINT/SIGTERM set) ends the run after the current step, with a checkpoint.
  Trainer tr(make_config(data, t.path / "stop", {"run.steps=10"}), quiet());
  Trainer::request_stop();
  TrainResult r = tr.run();
  Trainer::clear_stop();
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.step, 1);
  EXPECT_EQ(fs::path(r.last_checkpoint).filename(), "ckpt_00000001.h5");
  EXPECT_TRUE(fs::exists(r.last_checkpoint));
}

// The loss scaling makes the accumulated gradient independent of the micro-batch split.
TEST(Trainer, MicroBatchSplitDoesNotChangeTheStep) {
  TempDir t;
  fs::path data = make_data(t.path);
  Trainer whole(make_config(data, t.path / "a", {"run.micro_batch=8", "optim.grad_clip=0"}), quiet());
  Trainer split(make_config(data, t.path / "b", {"run.micro_batch=2", "optim.grad_clip=0"}), quiet());
  StepStats sa = whole.train_step(), sb = split.train_step();
  EXPECT_NEAR(sa.loss, sb.loss, 1e-5);
  EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-4 * sa.grad_norm);
  auto a = whole.model().state_dict(), b = split.model().state_dict();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    for (int64_t j = 0; j < x.numel(); ++j)
      worst = std::max(worst, double(std::fabs(x.data<float>()[j] - y.data<float>()[j])));
  }
  EXPECT_LT(worst, 1e-5);  // first AdamW step moves by ~lr = 0.005 (warmup 1/2 of 0.01)
}

}  // namespace
}  // namespace hymba::train

namespace hymba::train {
namespace {

// The unigram baseline against its definition: add-one smoothed train frequencies, scored on
// every val token after the first.
TEST(Eval, UnigramBaselineMatchesDefinition) {
  TempDir t;
  fs::path data = make_data(t.path);
  auto tr = data::TokenDataset::open(data.string(), "train");
  auto va = data::TokenDataset::open(data.string(), "val");
  std::vector<int32_t> a(tr->num_tokens()), b(va->num_tokens());
  tr->read(0, a.size(), a.data());
  va->read(0, b.size(), b.data());
  std::vector<double> c(64, 1.0);
  for (int32_t x : a) c[size_t(x)] += 1.0;
  double nll = 0.0;
  for (size_t i = 1; i < b.size(); ++i) nll -= std::log(c[size_t(b[i])] / (double(a.size()) + 64.0));
  EXPECT_NEAR(unigram_baseline_loss(*tr, *va), nll / double(b.size() - 1), 1e-12);
}

}  // namespace
}  // namespace hymba::train
