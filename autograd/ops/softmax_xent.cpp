#include "autograd/ops/softmax_xent.h"

#include "autograd/node.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

// Both softmax flavours save their output: the backward formulas need y, not x.
struct SoftmaxBackward final : Node {
  bool log = false;
  int64_t dim = -1;
  Tensor y;
  const char* name() const override { return log ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& ys = autograd::unpack(y, *this);
    return {log ? kernels::log_softmax_backward(grads[0], ys, dim) : kernels::softmax_backward(grads[0], ys, dim)};
  }
  void release_saved() override { y = Tensor(); }
};

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  Tensor y;
  {
    NoGradGuard ng;
    y = log ? kernels::log_softmax_forward(x, dim) : kernels::softmax_forward(x, dim);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<SoftmaxBackward>();
    node->log = log;
    node->dim = dim;
    // Detached: y itself is about to get this node as grad_fn, which would be a cycle.
    node->y = autograd::save(y);
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

struct CrossEntropyBackward final : Node {
  Tensor logits, targets, stats;
  int64_t ignore_index = -100;
  double scale = 1.0;  // 1/count for a mean
  const char* name() const override { return "CrossEntropyBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    return {kernels::cross_entropy_backward(grads[0], autograd::unpack(logits, *this),
                                            autograd::unpack(targets, *this), autograd::unpack(stats, *this),
                                            ignore_index, scale)};
  }
  void release_saved() override {
    logits = Tensor();
    targets = Tensor();
    stats = Tensor();
  }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, LossReduction reduction) {
  kernels::CrossEntropyForward f;
  {
    NoGradGuard ng;
    f = kernels::cross_entropy_forward(logits, targets, ignore_index, reduction);
  }
  if (autograd::compute_requires_grad({logits})) {
    auto node = std::make_shared<CrossEntropyBackward>();
    node->logits = autograd::save(logits);
    node->targets = autograd::save(targets);
    node->stats = f.stats;
    node->ignore_index = ignore_index;
    node->scale = reduction == LossReduction::Mean ? (f.count > 0 ? 1.0 / double(f.count) : 0.0) : 1.0;
    autograd::set_history(node, {logits}, {f.loss});
  }
  return f.loss;
}

}  // namespace hymba
