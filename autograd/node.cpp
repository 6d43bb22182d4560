#include "autograd/node.h"

#include <atomic>

#include "kernels/elementwise.h"

namespace hymba::autograd {

namespace {
std::atomic<uint64_t> g_next_sequence_nr{0};
}

Node::Node() : sequence_nr(g_next_sequence_nr.fetch_add(1, std::memory_order_relaxed)) {}

AccumulateGrad::AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {
  // Run as soon as ready: the leaf's gradient is final then, and data parallelism wants to
  // start reducing it while the rest of backward runs.
  sequence_nr = UINT64_MAX;
  outputs.push_back({leaf_->shape, leaf_->dtype, leaf_->storage->device()});
}

tensor_list AccumulateGrad::apply(tensor_list&& grads) {
  Tensor leaf(leaf_);
  Tensor g = std::move(grads[0]);
  HYMBA_CHECK(g.shape() == leaf_->shape, "AccumulateGrad: gradient ", g.meta_str(), " for leaf ", leaf.meta_str());
  Tensor& acc = leaf_->autograd.grad;
  if (!acc.defined()) {
    // Steal the incoming buffer when nothing else can see it (the common case), else copy:
    // a gradient that aliases another tensor must not be modified by later accumulation.
    bool exclusive = g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 && g.is_contiguous() &&
                     g.dtype() == leaf_->dtype;
    acc = exclusive ? g : g.to(leaf_->dtype).clone();
  } else {
    kernels::axpy_(acc, g.dtype() == acc.dtype() ? g : g.to(acc.dtype()), 1.0);
  }
  for (auto& hook : leaf_->autograd.hooks) hook(leaf);
  return {};
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl* impl = t.impl();
  if (impl->autograd.grad_fn) return {impl->autograd.grad_fn, impl->autograd.output_nr};
  auto acc = impl->autograd.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl->autograd.grad_accumulator = acc;
  }
  return {acc, 0};
}

bool compute_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const auto& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

bool compute_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const auto& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

void set_history(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs) {
  node->next_edges.clear();
  node->next_edges.reserve(inputs.size());
  for (const auto& t : inputs) node->next_edges.push_back(gradient_edge(t));
  node->outputs.clear();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& o = outputs[i];
    HYMBA_CHECK(o.defined(), node->name(), ": output ", i, " is undefined");
    node->outputs.push_back({o.shape(), o.dtype(), o.device()});
    auto& meta = o.impl()->autograd;
    HYMBA_CHECK(meta.grad_fn == nullptr, node->name(), ": output ", i, " already has a grad_fn");
    meta.requires_grad = is_floating(o.dtype());
    meta.grad_fn = meta.requires_grad ? node : nullptr;
    meta.output_nr = uint32_t(i);
  }
}

const Tensor& unpack(const Tensor& saved, const Node& node) {
  HYMBA_CHECK(saved.defined() && !node.saved_released, node.name(),
              ": its saved tensors were freed after the first backward; pass retain_graph = true to "
              "backward through the graph a second time");
  HYMBA_CHECK(saved.defined(), node.name(), ": a saved tensor is missing");
  return saved;
}

}  // namespace hymba::autograd
