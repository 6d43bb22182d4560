#include "autograd/ops/softmax_xent.h"

#include <cmath>

#include "autograd/node.h"
#include "kernels/elementwise.h"

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

// The forward already wrote dlogits for an upstream gradient of 1 (kernels/softmax_xent.h
// cross_entropy_forward_backward), so backward is the chain rule's product with the incoming
// gradient: nothing, when that is exactly 1 (the usual loss.backward()), else one multiply.
// Neither the logits nor the targets are kept.
struct CrossEntropyBackward final : Node {
  Tensor dlogits;
  bool per_row = false;  // reduction None: the incoming gradient has one value per row
  const char* name() const override { return "CrossEntropyBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& d = autograd::unpack(dlogits, *this);
    const Tensor& g = grads[0];
    if (per_row) {
      // One value per row, broadcast along the class dim; in dlogits' dtype, as the kernels
      // take one dtype per call.
      return {kernels::binary(kernels::BinaryOp::Mul, d, g.to(d.dtype()).unsqueeze(-1))};
    }
    // One read of a 0-dim value (a device sync on CUDA, once per step) saves a pass over the
    // (rows x V) gradient in the common case.
    const double gv = g.item();
    if (gv == 1.0) return {d};
    return {kernels::scalar(kernels::ScalarOp::Mul, d, gv)};
  }
  void release_saved() override { dlogits = Tensor(); }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, LossReduction reduction,
                     double scale) {
  HYMBA_CHECK(std::isfinite(scale), "cross_entropy: scale must be finite, got ", scale);
  auto scaled = [scale](const Tensor& loss) {
    return scale == 1.0 ? loss : kernels::scalar(kernels::ScalarOp::Mul, loss, scale);
  };
  if (!autograd::compute_requires_grad({logits})) {
    NoGradGuard ng;
    return scaled(kernels::cross_entropy_forward(logits, targets, ignore_index, reduction).loss);
  }
  kernels::CrossEntropyForwardBackward f;
  Tensor loss;
  {
    NoGradGuard ng;
    // dlogits of the scaled loss: with the usual upstream gradient of 1, backward is free.
    f = kernels::cross_entropy_forward_backward(logits, targets, ignore_index, reduction, scale);
    loss = scaled(f.loss);
  }
  auto node = std::make_shared<CrossEntropyBackward>();
  node->dlogits = autograd::save(f.dlogits);
  node->per_row = reduction == LossReduction::None && loss.dim() > 0;
  autograd::set_history(node, {logits}, {loss});
  return loss;
}

}  // namespace hymba
