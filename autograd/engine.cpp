#include "autograd/engine.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/profiler.h"
#include "kernels/elementwise.h"

namespace hymba::autograd {

namespace {

struct ReadyOrder {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

struct NodeState {
  int dependencies = 0;
  tensor_list inputs;  // gradients w.r.t. the node's outputs, summed over incoming edges
};

// capture: for grad(), the accumulators of the requested leaves and where their gradient
// goes; those nodes are not run. Null for backward().
struct Capture {
  std::unordered_map<Node*, size_t> index;
  tensor_list* out = nullptr;
};

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph,
                  const Capture* capture) {
  HYMBA_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(), " gradients");
  NoGradGuard no_grad;  // backward kernels record nothing

  std::vector<Edge> root_edges;
  std::vector<Tensor> root_grads;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    HYMBA_CHECK(r.defined(), "backward: root ", i, " is undefined");
    HYMBA_CHECK(r.requires_grad(), "backward: root ", i, " (", r.meta_str(),
                ") does not require grad: nothing it depends on requires grad, or it was computed under NoGradGuard");
    Tensor g = grads[i];
    if (!g.defined()) {
      HYMBA_CHECK(r.numel() == 1, "backward: a gradient is required for non-scalar root ", r.meta_str());
      g = ones(r.shape(), TensorOptions(r.dtype(), r.device()));
    } else {
      HYMBA_CHECK(g.shape() == r.shape() && g.device() == r.device(), "backward: gradient ", g.meta_str(),
                  " does not match root ", r.meta_str());
    }
    root_edges.push_back(gradient_edge(r));
    root_grads.push_back(g);
  }

  // Count, for every node reachable from the roots, how many edges lead into it.
  std::unordered_map<Node*, NodeState> state;
  std::vector<std::shared_ptr<Node>> keep_alive;  // nodes stay alive for the whole pass
  {
    std::vector<Node*> stack;
    std::unordered_set<Node*> seen;
    for (auto& e : root_edges) {
      if (seen.insert(e.fn.get()).second) {
        stack.push_back(e.fn.get());
        keep_alive.push_back(e.fn);
      }
    }
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (auto& e : n->next_edges) {
        if (!e.valid()) continue;
        state[e.fn.get()].dependencies++;
        if (seen.insert(e.fn.get()).second) {
          stack.push_back(e.fn.get());
          keep_alive.push_back(e.fn);
        }
      }
    }
  }

  auto deliver = [&](Node* n, uint32_t input_nr, Tensor g) {
    NodeState& s = state[n];
    if (s.inputs.size() < n->outputs.size()) s.inputs.resize(n->outputs.size());
    Tensor& slot = s.inputs[input_nr];
    if (!g.defined()) return;
    if (!slot.defined()) {
      slot = std::move(g);
    } else {
      slot = kernels::binary(kernels::BinaryOp::Add, slot, g);  // out of place: g may alias other buffers
    }
  };

  std::priority_queue<Node*, std::vector<Node*>, ReadyOrder> ready;
  for (size_t i = 0; i < root_edges.size(); ++i) deliver(root_edges[i].fn.get(), root_edges[i].input_nr, root_grads[i]);
  {
    std::unordered_set<Node*> queued;
    for (auto& e : root_edges)
      if (state[e.fn.get()].dependencies == 0 && queued.insert(e.fn.get()).second) ready.push(e.fn.get());
  }

  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    NodeState& s = state[n];
    if (capture) {
      auto it = capture->index.find(n);
      if (it != capture->index.end()) {
        if (!s.inputs.empty()) (*capture->out)[it->second] = std::move(s.inputs[0]);
        continue;
      }
      HYMBA_CHECK(!dynamic_cast<AccumulateGrad*>(n), "autograd::grad: the graph reaches a leaf ",
                  shape_str(n->outputs[0].shape),
                  " that requires grad but is not among the requested inputs (a checkpointed function "
                  "used a parameter it was not given?)");
    }
    tensor_list in = std::move(s.inputs);
    in.resize(n->outputs.size());
    for (size_t i = 0; i < in.size(); ++i) {
      if (!in[i].defined()) {
        const auto& m = n->outputs[i];
        in[i] = zeros(m.shape, TensorOptions(m.dtype, m.device));
      }
    }
    tensor_list out;
    {
      profiler::Scope scope(n->name());
      out = n->apply(std::move(in));
    }
    if (!retain_graph) {
      n->release_saved();
      n->saved_released = true;
    }
    HYMBA_CHECK(out.size() == n->next_edges.size() || n->next_edges.empty(), n->name(), " returned ", out.size(),
                " gradients for ", n->next_edges.size(), " inputs");
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.valid()) continue;
      if (out[i].defined()) {
        const auto& m = e.fn->outputs[e.input_nr];
        HYMBA_CHECK(out[i].shape() == m.shape, n->name(), ": gradient for input ", i, " has shape ",
                    shape_str(out[i].shape()), ", expected ", shape_str(m.shape));
      }
      deliver(e.fn.get(), e.input_nr, std::move(out[i]));
      if (--state[e.fn.get()].dependencies == 0) ready.push(e.fn.get());
    }
  }
}

}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  run_backward(roots, grads, retain_graph, nullptr);
}

tensor_list grad(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, const std::vector<Tensor>& inputs,
                 bool retain_graph) {
  tensor_list out(inputs.size());
  Capture capture;
  capture.out = &out;
  std::vector<Edge> keep;  // the accumulators live at least as long as this pass
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    HYMBA_CHECK(t.defined() && t.requires_grad() && t.is_leaf(), "autograd::grad: input ", i,
                " must be a leaf that requires grad, got ", t.defined() ? t.meta_str() : "undefined");
    Edge e = gradient_edge(t);
    HYMBA_CHECK(capture.index.emplace(e.fn.get(), i).second, "autograd::grad: input ", i, " is given twice");
    keep.push_back(std::move(e));
  }
  run_backward(roots, grads, retain_graph, &capture);
  return out;
}

}  // namespace hymba::autograd

namespace hymba {

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::backward({*this}, {grad}, retain_graph);
}

}  // namespace hymba
