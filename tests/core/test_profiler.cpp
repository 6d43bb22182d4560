// The op-family profiler (core/profiler.h): nothing recorded while off, self time for nested
// scopes (no double counting), aggregation across threads, scopes inside OpenMP parallel
// regions ignored, and the family of every kernel name.
#include <gtest/gtest.h>

#include <omp.h>

#include <chrono>
#include <thread>

#include "core/profiler.h"

using namespace hymba;

namespace {

void busy_wait_ms(double ms) {
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() < ms) {
  }
}

const profiler::Entry* find(const std::vector<profiler::Entry>& es, const std::string& name) {
  for (const auto& e : es)
    if (e.name == name) return &e;
  return nullptr;
}

struct ProfilerOn {
  ProfilerOn() {
    profiler::reset();
    profiler::set_enabled(true);
  }
  ~ProfilerOn() { profiler::set_enabled(false); }
};

}  // namespace

TEST(Profiler, RecordsNothingWhileOff) {
  profiler::set_enabled(false);
  profiler::reset();
  { profiler::Scope s("off_scope"); }
  EXPECT_TRUE(profiler::snapshot().empty());
}

// The synchronizer (a device synchronize on CUDA) runs at both ends of every recording scope,
// inside the timed interval of the enclosing scope, and never while the profiler is off.
int g_sync_calls = 0;
TEST(Profiler, SynchronizerRunsAtBothEndsOfRecordingScopes) {
  g_sync_calls = 0;
  profiler::set_synchronizer(+[] { ++g_sync_calls; });
  profiler::set_enabled(false);
  { profiler::Scope s("sync_off_scope"); }
  EXPECT_EQ(g_sync_calls, 0);
  {
    ProfilerOn on;
    profiler::Scope outer("sync_outer");
    { profiler::Scope inner("sync_inner"); }
  }
  EXPECT_EQ(g_sync_calls, 4);
  profiler::set_synchronizer(nullptr);
  {
    ProfilerOn on;
    profiler::Scope s("sync_none");
  }
  EXPECT_EQ(g_sync_calls, 4);
}

TEST(Profiler, NestedScopesCountSelfTimeOnly) {
  ProfilerOn on;
  auto t0 = std::chrono::steady_clock::now();
  {
    profiler::Scope outer("outer_op");
    busy_wait_ms(20);
    for (int i = 0; i < 2; ++i) {
      profiler::Scope inner("inner_op");
      busy_wait_ms(15);
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto es = profiler::snapshot();
  const auto* o = find(es, "outer_op");
  const auto* i = find(es, "inner_op");
  ASSERT_TRUE(o && i);
  EXPECT_EQ(o->calls, 1);
  EXPECT_EQ(i->calls, 2);
  // Busy waits last at least their time (more on a loaded machine); the outer scope's self
  // time excludes the inner ones, so the self times add up to the wall time, never more.
  EXPECT_GE(i->self_seconds, 0.030);
  EXPECT_GE(o->self_seconds, 0.020);
  EXPECT_LE(o->self_seconds + i->self_seconds, wall + 1e-6);
  EXPECT_GT(o->self_seconds + i->self_seconds, 0.8 * wall);
}

TEST(Profiler, AggregatesAcrossThreads) {
  ProfilerOn on;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([] {
      for (int k = 0; k < 1000; ++k) profiler::Scope s("threaded_op");
    });
  for (auto& t : ts) t.join();
  auto es = profiler::snapshot();
  const auto* e = find(es, "threaded_op");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->calls, 4000);
}

TEST(Profiler, ScopesInsideOpenMPRegionsAreIgnored) {
  ProfilerOn on;
  {
    profiler::Scope s("region_caller");
#pragma omp parallel num_threads(2)
    { profiler::Scope w("worker_scope"); }
  }
  auto es = profiler::snapshot();
  EXPECT_TRUE(find(es, "region_caller"));
  EXPECT_FALSE(find(es, "worker_scope"));
}

TEST(Profiler, FamiliesOfKernelNames) {
  const std::pair<const char*, const char*> cases[] = {
      {"matmul", "matmul"},
      {"matmul_out", "matmul"},
      {"attention_forward", "attention"},
      {"attention_backward", "attention"},
      {"selective_scan_backward", "selective scan"},
      {"causal_conv1d_forward", "conv1d"},
      {"rms_norm_backward", "norm"},
      {"embedding_backward", "embedding"},
      {"embed_with_meta_forward", "meta tokens"},
      {"drop_meta_backward", "meta tokens"},
      {"cross_entropy_forward", "cross-entropy"},
      {"log_softmax_forward", "softmax"},
      {"softmax_backward", "softmax"},
      {"rope", "rope"},
      {"adamw_step", "adamw"},
      {"binary_out", "elementwise"},
      {"swiglu_packed_backward", "elementwise"},
      {"sum_of_squares", "elementwise"},
      {"copy_", "copy"},
      {"fill_", "copy"},
      {"LinearBackward", "autograd"},
      {"AccumulateGrad", "autograd"},
      {"something_new", "other"},
  };
  for (const auto& [name, fam] : cases) EXPECT_STREQ(profiler::family_of(name), fam) << name;

  std::vector<profiler::Entry> es = {{"matmul", 3, 1.0}, {"matmul_out", 1, 0.5}, {"rope", 2, 0.25}};
  auto fs = profiler::by_family(es);
  ASSERT_EQ(fs.size(), 2u);
  EXPECT_EQ(fs[0].family, "matmul");
  EXPECT_EQ(fs[0].calls, 4);
  EXPECT_DOUBLE_EQ(fs[0].self_seconds, 1.5);
  EXPECT_EQ(fs[1].family, "rope");
}
