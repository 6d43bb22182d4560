#include "autograd/ops/selective_scan.h"

#include <tuple>

#include "autograd/node.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

struct SelectiveScanBackward final : Node {
  // Inputs in edge order: u, delta, A, B, C, D, z, delta_bias (optional ones may be undefined).
  Tensor u, delta, A, B, C, D, z, delta_bias, chunk_states;
  bool delta_softplus = true;
  int64_t chunk = kernels::kScanChunk;
  const char* name() const override { return "SelectiveScanBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    using autograd::unpack;
    // Optional inputs are saved undefined when absent; unpack (which rejects a freed graph
    // through the required ones) only what was given.
    auto opt = [&](const Tensor& t) { return t.defined() ? unpack(t, *this) : Tensor(); };
    // The kernel produces every gradient in the same pass over the states, so there is no
    // saving in asking for fewer; unneeded ones are dropped here.
    kernels::SelectiveScanGrads g = kernels::selective_scan_backward(
        grads[0], unpack(u, *this), unpack(delta, *this), unpack(A, *this), unpack(B, *this), unpack(C, *this),
        opt(D), opt(z), opt(delta_bias), delta_softplus, unpack(chunk_states, *this), chunk);
    tensor_list out = {g.du, g.ddelta, g.dA, g.dB, g.dC, g.dD, g.dz, g.ddelta_bias};
    for (size_t i = 0; i < out.size(); ++i)
      if (!needs_input_grad(i)) out[i] = Tensor();
    return out;
  }
  void release_saved() override {
    u = delta = A = B = C = D = z = delta_bias = chunk_states = Tensor();
  }
};

}  // namespace

std::pair<Tensor, Tensor> selective_scan_with_state(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                    const Tensor& B, const Tensor& C, const Tensor& D,
                                                    const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                                                    int64_t chunk) {
  Tensor out, last, states;
  {
    NoGradGuard ng;
    std::tie(out, last, states) =
        kernels::selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk);
  }
  if (autograd::compute_requires_grad({u, delta, A, B, C, D, z, delta_bias})) {
    auto node = std::make_shared<SelectiveScanBackward>();
    node->u = autograd::save(u);
    node->delta = autograd::save(delta);
    node->A = autograd::save(A);
    node->B = autograd::save(B);
    node->C = autograd::save(C);
    node->D = autograd::save(D);
    node->z = autograd::save(z);
    node->delta_bias = autograd::save(delta_bias);
    node->chunk_states = states;
    node->delta_softplus = delta_softplus;
    node->chunk = chunk;
    autograd::set_history(node, {u, delta, A, B, C, D, z, delta_bias}, {out});
  }
  return {out, last};
}

Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                      const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                      int64_t chunk) {
  return selective_scan_with_state(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk).first;
}

Tensor selective_scan_step(const Tensor& state, const Tensor& u, const Tensor& delta, const Tensor& A,
                           const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus) {
  NoGradGuard ng;
  return kernels::selective_scan_step(state, u, delta, A, B, C, D, z, delta_bias, delta_softplus);
}

}  // namespace hymba
