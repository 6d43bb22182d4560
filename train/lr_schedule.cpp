#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace hymba::train {
namespace {

enum class DecayShape { Linear, Cosine, OneMinusSqrt };

const char* shape_name(DecayShape s) {
  switch (s) {
    case DecayShape::Linear: return "linear";
    case DecayShape::Cosine: return "cosine";
    case DecayShape::OneMinusSqrt: return "1-sqrt";
  }
  return "?";
}

// f(q) for q in [0, 1]: 1 at the start of the decay, 0 at its end.
double decay_factor(DecayShape s, double q) {
  switch (s) {
    case DecayShape::Linear: return 1.0 - q;
    case DecayShape::Cosine: return 0.5 * (1.0 + std::cos(std::numbers::pi * q));
    case DecayShape::OneMinusSqrt: return 1.0 - std::sqrt(q);
  }
  return 0.0;
}

// Shared by all kinds: the warmup ramp and the step check. Returns u = step + 1.
double update_number(int64_t step) {
  HYMBA_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step);
  return double(step) + 1.0;
}

class Constant final : public LRSchedule {
 public:
  Constant(double peak, int64_t warmup) : peak_(peak), warmup_(warmup) {}
  double lr(int64_t step) const override {
    const double u = update_number(step);
    return u <= double(warmup_) ? peak_ * u / double(warmup_) : peak_;
  }
  std::string describe() const override { return str("constant(peak=", peak_, ", warmup=", warmup_, ")"); }

 private:
  double peak_;
  int64_t warmup_;
};

class Cosine final : public LRSchedule {
 public:
  Cosine(double peak, double min, int64_t warmup, int64_t total)
      : peak_(peak), min_(min), warmup_(warmup), total_(total) {}
  double lr(int64_t step) const override {
    const double u = update_number(step);
    if (u <= double(warmup_)) return peak_ * u / double(warmup_);
    if (u >= double(total_)) return min_;
    const double q = (u - double(warmup_)) / double(total_ - warmup_);
    return min_ + (peak_ - min_) * 0.5 * (1.0 + std::cos(std::numbers::pi * q));
  }
  std::string describe() const override {
    return str("cosine(peak=", peak_, ", min=", min_, ", warmup=", warmup_, ", total=", total_, ")");
  }

 private:
  double peak_, min_;
  int64_t warmup_, total_;
};

class WSD final : public LRSchedule {
 public:
  WSD(double peak, double min, int64_t warmup, int64_t total, int64_t decay_steps, DecayShape shape)
      : peak_(peak), min_(min), warmup_(warmup), total_(total), decay_start_(total - decay_steps), shape_(shape) {}
  double lr(int64_t step) const override {
    const double u = update_number(step);
    if (u <= double(warmup_)) return peak_ * u / double(warmup_);
    if (u <= double(decay_start_)) return peak_;
    if (u >= double(total_)) return min_;
    const double q = (u - double(decay_start_)) / double(total_ - decay_start_);
    return min_ + (peak_ - min_) * decay_factor(shape_, q);
  }
  std::string describe() const override {
    return str("wsd(peak=", peak_, ", min=", min_, ", warmup=", warmup_, ", decay ", shape_name(shape_), " over ",
               total_ - decay_start_, " of ", total_, ")");
  }

 private:
  double peak_, min_;
  int64_t warmup_, total_, decay_start_;
  DecayShape shape_;
};

}  // namespace

std::unique_ptr<LRSchedule> make_lr_schedule(const ScheduleParams& p) {
  const std::string& k = p.kind;
  if (k != "constant" && k != "cosine" && k != "wsd")
    HYMBA_USER_ERROR("schedule.kind: unknown value '", k, "', expected constant, cosine or wsd");
  if (!(std::isfinite(p.peak_lr) && p.peak_lr > 0))
    HYMBA_USER_ERROR("schedule.peak_lr: must be finite and > 0, got ", p.peak_lr);
  if (p.warmup_steps < 0) HYMBA_USER_ERROR("schedule.warmup_steps: must be >= 0, got ", p.warmup_steps);
  if (k == "constant") return std::make_unique<Constant>(p.peak_lr, p.warmup_steps);

  if (!(std::isfinite(p.min_lr) && p.min_lr >= 0 && p.min_lr <= p.peak_lr))
    HYMBA_USER_ERROR("schedule.min_lr: must be in [0, peak_lr = ", p.peak_lr, "], got ", p.min_lr);
  if (p.total_steps < 1) HYMBA_USER_ERROR("schedule.total_steps: must be >= 1 for ", k, ", got ", p.total_steps);
  if (k == "cosine") {
    if (p.warmup_steps >= p.total_steps)
      HYMBA_USER_ERROR("schedule.warmup_steps: must be less than schedule.total_steps (", p.total_steps,
                       ") for cosine, got ", p.warmup_steps);
    return std::make_unique<Cosine>(p.peak_lr, p.min_lr, p.warmup_steps, p.total_steps);
  }

  DecayShape shape;
  if (p.decay_shape == "linear") {
    shape = DecayShape::Linear;
  } else if (p.decay_shape == "cosine") {
    shape = DecayShape::Cosine;
  } else if (p.decay_shape == "1-sqrt") {
    shape = DecayShape::OneMinusSqrt;
  } else {
    HYMBA_USER_ERROR("schedule.decay_shape: unknown value '", p.decay_shape, "', expected linear, cosine or 1-sqrt");
  }
  if (!(p.decay_fraction > 0 && p.decay_fraction <= 1))
    HYMBA_USER_ERROR("schedule.decay_fraction: must be in (0, 1], got ", p.decay_fraction);
  const int64_t decay_steps = std::max<int64_t>(1, std::llround(p.decay_fraction * double(p.total_steps)));
  if (p.warmup_steps + decay_steps > p.total_steps)
    HYMBA_USER_ERROR("schedule.warmup_steps: warmup (", p.warmup_steps, ") plus decay (", decay_steps, " = ",
                     p.decay_fraction, " of ", p.total_steps, ") exceeds schedule.total_steps");
  return std::make_unique<WSD>(p.peak_lr, p.min_lr, p.warmup_steps, p.total_steps, decay_steps, shape);
}

}  // namespace hymba::train
