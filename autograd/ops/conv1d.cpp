#include "autograd/ops/conv1d.h"

#include <tuple>

#include "autograd/node.h"
#include "kernels/conv1d.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

struct CausalConv1dBackward final : Node {
  Tensor x, weight, bias;
  bool silu = false;
  const char* name() const override { return "CausalConv1dBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& xs = autograd::unpack(x, *this);
    // bias is optional: absent, it was saved undefined.
    Tensor b = bias.defined() ? autograd::unpack(bias, *this) : Tensor();
    auto [dx, dw, db] =
        kernels::causal_conv1d_backward(grads[0], xs, autograd::unpack(weight, *this), b, silu, needs_input_grad(0));
    if (!needs_input_grad(1)) dw = Tensor();
    if (!needs_input_grad(2)) db = Tensor();
    return {dx, dw, db};
  }
  void release_saved() override { x = weight = bias = Tensor(); }
};

}  // namespace

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::causal_conv1d_forward(x, weight, bias, silu);
  }
  if (autograd::compute_requires_grad({x, weight, bias})) {
    auto node = std::make_shared<CausalConv1dBackward>();
    node->x = autograd::save(x);
    node->weight = autograd::save(weight);
    node->bias = autograd::save(bias);
    node->silu = silu;
    autograd::set_history(node, {x, weight, bias}, {y});
  }
  return y;
}

Tensor causal_conv1d_step(const Tensor& conv_state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                          bool silu) {
  NoGradGuard ng;
  return kernels::causal_conv1d_step(conv_state, x, weight, bias, silu);
}

}  // namespace hymba
