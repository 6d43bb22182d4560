// Activation recomputation ("gradient checkpointing"): trade compute for memory.
//
//   outputs = checkpoint(fn, inputs, params)
//
// runs fn(inputs) forward WITHOUT recording a graph, so none of its intermediate activations
// stay alive; the outputs get one autograd node that keeps only `inputs`. In backward that
// node re-runs fn with grad enabled on detached copies of the inputs, back-propagates the
// incoming output gradients through the recomputed graph (a nested autograd::grad) and
// returns the gradients of the inputs AND of the parameters to the outer backward pass.
// The parameters are edges of the node like the inputs, so their gradients accumulate into
// .grad by the outer pass as usual, and their leaf hooks run exactly once per outer
// backward with the final gradient (data parallelism relies on that).
//
// Contract:
//  - fn must be deterministic: the recomputation must give the same values as the first
//    run. Our models have no dropout; a function drawing random numbers would need its
//    generator state saved and restored (not supported).
//  - `params` must list every tensor that requires grad and is read by fn without being
//    one of `inputs` (a module's parameters()); the backward fails clearly otherwise.
//  - fn must not keep tensors it computes beyond the call (e.g. in a store shared with
//    code outside the checkpoint): they would be graph-less in forward.
//
// When grad mode is off or nothing requires grad, fn simply runs.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace hymba::autograd {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

std::vector<Tensor> checkpoint(CheckpointFn fn, const std::vector<Tensor>& inputs, const std::vector<Tensor>& params);

}  // namespace hymba::autograd
