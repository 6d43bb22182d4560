#include "autograd/checkpoint.h"

#include "autograd/engine.h"
#include "autograd/node.h"

namespace hymba::autograd {

namespace {

// Grad mode on for a scope (the engine runs node backwards with it off).
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

// next_edges: the inputs, then the parameters.
struct CheckpointBackward final : Node {
  CheckpointFn fn;
  tensor_list inputs;  // saved (detached)
  size_t num_inputs = 0;
  tensor_list params;  // the parameters themselves (leaves: holding them creates no cycle)

  const char* name() const override { return "CheckpointBackward"; }

  tensor_list apply(tensor_list&& grads) override {
    // Leaves for the recomputation: the saved inputs, cut from the outer graph.
    tensor_list leaves;
    std::vector<Tensor> wrt;
    std::vector<size_t> wrt_slot;  // next_edges index of each wrt entry
    leaves.reserve(num_inputs);
    for (size_t i = 0; i < num_inputs; ++i) {
      const Tensor& saved = unpack(inputs[i], *this);
      Tensor leaf = saved.detach();
      if (needs_input_grad(i)) {
        leaf.set_requires_grad(true);
        wrt.push_back(leaf);
        wrt_slot.push_back(i);
      }
      leaves.push_back(std::move(leaf));
    }
    for (size_t j = 0; j < params.size(); ++j) {
      if (!needs_input_grad(num_inputs + j)) continue;
      wrt.push_back(params[j]);
      wrt_slot.push_back(num_inputs + j);
    }

    std::vector<Tensor> outs;
    {
      EnableGradGuard grad_on;
      outs = fn(leaves);
    }
    HYMBA_CHECK(outs.size() == outputs.size(), "checkpoint: the recomputation returned ", outs.size(),
                " outputs, the forward ", outputs.size());
    std::vector<Tensor> roots, root_grads;
    for (size_t k = 0; k < outs.size(); ++k) {
      HYMBA_CHECK(outs[k].defined() && outs[k].shape() == outputs[k].shape && outs[k].dtype() == outputs[k].dtype,
                  "checkpoint: recomputed output ", k, " differs in shape or dtype from the forward (is the "
                  "function deterministic?)");
      if (!outs[k].requires_grad()) continue;
      roots.push_back(outs[k]);
      root_grads.push_back(grads[k]);
    }

    tensor_list result(next_edges.size());
    if (roots.empty() || wrt.empty()) return result;
    tensor_list g = grad(roots, root_grads, wrt);
    for (size_t w = 0; w < wrt.size(); ++w) result[wrt_slot[w]] = std::move(g[w]);
    return result;
  }

  void release_saved() override {
    inputs.clear();
    fn = nullptr;
  }
};

}  // namespace

std::vector<Tensor> checkpoint(CheckpointFn fn, const std::vector<Tensor>& inputs, const std::vector<Tensor>& params) {
  for (const Tensor& t : inputs) HYMBA_CHECK(t.defined(), "checkpoint: an input is undefined");
  std::vector<Tensor> edges_of = inputs;
  edges_of.insert(edges_of.end(), params.begin(), params.end());
  if (!compute_requires_grad(edges_of)) return fn(inputs);

  std::vector<Tensor> outs;
  {
    NoGradGuard no_grad;
    outs = fn(inputs);
  }
  for (Tensor& o : outs) {
    HYMBA_CHECK(o.defined(), "checkpoint: the function returned an undefined tensor");
    HYMBA_CHECK(is_floating(o.dtype()), "checkpoint: output ", o.meta_str(),
                " is not floating; return only differentiable outputs from a checkpointed function");
    // A fresh tensor object: an output may be an input itself or a view of one, whose
    // autograd history must stay as it is.
    o = o.detach();
  }
  auto node = std::make_shared<CheckpointBackward>();
  node->fn = std::move(fn);
  node->num_inputs = inputs.size();
  for (const Tensor& t : inputs) node->inputs.push_back(save(t));
  node->params = params;
  set_history(node, edges_of, outs);
  return outs;
}

}  // namespace hymba::autograd
