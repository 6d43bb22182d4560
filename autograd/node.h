// The autograd graph. Running a differentiable op records a Node that knows how to turn the
// gradients of its outputs into gradients of its inputs; Edges point at the nodes that
// produced those inputs. Leaves (parameters) end in an AccumulateGrad node.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace hymba::autograd {

using tensor_list = std::vector<Tensor>;

class Node;

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  uint32_t input_nr = 0;     // which of fn's outputs this input was
  bool valid() const { return fn != nullptr; }
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node();
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual const char* name() const = 0;
  // grads[i] is the gradient of output i; the engine passes zeros for outputs that received
  // none, so nodes never see undefined tensors. Returns one gradient per next_edges entry,
  // in order (undefined allowed where needs_input_grad(i) is false).
  virtual tensor_list apply(tensor_list&& grads) = 0;
  // Drops saved tensors once the backward is done with them (retain_graph = false).
  virtual void release_saved() {}

  bool needs_input_grad(size_t i) const { return i < next_edges.size() && next_edges[i].valid(); }

  struct OutputMeta {
    Shape shape;
    DType dtype;
    Device device;
  };
  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  // Creation order; the engine runs ready nodes newest first, which visits the graph in
  // reverse order of the forward pass (so gradients of the last layers are final first).
  uint64_t sequence_nr;
  bool saved_released = false;
};

// Accumulates an incoming gradient into a leaf's .grad, then runs the leaf's hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf);
  const char* name() const override { return "AccumulateGrad"; }
  tensor_list apply(tensor_list&& grads) override;
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// The edge through which gradients reach `t`: its grad_fn, or its leaf accumulator.
// Invalid (fn == null) when t does not require grad.
Edge gradient_edge(const Tensor& t);

// True when grad mode is on and any input requires grad: only then is a node recorded.
bool compute_requires_grad(std::initializer_list<Tensor> inputs);
bool compute_requires_grad(const std::vector<Tensor>& inputs);

// Connects `node` to `inputs` (next_edges) and makes it the grad_fn of `outputs`.
void set_history(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& outputs);

// What a node stores for backward: the data without the graph (no reference cycles).
inline Tensor save(const Tensor& t) { return t.defined() ? t.detach() : Tensor(); }
// Reads a saved tensor, failing clearly when a second backward runs through a freed graph.
const Tensor& unpack(const Tensor& saved, const Node& node);

}  // namespace hymba::autograd
