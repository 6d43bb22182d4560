// The backward engine: from root tensors, runs every reachable node once all gradients
// flowing into it have arrived, newest node first, accumulating into leaf .grad tensors.
//
// Leaf hooks: an AccumulateGrad node becomes ready only after every path into the leaf has
// delivered its gradient, so its hooks see the leaf's final gradient for this backward,
// exactly once. Data parallelism launches its bucketed all-reduce from these hooks.
#pragma once

#include <vector>

#include "autograd/node.h"

namespace hymba::autograd {

// grads[i] is the gradient of roots[i]; undefined means ones (only for one-element roots).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph = false);

}  // namespace hymba::autograd
