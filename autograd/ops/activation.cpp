#include "autograd/ops/activation.h"

#include <tuple>

#include "autograd/node.h"
#include "kernels/activation.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

enum class Act { SiLU, Sigmoid, Softplus };

// Saves the input (not the output): every backward kernel computes f'(x) from x.
struct ActivationBackward final : Node {
  Act act;
  Tensor x;
  const char* name() const override {
    switch (act) {
      case Act::SiLU: return "SiluBackward";
      case Act::Sigmoid: return "SigmoidBackward";
      case Act::Softplus: return "SoftplusBackward";
    }
    return "ActivationBackward";
  }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& xs = autograd::unpack(x, *this);
    switch (act) {
      case Act::SiLU: return {kernels::silu_backward(grads[0], xs)};
      case Act::Sigmoid: return {kernels::sigmoid_backward(grads[0], xs)};
      case Act::Softplus: return {kernels::softplus_backward(grads[0], xs)};
    }
    return {Tensor()};
  }
  void release_saved() override { x = Tensor(); }
};

Tensor activation(Act act, const Tensor& x) {
  Tensor y;
  {
    NoGradGuard ng;
    switch (act) {
      case Act::SiLU: y = kernels::silu_forward(x); break;
      case Act::Sigmoid: y = kernels::sigmoid_forward(x); break;
      case Act::Softplus: y = kernels::softplus_forward(x); break;
    }
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<ActivationBackward>();
    node->act = act;
    node->x = autograd::save(x);
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

struct SwiGLUBackward final : Node {
  Tensor gate, up;
  const char* name() const override { return "SwiGLUBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    auto [dg, du] = kernels::swiglu_backward(grads[0], autograd::unpack(gate, *this), autograd::unpack(up, *this));
    if (!needs_input_grad(0)) dg = Tensor();
    if (!needs_input_grad(1)) du = Tensor();
    return {dg, du};
  }
  void release_saved() override {
    gate = Tensor();
    up = Tensor();
  }
};

struct SwiGLUPackedBackward final : Node {
  Tensor x;
  const char* name() const override { return "SwiGLUPackedBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    return {kernels::swiglu_packed_backward(grads[0], autograd::unpack(x, *this))};
  }
  void release_saved() override { x = Tensor(); }
};

}  // namespace

Tensor silu(const Tensor& x) { return activation(Act::SiLU, x); }
Tensor sigmoid(const Tensor& x) { return activation(Act::Sigmoid, x); }
Tensor softplus(const Tensor& x) { return activation(Act::Softplus, x); }

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::swiglu_forward(gate, up);
  }
  if (autograd::compute_requires_grad({gate, up})) {
    auto node = std::make_shared<SwiGLUBackward>();
    node->gate = autograd::save(gate);
    node->up = autograd::save(up);
    autograd::set_history(node, {gate, up}, {y});
  }
  return y;
}

Tensor swiglu_packed(const Tensor& x) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::swiglu_packed_forward(x);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<SwiGLUPackedBackward>();
    node->x = autograd::save(x);
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

}  // namespace hymba
