// The backward engine: from root tensors, runs every reachable node once all gradients
// flowing into it have arrived, newest node first, accumulating into leaf .grad tensors.
//
// Leaf hooks: an AccumulateGrad node becomes ready only after every path into the leaf has
// delivered its gradient, so its hooks see the leaf's final gradient for this backward,
// exactly once. Data parallelism launches its bucketed all-reduce from these hooks.
//
// Re-entrancy: a node's backward may run a nested pass with grad() (activation
// recomputation, autograd/checkpoint.h). grad() never touches a leaf's .grad nor runs its
// hooks: it hands the gradients back, and the node returns them to the outer pass through
// its own edges to those leaves, so each leaf still accumulates and runs its hooks once per
// outer backward, after its last gradient arrived.
#pragma once

#include <vector>

#include "autograd/node.h"

namespace hymba::autograd {

// grads[i] is the gradient of roots[i]; undefined means ones (only for one-element roots).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph = false);

// The gradients of `roots` (seeded with `grads`, as above) with respect to `inputs`, which
// must be leaves that require grad: one tensor per input, undefined where no gradient
// reached it (like torch.autograd.grad). No .grad is modified and no hook runs. Every leaf
// that requires grad and is reachable from the roots must be among `inputs`: reaching
// another one is an error, since its gradient would otherwise be lost.
tensor_list grad(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, const std::vector<Tensor>& inputs,
                 bool retain_graph = false);

}  // namespace hymba::autograd
