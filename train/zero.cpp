#include "train/zero.h"

#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"

namespace hymba::train {

ShardedAdamW::ShardedAdamW(std::vector<ParamGroup> groups, AdamWOptions opts, GradReducer& reducer)
    : groups_(std::move(groups)), opts_(opts), reducer_(reducer) {
  HYMBA_CHECK(reducer_.mode() == ReduceMode::ReduceScatter, "ShardedAdamW needs a reducer in ReduceScatter mode");
  if (!(opts_.beta1 >= 0 && opts_.beta1 < 1)) HYMBA_USER_ERROR("optim.beta1: must be in [0, 1), got ", opts_.beta1);
  if (!(opts_.beta2 >= 0 && opts_.beta2 < 1)) HYMBA_USER_ERROR("optim.beta2: must be in [0, 1), got ", opts_.beta2);
  if (!(std::isfinite(opts_.eps) && opts_.eps > 0)) HYMBA_USER_ERROR("optim.eps: must be finite and > 0, got ", opts_.eps);

  const std::vector<Tensor>& rparams = reducer_.params();
  std::unordered_map<const TensorImpl*, size_t> index;
  for (size_t i = 0; i < rparams.size(); ++i) index.emplace(rparams[i].impl(), i);
  slot_of_.assign(rparams.size(), SIZE_MAX);
  std::set<std::string> names;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    if (!(std::isfinite(g.weight_decay) && g.weight_decay >= 0))
      HYMBA_USER_ERROR("optim.weight_decay: must be finite and >= 0, got ", g.weight_decay);
    for (const auto& [name, p] : g.params) {
      auto it = index.find(p.impl());
      HYMBA_CHECK(it != index.end(), "ShardedAdamW: parameter '", name, "' is not one of the reducer's");
      HYMBA_CHECK(names.insert(name).second, "ShardedAdamW: parameter name '", name, "' appears twice");
      HYMBA_CHECK(slot_of_[it->second] == SIZE_MAX, "ShardedAdamW: parameter '", name, "' is listed twice");
      slot_of_[it->second] = slots_.size();
      slots_.push_back({name, p, gi, it->second});
    }
  }
  for (size_t i = 0; i < rparams.size(); ++i)
    HYMBA_CHECK(slot_of_[i] != SIZE_MAX, "ShardedAdamW: reducer parameter ", rparams[i].meta_str(),
                " is in no group");

  const int64_t rank = reducer_.comm().rank(), world = reducer_.comm().world();
  const std::vector<Bucket>& buckets = reducer_.buckets();
  for (size_t b = 0; b < buckets.size(); ++b) {
    const int64_t block = buckets[b].padded / world, lo = rank * block, hi = lo + block;
    for (const BucketSlot& s : buckets[b].slots) {
      const int64_t a = std::max(lo, s.offset), e = std::min(hi, s.offset + s.numel);
      if (a < e) pieces_.push_back({b, slot_of_[s.param], a - s.offset, a - lo, e - a});
    }
    const Tensor& p0 = rparams[buckets[b].slots[0].param];
    exp_avg_.push_back(zeros({block}, TensorOptions(p0.dtype(), p0.device())));
    exp_avg_sq_.push_back(zeros({block}, TensorOptions(p0.dtype(), p0.device())));
  }
}

std::vector<Tensor> ShardedAdamW::params() const {
  std::vector<Tensor> out;
  for (const Slot& s : slots_) out.push_back(s.param);
  return out;
}

int64_t ShardedAdamW::shard_numel() const {
  int64_t n = 0;
  for (const Tensor& t : exp_avg_) n += t.numel();
  return n;
}

double ShardedAdamW::grad_norm() const {
  double ss = 0.0;
  for (size_t b = 0; b < exp_avg_.size(); ++b) ss += kernels::sum_of_squares(reducer_.grad_shard(b));
  return std::sqrt(reducer_.comm().all_reduce_sum(ss));
}

double ShardedAdamW::clip_grad_norm_(double max_norm) {
  HYMBA_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm_: max_norm must be finite and > 0, got ",
              max_norm);
  const double norm = grad_norm();
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double coef = max_norm / (norm + 1e-6);  // the unsharded formula (optimizer.cpp)
  NoGradGuard ng;
  for (size_t b = 0; b < exp_avg_.size(); ++b) {
    const Tensor& g = reducer_.grad_shard(b);
    kernels::scalar_out(kernels::ScalarOp::Mul, g, coef, g);
  }
  return norm;
}

