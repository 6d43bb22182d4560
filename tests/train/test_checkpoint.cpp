// Checkpoint files: every field round-trips bit for bit, the write is atomic (no .tmp left),
// a damaged or incomplete file is a UserError naming the file and the key, and the run
// directory helpers (list, latest, keep-last-K) order by step.
#include <gtest/gtest.h>
#include <gmock/gmock.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/ops.h"
#include "core/error.h"
#include "layers/model.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "tests/train/train_test_util.h"

namespace hymba::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const char* const kModel = testing::kTinyModelYaml;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("hymba_ckpt") {}
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor x = a.detach().contiguous(), y = b.detach().contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// A model after one AdamW step, so the moments are non-trivial.
struct Trained {
  std::unique_ptr<Model> model;
  std::unique_ptr<AdamW> opt;
  Trained() {
    ModelConfig cfg = parse_model_config_string(kModel);
    model = std::make_unique<Model>(cfg, 3);
    opt = std::make_unique<AdamW>(default_param_groups(model->named_parameters(), 0.1));
    std::vector<int32_t> ids(2 * 9);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 1) % 64);
    model->loss(from_vector(ids, {2, 9}, DType::I32)).backward();
    opt->step(1e-2);
    opt->zero_grad();
  }
  Checkpoint checkpoint() const {
    Checkpoint ck;
    ck.config_yaml = "run: {steps: 5}\n";
    ck.model_config_yaml = dump_model_config(model->config());
    ck.model = model->state_dict();
    ck.optimizer = opt->state_dict();
    ck.step = 1234;
    ck.tokens_seen = 987654321012LL;
    ck.loader_state = {{"mode", "random"}, {"rng_counter", 17}};
    ck.rng_state = {{"seed", 5}, {"offset", 99}};
    ck.meta = {{"bad_streak", 0}, {"note", "x"}};
    return ck;
  }
};

TEST(Checkpoint, RoundTripsEveryField) {
  TempDir d;
  Trained t;
  Checkpoint ck = t.checkpoint();
  // Extra dtypes and a 0-dim tensor must round-trip too.
  ck.model.emplace_back("extra.f64", from_vector<double>({1.5, -2.25}, {2}));
  ck.model.emplace_back("extra.i64", from_vector<int64_t>({1LL << 40}, {1}));
  ck.model.emplace_back("extra.nc", randn({3, 4}).t());  // non-contiguous
  const std::string path = (d.path / checkpoint_name(1234)).string();
  save_checkpoint(path, ck);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(fs::path(path).filename(), "ckpt_00001234.h5");

  Checkpoint r = load_checkpoint(path);
  EXPECT_EQ(r.config_yaml, ck.config_yaml);
  EXPECT_EQ(r.model_config_yaml, ck.model_config_yaml);
  EXPECT_EQ(r.step, 1234);
  EXPECT_EQ(r.tokens_seen, 987654321012LL);
  EXPECT_EQ(r.loader_state, ck.loader_state);
  EXPECT_EQ(r.rng_state, ck.rng_state);
  EXPECT_EQ(r.meta, ck.meta);
  ASSERT_EQ(r.model.size(), ck.model.size());
  for (size_t i = 0; i < ck.model.size(); ++i) {
    EXPECT_EQ(r.model[i].first, ck.model[i].first);  // order kept
    EXPECT_TRUE(bit_equal(r.model[i].second, ck.model[i].second)) << ck.model[i].first;
  }
  ASSERT_EQ(r.optimizer.size(), ck.optimizer.size());
  for (size_t i = 0; i < ck.optimizer.size(); ++i) {
    EXPECT_EQ(r.optimizer[i].first, ck.optimizer[i].first);
    EXPECT_TRUE(bit_equal(r.optimizer[i].second, ck.optimizer[i].second)) << ck.optimizer[i].first;
  }
  EXPECT_EQ(r.optimizer.back().first, "step");
  EXPECT_EQ(r.optimizer.back().second.dim(), 0);

  EXPECT_TRUE(load_checkpoint(path, /*with_optimizer=*/false).optimizer.empty());

  // The restored optimizer continues from the same state.
  Trained fresh;
  AdamW opt2(default_param_groups(fresh.model->named_parameters(), 0.1));
  opt2.load_state_dict(r.optimizer);
  EXPECT_EQ(opt2.step_count(), 1);
}

TEST(Checkpoint, ModelFromCheckpointGivesSameLogits) {
  TempDir d;
  Trained t;
  const std::string path = (d.path / "m.h5").string();
  save_checkpoint(path, t.checkpoint());
  auto m = load_model_from_checkpoint(path);
  std::vector<int32_t> ids = {1, 5, 9, 63, 0, 2};
  Tensor a, b;
  {
    NoGradGuard ng;
    a = t.model->forward(from_vector(ids, {1, 6}, DType::I32));
    b = m->forward(from_vector(ids, {1, 6}, DType::I32));
  }
  EXPECT_TRUE(bit_equal(a, b));
}

