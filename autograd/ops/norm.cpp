#include "autograd/ops/norm.h"

#include <tuple>

#include "autograd/node.h"
#include "kernels/norm.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

struct RMSNormBackward final : Node {
  Tensor x, w, rstd;
  const char* name() const override { return "RMSNormBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    auto [dx, dw] = kernels::rms_norm_backward(grads[0], autograd::unpack(x, *this), autograd::unpack(w, *this),
                                               autograd::unpack(rstd, *this), needs_input_grad(0),
                                               needs_input_grad(1));
    return {dx, dw};
  }
  void release_saved() override {
    x = Tensor();
    w = Tensor();
    rstd = Tensor();
  }
};

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor y, rstd;
  {
    NoGradGuard ng;
    std::tie(y, rstd) = kernels::rms_norm_forward(x, weight, eps);
  }
  if (autograd::compute_requires_grad({x, weight})) {
    auto node = std::make_shared<RMSNormBackward>();
    // Both are needed whichever input wants a gradient: dx reads w, dw reads x.
    node->x = autograd::save(x);
    node->w = autograd::save(weight);
    node->rstd = rstd;
    autograd::set_history(node, {x, weight}, {y});
  }
  return y;
}

}  // namespace hymba
