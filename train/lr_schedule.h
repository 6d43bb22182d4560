// Learning-rate schedules: constant, cosine and WSD (warmup-stable-decay), each after a
// linear warmup.
//
// Step convention: lr(s) is the rate for the optimizer update that follows s completed
// updates (s = 0 for the first update). Writing u = s + 1 for the number of that update
// (1..total_steps), with W = warmup_steps and T = total_steps:
//
//   warmup    u <= W:  peak * u / W          (the first update is not wasted at lr 0; the
//                                             last warmup update is exactly at peak)
//   constant  u >  W:  peak
//   cosine    u >  W:  min + (peak - min) * (1 + cos(pi * q)) / 2,  q = (u - W) / (T - W)
//   wsd       u <= S:  peak, with S = T - round(decay_fraction * T) the decay start
//             u >  S:  min + (peak - min) * f(q),  q = (u - S) / (T - S)
//
// so the last update (u = T) runs at exactly min_lr, and any s >= T stays there. WSD decay
// shapes f: "linear" (1 - q), "cosine" ((1 + cos(pi q)) / 2) and "1-sqrt" (1 - sqrt(q)), the
// default, which Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed
// Training Durations") found to match or beat cosine for the same budget. The Hymba paper's
// recipe: warmup ~1% of steps, peak 3e-3, decay to 1e-5 over the last 20%.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace hymba::train {

struct ScheduleParams {
  std::string kind = "cosine";  // constant | cosine | wsd
  double peak_lr = 3e-3;
  double min_lr = 1e-5;         // cosine and wsd
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;      // cosine and wsd; constant ignores it
  double decay_fraction = 0.2;  // wsd: the last fraction of total_steps spent decaying
  std::string decay_shape = "1-sqrt";  // wsd: linear | cosine | 1-sqrt
};

class LRSchedule {
 public:
  virtual ~LRSchedule() = default;
  // The lr for the update after `step` completed updates (see the convention above).
  virtual double lr(int64_t step) const = 0;
  // One line for the run log: "wsd(peak=0.003, min=1e-05, warmup=100, decay 1-sqrt over 2000 of 10000)".
  virtual std::string describe() const = 0;
};

// Validates every value and throws UserError naming the schedule.* key and what was expected.
std::unique_ptr<LRSchedule> make_lr_schedule(const ScheduleParams& params);

}  // namespace hymba::train