void delete_link(const std::string& file, const std::string& link, bool attribute) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  if (attribute)
    ASSERT_GE(H5Adelete(f, link.c_str()), 0);
  else
    ASSERT_GE(H5Ldelete(f, link.c_str(), H5P_DEFAULT), 0);
  H5Fclose(f);
}

std::string load_error(const std::string& path, bool with_optimizer = true) {
  try {
    load_checkpoint(path, with_optimizer);
  } catch (const UserError& e) {
    return e.what();
  }
  return "<no UserError>";
}

TEST(Checkpoint, MissingKeysAndCorruptionAreUserErrors) {
  TempDir d;
  Trained t;
  const std::string good = (d.path / "good.h5").string();
  save_checkpoint(good, t.checkpoint());

  const std::string no_param = (d.path / "no_param.h5").string();
  fs::copy_file(good, no_param);
  delete_link(no_param, "/model/layers.1.mlp.up_proj.weight", false);
  std::string m = load_error(no_param);
  EXPECT_THAT(m, HasSubstr("no_param.h5"));
  EXPECT_THAT(m, HasSubstr("model/layers.1.mlp.up_proj.weight"));

  const std::string no_moment = (d.path / "no_moment.h5").string();
  fs::copy_file(good, no_moment);
  delete_link(no_moment, "/optimizer/exp_avg_sq", false);
  m = load_error(no_moment);
  EXPECT_THAT(m, HasSubstr("no_moment.h5"));
  EXPECT_THAT(m, HasSubstr("optimizer/exp_avg_sq/"));
  EXPECT_EQ(load_error(no_moment, false), "<no UserError>");  // not read without the optimizer

  const std::string no_step = (d.path / "no_step.h5").string();
  fs::copy_file(good, no_step);
  delete_link(no_step, "step", true);
  m = load_error(no_step);
  EXPECT_THAT(m, HasSubstr("no_step.h5"));
  EXPECT_THAT(m, HasSubstr("'@step'"));

  const std::string garbage = (d.path / "garbage.h5").string();
  std::ofstream(garbage) << "this is not an HDF5 file";
  m = load_error(garbage);
  EXPECT_THAT(m, HasSubstr("garbage.h5"));

  // A truncated file (a copy cut short, not our atomic writer).
  const std::string cut = (d.path / "cut.h5").string();
  fs::copy_file(good, cut);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  m = load_error(cut);
  EXPECT_THAT(m, HasSubstr("cut.h5"));

  m = load_error((d.path / "absent.h5").string());
  EXPECT_THAT(m, HasSubstr("absent.h5"));
  EXPECT_THAT(m, HasSubstr("does not exist"));

  // A checkpoint whose weights do not match its model config.
  Checkpoint bad = t.checkpoint();
  bad.model.pop_back();
  const std::string short_model = (d.path / "short.h5").string();
  save_checkpoint(short_model, bad);
  try {
    load_model_from_checkpoint(short_model);
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("short.h5"));
  }
}

TEST(Checkpoint, ListLatestAndKeepLast) {
  TempDir d;
  EXPECT_EQ(latest_checkpoint(d.path.string()), "");
  EXPECT_TRUE(list_checkpoints((d.path / "nope").string()).empty());
  Trained t;
  Checkpoint ck = t.checkpoint();
  for (int64_t s : {30, 5, 100, 20}) {
    ck.step = s;
    save_checkpoint((d.path / checkpoint_name(s)).string(), ck);
  }
  std::ofstream(d.path / "ckpt_00000999.h5.tmp") << "stale";  // ignored
  std::ofstream(d.path / "notes.txt") << "x";
  auto all = list_checkpoints(d.path.string());
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(fs::path(all[0]).filename(), "ckpt_00000005.h5");
  EXPECT_EQ(fs::path(all[3]).filename(), "ckpt_00000100.h5");
  EXPECT_EQ(fs::path(latest_checkpoint(d.path.string())).filename(), "ckpt_00000100.h5");
  EXPECT_EQ(load_checkpoint(latest_checkpoint(d.path.string())).step, 100);

  EXPECT_TRUE(prune_checkpoints(d.path.string(), 0).empty());  // 0 keeps everything
  auto removed = prune_checkpoints(d.path.string(), 2);
  EXPECT_EQ(removed.size(), 2u);
  all = list_checkpoints(d.path.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(fs::path(all[0]).filename(), "ckpt_00000030.h5");
  EXPECT_EQ(fs::path(all[1]).filename(), "ckpt_00000100.h5");
}

}  // namespace
}  // namespace hymba::train
