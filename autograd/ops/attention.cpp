#include "autograd/ops/attention.h"

#include <tuple>

#include "autograd/node.h"
#include "kernels/attention.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

struct AttentionBackward final : Node {
  Tensor q, k, v, out, lse;
  kernels::AttentionParams params;
  const char* name() const override { return "AttentionBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    auto [dq, dk, dv] = kernels::attention_backward(
        grads[0], autograd::unpack(q, *this), autograd::unpack(k, *this), autograd::unpack(v, *this),
        autograd::unpack(out, *this), autograd::unpack(lse, *this), params, needs_input_grad(0), needs_input_grad(1),
        needs_input_grad(2));
    return {dq, dk, dv};
  }
  void release_saved() override {
    q = k = v = out = lse = Tensor();
  }
};

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window, int64_t num_meta, double scale) {
  const kernels::AttentionParams params{scale, window, num_meta};
  Tensor out, lse;
  {
    NoGradGuard ng;
    std::tie(out, lse) = kernels::attention_forward(q, k, v, params);
  }
  if (autograd::compute_requires_grad({q, k, v})) {
    auto node = std::make_shared<AttentionBackward>();
    // Every gradient needs all of q, k, v (probabilities are recomputed from q and k).
    node->q = autograd::save(q);
    node->k = autograd::save(k);
    node->v = autograd::save(v);
    node->out = autograd::save(out);
    node->lse = lse;
    node->params = params;
    autograd::set_history(node, {q, k, v}, {out});
  }
  return out;
}

}  // namespace hymba
