// Data-parallel training on the job's ranks against one-process references computed inside
// the same job (each rank runs the reference alone, with a single-process communicator):
//   - W ranks x micro-batch b = 1 rank x micro-batch W*b after K steps (gradient
//     accumulation, bucketed overlapped reduction, clipping, weight decay);
//   - ZeRO-1 = plain DDP (parameters and the gathered optimizer state);
//   - a checkpoint written by W ZeRO-1 ranks continues identically on 1 rank, on W plain
//     DDP ranks and on W ZeRO-1 ranks;
//   - rank 0's initial parameters win.
// "Identically" is up to fp32 rounding: the sums over ranks are taken in another order than
// one process's accumulation, so the bound is 1e-6 relative (norm of the difference over the
// norm of the reference, per tensor).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "train/distributed.h"
#include "train/trainer.h"
#include "tests/train/train_test_util.h"

namespace hymba::train {
namespace {

namespace fs = std::filesystem;

constexpr double kTol = 1e-6;

// A directory every rank of the job sees (rank 0's name), removed at the end.
struct SharedDir {
  std::shared_ptr<Communicator> comm = job_communicator();
  fs::path path;
  SharedDir() {
    Tensor id = from_vector<int64_t>({int64_t(::getpid())}, {1});
    comm->broadcast(id, 0);
    path = fs::temp_directory_path() /
           ("hymba_dist_" + std::to_string(id.data<int64_t>()[0]) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    if (comm->rank() == 0) {
      fs::remove_all(path);
      fs::create_directories(path);
      write_data();
    }
    comm->barrier();
  }
  ~SharedDir() {
    comm->barrier();
    if (comm->rank() == 0) fs::remove_all(path);
  }

  // The learnable stream of tests/train/train_test_util.h.
  void write_data() {
    const fs::path d = path / "data";
    fs::create_directories(d);
    testing::write_split(d, "train", 60, 1);
  }
};

TrainConfig config(const fs::path& root, const std::string& out, int64_t global_batch, int64_t micro,
                   const std::vector<std::string>& sets = {}) {
  std::string y = std::string("model:") + testing::kTinyModelYaml + "data: {train: " + (root / "data").string() +
                  ", seq_len: 16, mode: random}\n"
                  "optim: {lr: 0.01, weight_decay: 0.1, grad_clip: 1.0}\n"
                  "schedule: {kind: cosine, warmup_steps: 2, min_lr: 0.001}\n"
                  "run: {steps: 4, global_batch: " +
                  std::to_string(global_batch) + ", micro_batch: " + std::to_string(micro) +
                  ", seed: 11, log_every: 1000, keep_last: 0, ddp_bucket_mb: 0.004, out_dir: " +
                  (root / out).string() + "}\n";
  return parse_train_config_string(y, "dist_test.yaml", sets);
}

TrainerOptions opts(std::shared_ptr<Communicator> comm, bool files = false) {
  TrainerOptions o;
  o.log = false;
  o.write_files = files;
  o.comm = std::move(comm);
  return o;
}

double rel_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Largest per-tensor relative difference; fails on a name or shape mismatch.
double max_rel_diff(const NamedTensors& a, const NamedTensors& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << a[i].first;
    if (a[i].second.shape() != b[i].second.shape()) return 1e30;
    worst = std::max(worst, rel_diff(a[i].second, b[i].second));
  }
  return worst;
}

int world() { return job_world(); }

#define REQUIRE_RANKS()                                                                            \
  if (world() < 2) GTEST_SKIP() << "needs several ranks: run under mpirun -np 2 (ctest does)"

constexpr int64_t kMicro = 2;  // b

TEST(Ddp, RanksWithMicroBatchBMatchOneProcessWithWTimesB) {
  REQUIRE_RANKS();
  SharedDir dir;
  const int W = world();
  const int64_t global = 2 * W * kMicro;  // two micro-steps per rank, and for the reference
  Trainer ddp(config(dir.path, "ddp", global, kMicro), opts(dir.comm));
  Trainer ref(config(dir.path, "ref", global, W * kMicro), opts(nullptr));
  ASSERT_EQ(ddp.world(), W);
  ASSERT_EQ(ref.world(), 1);
  for (int k = 0; k < 3; ++k) {
    StepStats a = ddp.train_step(), b = ref.train_step();
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_NEAR(a.loss, b.loss, kTol * b.loss) << "step " << k;
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-5 * b.grad_norm) << "step " << k;
    EXPECT_FALSE(a.skipped);
    EXPECT_GE(a.comm_seconds, 0.0);
  }
  const double d = max_rel_diff(ddp.model().state_dict(), ref.model().state_dict());
  EXPECT_LE(d, kTol);
  const double m = max_rel_diff(ddp.optimizer().state_dict(), ref.optimizer().state_dict());
  EXPECT_LE(m, 1e-5) << "AdamW moments";
  if (dir.comm->rank() == 0) std::printf("  DDP vs one process after 3 steps: params %.2e, moments %.2e\n", d, m);
}

TEST(Ddp, ZeroOneMatchesPlainDdp) {
  REQUIRE_RANKS();
  SharedDir dir;
  const int W = world();
  const int64_t global = 2 * W * kMicro;
  Trainer ddp(config(dir.path, "ddp", global, kMicro), opts(dir.comm));
  Trainer zero(config(dir.path, "zero", global, kMicro, {"optim.zero=1"}), opts(dir.comm));
  ASSERT_NE(zero.sharded_optimizer(), nullptr);
  EXPECT_THROW(zero.optimizer(), Error);
  // The moments are sharded: about 1/W of them on each rank.
  const int64_t total = ddp.model().num_parameters();
  EXPECT_LE(zero.sharded_optimizer()->shard_numel() * W, total + 64 * W);
  EXPECT_GE(zero.sharded_optimizer()->shard_numel() * W, total);
  for (int k = 0; k < 3; ++k) {
    StepStats a = ddp.train_step(), b = zero.train_step();
    EXPECT_NEAR(a.loss, b.loss, kTol * b.loss) << "step " << k;
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-9 * a.grad_norm) << "step " << k;
  }
  const double d = max_rel_diff(ddp.model().state_dict(), zero.model().state_dict());
  EXPECT_LE(d, kTol);
  // The gathered state has AdamW's exact layout (the checkpoint format).
  const double m = max_rel_diff(ddp.optimizer().state_dict(), zero.sharded_optimizer()->state_dict());
  EXPECT_LE(m, 1e-5);
  EXPECT_EQ(zero.sharded_optimizer()->step_count(), 3);
  if (dir.comm->rank() == 0) std::printf("  ZeRO-1 vs DDP after 3 steps: params %.2e, moments %.2e\n", d, m);
  // Every rank holds the same parameters after the all-gather.
  for (const auto& [name, p] : zero.model().state_dict()) {
    Tensor mine = p.detach().clone(), root = p.detach().clone();
    dir.comm->broadcast(root, 0);
    ASSERT_EQ(rel_diff(mine, root), 0.0) << name;
  }
}

