#include "train/optimizer.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

#include "kernels/adamw.h"
#include "kernels/elementwise.h"

namespace hymba::train {
namespace {

// Glob with '*' only, by the classic two-pointer walk (linear, no backtracking blow-up).
bool glob(const std::string& p, const std::string& s) {
  size_t i = 0, j = 0, star = std::string::npos, mark = 0;
  while (j < s.size()) {
    if (i < p.size() && p[i] != '*' && p[i] == s[j]) {
      ++i, ++j;
    } else if (i < p.size() && p[i] == '*') {
      star = i++;
      mark = j;
    } else if (star != std::string::npos) {
      i = star + 1;
      j = ++mark;
    } else {
      return false;
    }
  }
  while (i < p.size() && p[i] == '*') ++i;
  return i == p.size();
}

void check_option(bool ok, const char* key, double value, const char* expected) {
  if (!ok) HYMBA_USER_ERROR(key, ": ", expected, ", got ", value);
}

std::string summarize(const std::vector<std::string>& problems, size_t limit = 8) {
  std::ostringstream os;
  for (size_t i = 0; i < problems.size() && i < limit; ++i) os << (i ? "; " : "") << problems[i];
  if (problems.size() > limit) os << "; ... and " << problems.size() - limit << " more";
  return os.str();
}

}  // namespace

std::vector<std::string> default_no_decay_patterns() {
  return {"memory_tokens", "*embed*", "*norm*", "bias", "A_log", "D"};
}

bool pattern_matches(const std::string& pattern, const std::string& name) {
  if (pattern.find('.') != std::string::npos) return glob(pattern, name);
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    if (glob(pattern, name.substr(start, dot == std::string::npos ? std::string::npos : dot - start))) return true;
    if (dot == std::string::npos) return false;
    start = dot + 1;
  }
}

bool decays(const std::string& name, const Tensor& t, const std::vector<std::string>& no_decay_patterns) {
  if (t.dim() < 2) return false;
  for (const auto& p : no_decay_patterns)
    if (pattern_matches(p, name)) return false;
  return true;
}

std::vector<ParamGroup> default_param_groups(const NamedTensors& named, double weight_decay,
                                             const std::vector<std::string>& no_decay_patterns) {
  ParamGroup decay{"decay", {}, 1.0, weight_decay};
  ParamGroup no_decay{"no_decay", {}, 1.0, 0.0};
  for (const auto& [name, t] : named) {
    if (!t.requires_grad()) continue;
    (decays(name, t, no_decay_patterns) ? decay : no_decay).params.emplace_back(name, t);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return groups;
}

double global_grad_norm(const std::vector<Tensor>& params) {
  // One pass and one device-to-host copy on CUDA. On the CPU the multi form is the sum of the
  // per-tensor sums in list order from 0 (undefined gradients skipped): the same additions as
  // a loop over sum_of_squares, so the norm is bit-identical to it.
  std::vector<Tensor> grads;
  grads.reserve(params.size());
  for (const Tensor& p : params) grads.push_back(p.grad());
  return std::sqrt(kernels::sum_of_squares_multi(grads));
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  HYMBA_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm_: max_norm must be finite and > 0, got ",
              max_norm);
  const double norm = global_grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double coef = max_norm / (norm + 1e-6);
  NoGradGuard ng;
  std::unordered_set<const TensorImpl*> scaled;  // a gradient shared by two entries is scaled once
  for (const Tensor& p : params) {
    const Tensor& g = p.grad();
    if (g.defined() && scaled.insert(g.impl()).second) kernels::scalar_out(kernels::ScalarOp::Mul, g, coef, g);
  }
  return norm;
}

// ---------------------------------------------------------------- AdamW

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opts) : groups_(std::move(groups)), opts_(opts) {
  check_option(opts_.beta1 >= 0 && opts_.beta1 < 1, "optim.beta1", opts_.beta1, "must be in [0, 1)");
  check_option(opts_.beta2 >= 0 && opts_.beta2 < 1, "optim.beta2", opts_.beta2, "must be in [0, 1)");
  check_option(std::isfinite(opts_.eps) && opts_.eps > 0, "optim.eps", opts_.eps, "must be finite and > 0");
  std::set<std::string> names;
  std::unordered_set<const TensorImpl*> seen;
  NoGradGuard ng;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    check_option(std::isfinite(g.weight_decay) && g.weight_decay >= 0, "optim.weight_decay", g.weight_decay,
                 "must be finite and >= 0");
    check_option(std::isfinite(g.lr_scale) && g.lr_scale >= 0, "optim lr_scale", g.lr_scale,
                 "must be finite and >= 0");
    for (const auto& [name, p] : g.params) {
      HYMBA_CHECK(p.defined(), "AdamW: parameter '", name, "' in group '", g.name, "' is undefined");
      HYMBA_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, "AdamW: parameter '", name, "' is ",
                  p.meta_str(), ", expected f32 (or f64)");
      HYMBA_CHECK(names.insert(name).second, "AdamW: parameter name '", name, "' appears twice");
      HYMBA_CHECK(seen.insert(p.impl()).second, "AdamW: parameter '", name,
                  "' is the same tensor as an earlier parameter (tied weights must be listed once)");
      slots_.push_back({name, p, zeros_like(p), zeros_like(p), gi});
    }
  }
}