void ShardedAdamW::step(double lr) {
  HYMBA_CHECK(std::isfinite(lr) && lr >= 0, "ShardedAdamW::step: lr must be finite and >= 0, got ", lr);
  ++step_;
  NoGradGuard ng;
  for (const Piece& pc : pieces_) {
    const Slot& s = slots_[pc.slot];
    if (!reducer_.has_grad(s.reducer_index)) continue;  // as AdamW: no gradient, no update
    const ParamGroup& group = groups_[s.group];
    kernels::adamw_step(s.param.detach().view({-1}).narrow(0, pc.param_offset, pc.numel),
                        reducer_.grad_shard(pc.bucket).narrow(0, pc.shard_offset, pc.numel),
                        exp_avg_[pc.bucket].narrow(0, pc.shard_offset, pc.numel),
                        exp_avg_sq_[pc.bucket].narrow(0, pc.shard_offset, pc.numel), lr * group.lr_scale,
                        opts_.beta1, opts_.beta2, opts_.eps, group.weight_decay, step_);
  }
  // Every rank now holds its blocks of the new parameters; gather all the blocks.
  Communicator& comm = reducer_.comm();
  const std::vector<Bucket>& buckets = reducer_.buckets();
  const std::vector<Tensor>& rparams = reducer_.params();
  std::vector<Tensor> send(buckets.size()), full(buckets.size());
  std::vector<std::unique_ptr<Work>> work(buckets.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    send[b] = zeros_like(exp_avg_[b]);
    full[b] = empty({buckets[b].padded}, TensorOptions(send[b].dtype(), send[b].device()));
  }
  for (const Piece& pc : pieces_)
    send[pc.bucket].narrow(0, pc.shard_offset, pc.numel)
        .copy_(slots_[pc.slot].param.detach().view({-1}).narrow(0, pc.param_offset, pc.numel));
  for (size_t b = 0; b < buckets.size(); ++b) work[b] = comm.all_gather_async(send[b], full[b]);
  for (size_t b = 0; b < buckets.size(); ++b) {
    work[b]->wait();
    for (const BucketSlot& s : buckets[b].slots)
      rparams[s.param].detach().view({-1}).copy_(full[b].narrow(0, s.offset, s.numel));
  }
}

void ShardedAdamW::zero_grad() {
  reducer_.clear();
  for (const Slot& s : slots_) s.param.set_grad(Tensor());
}

NamedTensors ShardedAdamW::state_dict() const {
  Communicator& comm = reducer_.comm();
  const std::vector<Bucket>& buckets = reducer_.buckets();
  const size_t nb = buckets.size();
  std::vector<Tensor> full_m(nb), full_v(nb);
  std::vector<std::unique_ptr<Work>> work;
  for (size_t b = 0; b < nb; ++b) {
    full_m[b] = empty({buckets[b].padded}, TensorOptions(exp_avg_[b].dtype(), exp_avg_[b].device()));
    full_v[b] = empty_like(full_m[b]);
    work.push_back(comm.all_gather_async(exp_avg_[b], full_m[b]));
    work.push_back(comm.all_gather_async(exp_avg_sq_[b], full_v[b]));
  }
  for (auto& w : work) w->wait();
  // Where each parameter sits: reducer index -> (bucket, offset).
  std::vector<std::pair<size_t, int64_t>> where(reducer_.params().size());
  for (size_t b = 0; b < nb; ++b)
    for (const BucketSlot& s : buckets[b].slots) where[s.param] = {b, s.offset};
  NoGradGuard ng;
  auto moment = [&](const std::vector<Tensor>& full, const Slot& s) {
    const auto [b, off] = where[s.reducer_index];
    return full[b].narrow(0, off, s.param.numel()).clone().view(s.param.shape());
  };
  NamedTensors out;
  out.reserve(2 * slots_.size() + 1);
  for (const Slot& s : slots_) out.emplace_back("exp_avg/" + s.name, moment(full_m, s));
  for (const Slot& s : slots_) out.emplace_back("exp_avg_sq/" + s.name, moment(full_v, s));
  out.emplace_back("step", scalar_tensor(double(step_), DType::I64));
  return out;
}

void ShardedAdamW::load_state_dict(const NamedTensors& state) {
  std::map<std::string, Tensor> by_name;
  std::vector<std::string> problems;
  for (const auto& [name, t] : state)
    if (!by_name.emplace(name, t).second) problems.push_back(str("key '", name, "' appears twice"));
  std::set<std::string> known{"step"};
  auto find = [&](const std::string& key, const Tensor& param) -> Tensor {
    known.insert(key);
    auto it = by_name.find(key);
    if (it == by_name.end() || !it->second.defined()) {
      problems.push_back(str("missing key '", key, "'"));
    } else if (it->second.shape() != param.shape()) {
      problems.push_back(str("shape mismatch for '", key, "': state has ", shape_str(it->second.shape()),
                             ", the parameter is ", shape_str(param.shape())));
    } else {
      return it->second.contiguous();
    }
    return Tensor();
  };
  std::vector<Tensor> m(slots_.size()), v(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) m[i] = find("exp_avg/" + slots_[i].name, slots_[i].param);
  for (size_t i = 0; i < slots_.size(); ++i) v[i] = find("exp_avg_sq/" + slots_[i].name, slots_[i].param);
  int64_t step = -1;
  auto it = by_name.find("step");
  if (it == by_name.end() || !it->second.defined() || it->second.numel() != 1) {
    problems.push_back("missing or malformed key 'step'");
  } else {
    const double s = it->second.item();
    if (!(s >= 0 && s == std::floor(s) && s < 9.0e15))
      problems.push_back(str("key 'step' must be a non-negative integer, got ", s));
    else
      step = int64_t(s);
  }
  for (const auto& [name, _] : by_name)
    if (!known.count(name)) problems.push_back(str("unexpected key '", name, "'"));
  if (!problems.empty()) {
    std::string msg;
    for (size_t i = 0; i < problems.size() && i < 8; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 8) msg += str("; ... and ", problems.size() - 8, " more");
    HYMBA_USER_ERROR("AdamW optimizer state: ", msg);
  }
  NoGradGuard ng;
  for (const Piece& pc : pieces_) {
    exp_avg_[pc.bucket].narrow(0, pc.shard_offset, pc.numel).copy_(m[pc.slot].view({-1}).narrow(0, pc.param_offset, pc.numel));
    exp_avg_sq_[pc.bucket]
        .narrow(0, pc.shard_offset, pc.numel)
        .copy_(v[pc.slot].view({-1}).narrow(0, pc.param_offset, pc.numel));
  }
  step_ = step;
}

}  // namespace hymba::train