TEST(Ddp, CheckpointOfRanksContinuesOnOneRankAndOnRanks) {
  REQUIRE_RANKS();
  SharedDir dir;
  const int W = world();
  const int64_t global = 2 * W * kMicro;
  std::string ckpt;
  NamedTensors straight;
  {
    Trainer zero(config(dir.path, "run", global, kMicro, {"optim.zero=1"}), opts(dir.comm, /*files=*/true));
    zero.train_step();
    zero.train_step();
    ckpt = zero.save_checkpoint();  // collective: gathers the moment shards to rank 0
    dir.comm->barrier();
    zero.train_step();
    zero.train_step();
    straight = zero.model().state_dict();
  }
  ASSERT_TRUE(fs::exists(ckpt)) << ckpt;

  auto continue_from = [&](Trainer& t) {
    t.load(ckpt);
    EXPECT_EQ(t.step(), 2);
    t.train_step();
    t.train_step();
    return max_rel_diff(t.model().state_dict(), straight);
  };
  Trainer one(config(dir.path, "one", global, W * kMicro), opts(nullptr));
  const double d1 = continue_from(one);
  EXPECT_LE(d1, kTol) << "resumed on one rank";
  Trainer ddp(config(dir.path, "ddp", global, kMicro), opts(dir.comm));
  const double d2 = continue_from(ddp);
  EXPECT_LE(d2, kTol) << "resumed on plain DDP";
  Trainer zero(config(dir.path, "zero", global, kMicro, {"optim.zero=1"}), opts(dir.comm));
  const double d3 = continue_from(zero);
  EXPECT_LE(d3, 1e-7) << "resumed on the same ZeRO-1 ranks";
  if (dir.comm->rank() == 0)
    std::printf("  resume of a %d-rank ZeRO-1 checkpoint: 1 rank %.2e, DDP %.2e, ZeRO-1 %.2e\n", W, d1, d2, d3);
}

TEST(Ddp, RankZeroParametersWin) {
  REQUIRE_RANKS();
  SharedDir dir;
  const int W = world();
  // A different seed per rank gives different initial parameters; the broadcast replaces them.
  Trainer t(config(dir.path, "seed", 2 * W * kMicro, kMicro, {"run.seed=" + std::to_string(5 + dir.comm->rank())}),
            opts(dir.comm));
  for (const auto& [name, p] : t.model().state_dict()) {
    Tensor root = p.detach().clone();
    dir.comm->broadcast(root, 0);
    ASSERT_EQ(rel_diff(p, root), 0.0) << name;
  }
}

}  // namespace
}  // namespace hymba::train