std::vector<Tensor> AdamW::params() const {
  std::vector<Tensor> out;
  out.reserve(slots_.size());
  for (const Slot& s : slots_) out.push_back(s.param);
  return out;
}

void AdamW::step(double lr) {
  HYMBA_CHECK(std::isfinite(lr) && lr >= 0, "AdamW::step: lr must be finite and >= 0, got ", lr);
  ++step_;
  NoGradGuard ng;
  // One multi-tensor update per group (its lr and decay): on CUDA a launch per dtype instead
  // of one per parameter. The tensors are independent, so the results are those of updating
  // them one by one (the CPU multi form is exactly that loop).
  std::vector<std::vector<Tensor>> p(groups_.size()), g(groups_.size()), m(groups_.size()), v(groups_.size());
  for (const Slot& s : slots_) {
    const Tensor& grad = s.param.grad();
    if (!grad.defined()) continue;
    p[s.group].push_back(s.param.detach());
    g[s.group].push_back(grad);
    m[s.group].push_back(s.exp_avg);
    v[s.group].push_back(s.exp_avg_sq);
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    if (p[gi].empty()) continue;
    const ParamGroup& group = groups_[gi];
    kernels::adamw_step_multi(p[gi], g[gi], m[gi], v[gi], lr * group.lr_scale, opts_.beta1, opts_.beta2, opts_.eps,
                              group.weight_decay, step_);
  }
}

void AdamW::zero_grad() {
  for (const Slot& s : slots_) s.param.set_grad(Tensor());
}

double AdamW::grad_norm() const { return global_grad_norm(params()); }

double AdamW::clip_grad_norm_(double max_norm) { return train::clip_grad_norm_(params(), max_norm); }

NamedTensors AdamW::state_dict() const {
  NamedTensors out;
  out.reserve(2 * slots_.size() + 1);
  for (const Slot& s : slots_) out.emplace_back("exp_avg/" + s.name, s.exp_avg);
  for (const Slot& s : slots_) out.emplace_back("exp_avg_sq/" + s.name, s.exp_avg_sq);
  out.emplace_back("step", scalar_tensor(double(step_), DType::I64));
  return out;
}

void AdamW::load_state_dict(const NamedTensors& state) {
  std::map<std::string, Tensor> by_name;
  std::vector<std::string> problems;
  for (const auto& [name, t] : state)
    if (!by_name.emplace(name, t).second) problems.push_back(str("key '", name, "' appears twice"));

  std::set<std::string> known{"step"};
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  auto expect = [&](const std::string& key, const Tensor& dst) {
    known.insert(key);
    auto it = by_name.find(key);
    if (it == by_name.end()) {
      problems.push_back(str("missing key '", key, "'"));
    } else if (!it->second.defined()) {
      problems.push_back(str("key '", key, "' holds no tensor"));
    } else if (it->second.shape() != dst.shape()) {
      problems.push_back(str("shape mismatch for '", key, "': state has ", shape_str(it->second.shape()),
                             ", the parameter is ", shape_str(dst.shape())));
    } else {
      copies.emplace_back(dst, it->second);
    }
  };
  for (const Slot& s : slots_) {
    expect("exp_avg/" + s.name, s.exp_avg);
    expect("exp_avg_sq/" + s.name, s.exp_avg_sq);
  }
  int64_t step = -1;
  auto it = by_name.find("step");
  if (it == by_name.end()) {
    problems.push_back("missing key 'step'");
  } else if (!it->second.defined() || it->second.numel() != 1) {
    problems.push_back(str("key 'step' must hold one value, got ",
                           it->second.defined() ? it->second.meta_str() : std::string("no tensor")));
  } else {
    const double v = it->second.item();
    if (!(v >= 0 && v == std::floor(v) && v < 9.0e15)) {
      problems.push_back(str("key 'step' must be a non-negative integer, got ", v));
    } else {
      step = int64_t(v);
    }
  }
  for (const auto& [name, _] : by_name)
    if (!known.count(name)) problems.push_back(str("unexpected key '", name, "'"));
  if (!problems.empty()) HYMBA_USER_ERROR("AdamW optimizer state: ", summarize(problems));

  NoGradGuard ng;
  for (auto& [dst, src] : copies) dst.copy_(src);
  step_ = step;
}

}  // namespace hymba::train
