#include "train/ddp.h"

#include <chrono>

#include "core/error.h"

namespace hymba::train {

std::vector<Bucket> make_buckets(const std::vector<Tensor>& params, int64_t cap_bytes, int world) {
  HYMBA_CHECK(world >= 1, "make_buckets: world ", world);
  std::vector<Bucket> out;
  Bucket cur;
  int64_t cur_bytes = 0;
  auto close = [&] {
    if (cur.slots.empty()) return;
    cur.padded = (cur.numel + world - 1) / world * world;
    out.push_back(std::move(cur));
    cur = Bucket();
    cur_bytes = 0;
  };
  for (size_t k = params.size(); k-- > 0;) {
    const Tensor& p = params[k];
    const int64_t bytes = int64_t(p.nbytes());
    if (!cur.slots.empty() && cap_bytes > 0 && cur_bytes + bytes > cap_bytes) close();
    cur.slots.push_back({k, cur.numel, p.numel()});
    cur.numel += p.numel();
    cur_bytes += bytes;
  }
  close();
  return out;
}

struct GradReducer::Impl {
  std::shared_ptr<Communicator> comm;
  std::vector<Tensor> params;
  std::vector<Bucket> buckets;
  ReduceMode mode;
  std::vector<size_t> bucket_of;  // parameter -> bucket

  // Per step.
  bool reducing = false;
  std::vector<int64_t> pending;  // per bucket: parameters not ready yet
  std::vector<uint8_t> ready;    // per parameter
  size_t next_launch = 0;        // buckets [0, next_launch) have started
  std::vector<Tensor> flat, shard;
  std::vector<std::unique_ptr<Work>> work;
  std::vector<int32_t> local_has;  // per parameter: this rank produced a gradient
  std::vector<uint8_t> has;        // after finish: some rank did
  double wait_s = 0.0;
  int64_t early = 0;

  void reset_step() {
    for (size_t b = 0; b < buckets.size(); ++b) pending[b] = int64_t(buckets[b].slots.size());
    std::fill(ready.begin(), ready.end(), 0);
    next_launch = 0;
    work.clear();
    work.resize(buckets.size());
    flat.assign(buckets.size(), Tensor());
    std::fill(local_has.begin(), local_has.end(), 0);
  }

  void launch(size_t b) {
    NoGradGuard ng;
    const Bucket& bk = buckets[b];
    const Tensor& p0 = params[bk.slots[0].param];
    Tensor f = zeros({bk.padded}, TensorOptions(p0.dtype(), p0.device()));
    for (const BucketSlot& s : bk.slots) {
      const Tensor& g = params[s.param].grad();
      if (!g.defined()) continue;
      local_has[s.param] = 1;
      f.narrow(0, s.offset, s.numel).view(g.shape()).copy_(g);
    }
    // The gradient now lives in the bucket; dropping it here frees memory during backward.
    for (const BucketSlot& s : bk.slots) params[s.param].set_grad(Tensor());
    flat[b] = f;
    if (mode == ReduceMode::AllReduce) {
      work[b] = comm->all_reduce_async(f, ReduceOp::Sum);
    } else {
      shard[b] = empty({bk.padded / comm->world()}, TensorOptions(p0.dtype(), p0.device()));
      work[b] = comm->reduce_scatter_async(f, shard[b], ReduceOp::Sum);
    }
  }

  void launch_ready() {
    while (next_launch < buckets.size() && pending[next_launch] == 0) launch(next_launch++);
  }

