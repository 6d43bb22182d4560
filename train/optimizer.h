// AdamW over parameter groups, the default weight-decay grouping, and global gradient-norm
// clipping.
//
// Weight decay is applied to matrices only (dim >= 2), and not to parameters whose names
// match a no-decay pattern: embeddings and meta tokens are lookup tables whose rows are
// updated sparsely, and A_log / D / norms / biases are per-channel scales where decay pulls
// toward a meaningless value (A_log toward 0 means A = -1 for every state). The patterns are
// configurable (optim.no_decay) because names depend on the model.
//
// Pattern syntax: '*' matches any run of characters. A pattern without '.' is matched
// against each dotted component of the name ("D" matches "layers.0.mixer.D" and
// "model.layers.0.mamba.D.0" but not "layers.0.mixer.dt_proj.weight"); a pattern with '.'
// is matched against the whole name ("lm_head.*").
//
// The step count is global: it advances on every step(), and the bias correction of every
// parameter uses it, including parameters that received no gradient on earlier steps (a
// parameter without a gradient is skipped, moments untouched). In language-model training
// every parameter gets a gradient every step, so this equals PyTorch's per-parameter count.
//
// Moments have the parameter's dtype and device and are allocated at construction: build the
// optimizer after moving the model (Module::to), so that state export is always complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace hymba::train {

struct ParamGroup {
  std::string name;     // "decay", "no_decay", or a caller's label; used in messages
  NamedTensors params;  // named, because state export keys on the names
  double lr_scale = 1.0;      // this group's lr = lr_scale * the lr given to step()
  double weight_decay = 0.0;  // decoupled: p -= lr * weight_decay * p
};

std::vector<std::string> default_no_decay_patterns();  // memory_tokens *embed* *norm* bias A_log D
bool pattern_matches(const std::string& pattern, const std::string& name);
// True when `t` (named `name`) gets weight decay: dim >= 2 and no pattern matches.
bool decays(const std::string& name, const Tensor& t, const std::vector<std::string>& no_decay_patterns);
// Two groups, "decay" (weight_decay) and "no_decay" (0), both with lr_scale 1, in the order
// of `named`; parameters that do not require grad (frozen) are left out, and so is a group
// that ends up empty.
std::vector<ParamGroup> default_param_groups(const NamedTensors& named, double weight_decay,
                                             const std::vector<std::string>& no_decay_patterns =
                                                 default_no_decay_patterns());

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

// sqrt(sum of squares of every defined gradient), accumulated in double, in the given order.
double global_grad_norm(const std::vector<Tensor>& params);
// Scales every gradient by max_norm / (norm + 1e-6) when norm > max_norm (torch's
// clip_grad_norm_). Returns the norm before clipping. A non-finite norm is returned with the
// gradients untouched: the caller skips that step.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

class AdamW {
 public:
  // Options are checked here with UserErrors naming the optim.* key, since they come from a
  // config. A parameter may appear in only one group, and names must be unique.
  explicit AdamW(std::vector<ParamGroup> groups, AdamWOptions opts = {});

  // One update of every parameter that has a gradient, with lr * group.lr_scale.
  void step(double lr);
  void zero_grad();  // drops the gradients (they are re-created by the next backward)
  double grad_norm() const;
  double clip_grad_norm_(double max_norm);

  int64_t step_count() const { return step_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  const AdamWOptions& options() const { return opts_; }
  std::vector<Tensor> params() const;

  // Checkpoint state: "exp_avg/<param name>", "exp_avg_sq/<param name>" per parameter in
  // group order, then "step" (a 0-dim i64 tensor). The moment tensors alias the optimizer's.
  NamedTensors state_dict() const;
  // Copies a state_dict back (in place, so resume continues bit-identically). Any missing,
  // unexpected or mis-shaped entry is a UserError naming it; nothing changes unless all pass.
  void load_state_dict(const NamedTensors& state);

 private:
  struct Slot {
    std::string name;
    Tensor param, exp_avg, exp_avg_sq;
    size_t group;
  };
  std::vector<ParamGroup> groups_;
  AdamWOptions opts_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

}  // namespace hymba::train
