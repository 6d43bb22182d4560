// LR schedules at their key steps (first step, end of warmup, mid-way, decay start, the
// last step, past the end) against the closed forms written out here, and config errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <numbers>

#include "core/error.h"
#include "train/lr_schedule.h"

using namespace hymba;
using namespace hymba::train;
using ::testing::HasSubstr;

namespace {

std::string user_error_of(const ScheduleParams& p) {
  try {
    make_lr_schedule(p);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

ScheduleParams params(const std::string& kind, double peak, double min, int64_t warmup, int64_t total) {
  ScheduleParams p;
  p.kind = kind;
  p.peak_lr = peak;
  p.min_lr = min;
  p.warmup_steps = warmup;
  p.total_steps = total;
  return p;
}

constexpr double kTol = 1e-15;  // closed forms evaluated the same way: only rounding differs

}  // namespace

TEST(LRSchedule, ConstantWithWarmup) {
  auto s = make_lr_schedule(params("constant", 1e-3, 0.0, 10, 0));
  EXPECT_NEAR(s->lr(0), 1e-3 * 1 / 10, kTol);   // first update: not zero
  EXPECT_NEAR(s->lr(4), 1e-3 * 5 / 10, kTol);
  EXPECT_DOUBLE_EQ(s->lr(9), 1e-3);              // last warmup update is at peak
  EXPECT_DOUBLE_EQ(s->lr(10), 1e-3);
  EXPECT_DOUBLE_EQ(s->lr(1000000), 1e-3);
  auto flat = make_lr_schedule(params("constant", 2e-4, 0.0, 0, 0));
  EXPECT_DOUBLE_EQ(flat->lr(0), 2e-4);
  EXPECT_THAT(s->describe(), HasSubstr("constant"));
}

TEST(LRSchedule, CosineKeySteps) {
  const double peak = 3e-3, mn = 1e-5;
  const int64_t W = 100, T = 1000;
  auto s = make_lr_schedule(params("cosine", peak, mn, W, T));
  auto cosine = [&](int64_t step) {
    double q = double(step + 1 - W) / double(T - W);
    return mn + (peak - mn) * 0.5 * (1 + std::cos(std::numbers::pi * q));
  };
  EXPECT_NEAR(s->lr(0), peak / 100, kTol);
  EXPECT_NEAR(s->lr(49), peak * 0.5, kTol);
  EXPECT_DOUBLE_EQ(s->lr(W - 1), peak);                      // end of warmup
  EXPECT_NEAR(s->lr(W), cosine(W), kTol);                    // first decaying update
  EXPECT_LT(s->lr(W), peak);
  EXPECT_NEAR(s->lr(549), mn + (peak - mn) * 0.5, 1e-15);   // half-way: u - W = (T - W) / 2
  EXPECT_NEAR(s->lr(800), cosine(800), kTol);
  EXPECT_DOUBLE_EQ(s->lr(T - 1), mn);                        // the last update is at min_lr
  EXPECT_DOUBLE_EQ(s->lr(T + 50), mn);
  // Monotone after warmup.
  for (int64_t i = W; i < T; ++i) ASSERT_LE(s->lr(i), s->lr(i - 1)) << i;
}

TEST(LRSchedule, WSDKeyStepsForEachShape) {
  // The paper's recipe: warmup 1%, peak 3e-3, decay to 1e-5 over the last 20%.
  const double peak = 3e-3, mn = 1e-5;
  const int64_t T = 1000, W = 10, S = 800;  // decay start = T - 0.2 T
  for (const char* shape : {"linear", "cosine", "1-sqrt"}) {
    ScheduleParams p = params("wsd", peak, mn, W, T);
    p.decay_fraction = 0.2;
    p.decay_shape = shape;
    auto s = make_lr_schedule(p);
    auto f = [&](double q) {
      if (std::string(shape) == "linear") return 1 - q;
      if (std::string(shape) == "cosine") return 0.5 * (1 + std::cos(std::numbers::pi * q));
      return 1 - std::sqrt(q);
    };
    SCOPED_TRACE(shape);
    EXPECT_NEAR(s->lr(0), peak / 10, kTol);
    EXPECT_DOUBLE_EQ(s->lr(W - 1), peak);       // end of warmup
    EXPECT_DOUBLE_EQ(s->lr(W), peak);           // stable
    EXPECT_DOUBLE_EQ(s->lr(500), peak);
    EXPECT_DOUBLE_EQ(s->lr(S - 1), peak);       // update S: last one at peak
    EXPECT_NEAR(s->lr(S), mn + (peak - mn) * f(1.0 / 200), kTol);  // decay starts
    EXPECT_NEAR(s->lr(899), mn + (peak - mn) * f(0.5), kTol);      // half-way through the decay
    EXPECT_DOUBLE_EQ(s->lr(T - 1), mn);         // last update at min_lr
    EXPECT_DOUBLE_EQ(s->lr(T + 3), mn);
    for (int64_t i = S; i < T; ++i) ASSERT_LE(s->lr(i), s->lr(i - 1)) << i;
    EXPECT_THAT(s->describe(), HasSubstr(shape));
  }
  // The default shape is 1-sqrt.
  auto d = make_lr_schedule(params("wsd", peak, mn, W, T));
  EXPECT_NEAR(d->lr(899), mn + (peak - mn) * (1 - std::sqrt(0.5)), kTol);
}

TEST(LRSchedule, BadValuesAreUserErrors) {
  EXPECT_EQ(user_error_of(params("foo", 1e-3, 0, 0, 10)),
            "schedule.kind: unknown value 'foo', expected constant, cosine or wsd");
  EXPECT_THAT(user_error_of(params("cosine", 0.0, 0, 0, 10)), HasSubstr("schedule.peak_lr"));
  EXPECT_THAT(user_error_of(params("cosine", std::nan(""), 0, 0, 10)), HasSubstr("schedule.peak_lr"));
  EXPECT_THAT(user_error_of(params("cosine", 1e-3, 2e-3, 0, 10)), HasSubstr("schedule.min_lr"));
  EXPECT_THAT(user_error_of(params("cosine", 1e-3, 0, 10, 10)), HasSubstr("schedule.warmup_steps"));
  EXPECT_THAT(user_error_of(params("constant", 1e-3, 0, -1, 10)), HasSubstr("schedule.warmup_steps"));
  EXPECT_THAT(user_error_of(params("wsd", 1e-3, 0, 0, 0)), HasSubstr("schedule.total_steps"));
  ScheduleParams p = params("wsd", 1e-3, 0, 0, 100);
  p.decay_shape = "exp";
  EXPECT_THAT(user_error_of(p), HasSubstr("schedule.decay_shape: unknown value 'exp'"));
  p.decay_shape = "linear";
  p.decay_fraction = 1.5;
  EXPECT_THAT(user_error_of(p), HasSubstr("schedule.decay_fraction"));
  p.decay_fraction = 0.5;
  p.warmup_steps = 60;  // 60 + 50 > 100
  EXPECT_THAT(user_error_of(p), HasSubstr("exceeds schedule.total_steps"));
  p.warmup_steps = 50;  // exactly fits: warmup then decay, no stable phase
  auto s = make_lr_schedule(p);
  EXPECT_DOUBLE_EQ(s->lr(49), 1e-3);
  EXPECT_DOUBLE_EQ(s->lr(99), 0.0);
}
