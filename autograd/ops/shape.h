// Differentiable shape ops. The views share storage with their input, exactly like the raw
// Tensor member views of the same names (core/tensor.h); their backward puts the gradient
// back into the input's shape through the same view.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace hymba {

Tensor reshape(const Tensor& x, const Shape& shape);  // a view when strides allow, else a copy
Tensor view(const Tensor& x, const Shape& shape);     // always a view; throws when impossible
Tensor flatten(const Tensor& x, int64_t start = 0, int64_t end = -1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);  // -1 keeps a dim; gradient summed back
Tensor squeeze(const Tensor& x, int64_t dim);        // no-op when that dim is not 1
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);                  // x itself when already contiguous

// Concatenation along `dim`; every tensor has the same shape except at `dim`.
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// Views of consecutive pieces along `dim` with the given sizes (summing to the dim's size).
// One autograd node for all pieces: the backward concatenates their gradients (zeros for a
// piece that got none) instead of scattering each into its own full-size buffer.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// `chunks` pieces of ceil(size / chunks) along `dim` (the last may be smaller; fewer pieces
// when the size runs out), like torch.chunk.
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);

// Dtype / device changes; the gradient is converted back to the input's dtype / device.
// cast to a non-floating dtype ends the graph (integers carry no gradient).
Tensor cast(const Tensor& x, DType dtype);
Tensor to_device(const Tensor& x, Device device);

}  // namespace hymba