  void on_ready(size_t i) {
    if (!reducing || ready[i]) return;
    ready[i] = 1;
    --pending[bucket_of[i]];
    launch_ready();
    for (size_t b = 0; b < next_launch; ++b) work[b]->test();
  }
};

GradReducer::GradReducer(std::shared_ptr<Communicator> comm, std::vector<Tensor> params, double bucket_mb,
                         ReduceMode mode)
    : impl_(std::make_shared<Impl>()) {
  HYMBA_CHECK(comm != nullptr, "GradReducer: no communicator");
  HYMBA_CHECK(!params.empty(), "GradReducer: no parameters");
  Impl& m = *impl_;
  m.comm = std::move(comm);
  m.params = std::move(params);
  m.mode = mode;
  for (const Tensor& p : m.params) {
    HYMBA_CHECK(p.defined() && p.requires_grad() && p.is_contiguous(), "GradReducer: parameter ", p.meta_str(),
                " must be a contiguous leaf that requires grad");
    HYMBA_CHECK(p.dtype() == m.params[0].dtype() && p.device() == m.params[0].device(),
                "GradReducer: parameters of one dtype and device expected, got ", p.meta_str(), " and ",
                m.params[0].meta_str());
  }
  m.buckets = make_buckets(m.params, int64_t(bucket_mb * 1024.0 * 1024.0), m.comm->world());
  m.bucket_of.assign(m.params.size(), 0);
  for (size_t b = 0; b < m.buckets.size(); ++b)
    for (const BucketSlot& s : m.buckets[b].slots) m.bucket_of[s.param] = b;
  m.pending.assign(m.buckets.size(), 0);
  m.ready.assign(m.params.size(), 0);
  m.local_has.assign(m.params.size(), 0);
  m.has.assign(m.params.size(), 0);
  m.shard.assign(m.buckets.size(), Tensor());
  m.reset_step();
  std::weak_ptr<Impl> weak = impl_;
  for (size_t i = 0; i < m.params.size(); ++i) {
    m.params[i].register_grad_hook([weak, i](const Tensor&) {
      if (auto s = weak.lock()) s->on_ready(i);
    });
  }
}

GradReducer::~GradReducer() = default;

void GradReducer::begin_backward(bool reduce_this_backward) {
  Impl& m = *impl_;
  HYMBA_CHECK(m.next_launch == 0, "GradReducer::begin_backward: the previous reduction was not finished");
  m.reducing = reduce_this_backward;
}

void GradReducer::finish() {
  using Clock = std::chrono::steady_clock;
  Impl& m = *impl_;
  m.early = int64_t(m.next_launch);
  m.reducing = false;
  while (m.next_launch < m.buckets.size()) m.launch(m.next_launch++);
  Tensor flags = from_vector<int32_t>(m.local_has, {int64_t(m.local_has.size())}).to(m.comm->device());
  const auto t0 = Clock::now();
  m.comm->all_reduce(flags, ReduceOp::Sum);
  for (auto& w : m.work) w->wait();
  m.wait_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::vector<int32_t> f = flags.to_vector<int32_t>();
  for (size_t i = 0; i < m.params.size(); ++i) m.has[i] = f[i] > 0;

  NoGradGuard ng;
  for (size_t b = 0; b < m.buckets.size(); ++b) {
    for (const BucketSlot& s : m.buckets[b].slots) {
      const Tensor& p = m.params[s.param];
      // Views into the bucket: no copy, and the bucket is fresh every step, so nothing that
      // aliases it outlives the optimizer's zero_grad.
      const bool publish = m.mode == ReduceMode::AllReduce && m.has[s.param];
      p.set_grad(publish ? m.flat[b].narrow(0, s.offset, s.numel).view(p.shape()) : Tensor());
    }
  }
  if (m.mode == ReduceMode::ReduceScatter) m.flat.assign(m.buckets.size(), Tensor());
  m.work.clear();
  m.reset_step();
}

void GradReducer::clear() {
  impl_->shard.assign(impl_->buckets.size(), Tensor());
  impl_->flat.assign(impl_->buckets.size(), Tensor());
}

ReduceMode GradReducer::mode() const { return impl_->mode; }
Communicator& GradReducer::comm() const { return *impl_->comm; }
const std::vector<Bucket>& GradReducer::buckets() const { return impl_->buckets; }
const std::vector<Tensor>& GradReducer::params() const { return impl_->params; }
bool GradReducer::has_grad(size_t i) const { return impl_->has.at(i) != 0; }
const Tensor& GradReducer::grad_shard(size_t b) const {
  const Tensor& s = impl_->shard.at(b);
  HYMBA_CHECK(impl_->mode == ReduceMode::ReduceScatter && s.defined(),
              "GradReducer::grad_shard: no reduced shard (ZeRO-1 mode, after finish())");
  return s;
}
double GradReducer::wait_seconds() const { return impl_->wait_s; }
int64_t GradReducer::buckets_started_early() const { return impl_->early; }

}  // namespace hymba::train
