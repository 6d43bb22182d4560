#include "autograd/ops/reduce.h"

#include "autograd/node.h"
#include "kernels/reduce.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

// Number of elements a reduction over `dims` (empty: all) of `shape` combines.
int64_t reduced_count(const Shape& shape, const std::vector<int64_t>& dims, const char* op) {
  if (dims.empty()) return shape_numel(shape);
  int64_t n = 1;
  for (int64_t d : dims)
    if (!shape.empty()) n *= shape[size_t(wrap_dim(d, int64_t(shape.size()), op))];
  return n;
}

struct SumBackward final : Node {
  Shape in_shape;
  std::vector<int64_t> dims;
  bool keepdim = false;
  double scale = 1.0;  // 1/n for mean
  bool is_mean = false;
  const char* name() const override { return is_mean ? "MeanBackward" : "SumBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    return {kernels::sum_backward(grads[0], in_shape, dims, keepdim, scale)};
  }
};

Tensor sum_or_mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
  const char* op = is_mean ? "mean" : "sum";
  HYMBA_CHECK(x.defined(), op, ": undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = is_mean ? kernels::mean(x, dims, keepdim) : kernels::sum(x, dims, keepdim);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<SumBackward>();
    node->in_shape = x.shape();
    node->dims = dims;
    node->keepdim = keepdim;
    node->is_mean = is_mean;
    node->scale = is_mean ? 1.0 / double(reduced_count(x.shape(), dims, op)) : 1.0;
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

struct MaxBackward final : Node {
  Shape in_shape;
  int64_t dim = 0;
  bool keepdim = false;
  Tensor indices;
  const char* name() const override { return "MaxBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    return {kernels::max_backward(grads[0], autograd::unpack(indices, *this), in_shape, dim, keepdim)};
  }
  void release_saved() override { indices = Tensor(); }
};

}  // namespace

Tensor sum(const Tensor& x) { return sum_or_mean(x, {}, false, false); }
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, false);
}
Tensor mean(const Tensor& x) { return sum_or_mean(x, {}, false, true); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, true);
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  HYMBA_CHECK(x.defined(), "max: undefined input");
  Tensor values, indices;
  {
    NoGradGuard ng;
    std::tie(values, indices) = kernels::max(x, dim, keepdim);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<MaxBackward>();
    node->in_shape = x.shape();
    node->dim = dim;
    node->keepdim = keepdim;
    node->indices = indices;  // i64, never part of a graph: no save() needed
    autograd::set_history(node, {x}, {values});
  }
  return {values, indices};
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  HYMBA_CHECK(grad.defined(), "sum_to: undefined gradient");
  const Shape& gs = grad.shape();
  if (gs == shape) return grad;
  HYMBA_CHECK(shape.size() <= gs.size(), "sum_to: cannot reduce ", shape_str(gs), " to ", shape_str(shape));
  const size_t lead = gs.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < gs.size(); ++i) {
    if (i < lead) {
      dims.push_back(int64_t(i));
    } else if (shape[i - lead] != gs[i]) {
      HYMBA_CHECK(shape[i - lead] == 1, "sum_to: cannot reduce ", shape_str(gs), " to ", shape_str(shape),
                  " (dim ", i, " has size ", gs[i], ", target ", shape[i - lead], ")");
      dims.push_back(int64_t(i));
    }
  }
  NoGradGuard ng;
  if (dims.empty()) return grad;  // the kernel would read an empty list as "all dims"
  // keepdim keeps the target's size-1 dims in place; the view then drops the leading ones.
  return kernels::sum(grad.detach(), dims, true).view(shape);
}

}  // namespace hymba
