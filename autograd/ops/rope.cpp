#include "autograd/ops/rope.h"

#include "autograd/node.h"
#include "kernels/rope.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

// A rotation is linear and orthogonal, so backward needs no saved tensor: it rotates the
// gradient by -angle.
struct RopeBackward final : Node {
  double base = 0;
  int64_t offset = 0;
  const char* name() const override { return "RopeBackward"; }
  tensor_list apply(tensor_list&& grads) override { return {kernels::rope_backward(grads[0], base, offset)}; }
};

}  // namespace

Tensor rope(const Tensor& x, double base, int64_t offset) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::rope_forward(x, base, offset);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<RopeBackward>();
    node->base = base;
    node->offset = offset;
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

}  // namespace hymba
