#include "autograd/ops/shape.h"

#include <numeric>

#include "autograd/node.h"
#include "autograd/ops/reduce.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

// Records `make()` as y's grad_fn when x needs a gradient; builds no node otherwise.
template <typename MakeNode>
Tensor finish(const Tensor& x, const Tensor& y, MakeNode&& make) {
  if (autograd::compute_requires_grad({x})) autograd::set_history(make(), {x}, {y});
  return y;
}

// reshape, view, flatten, squeeze, unsqueeze: same elements in the same order.
struct ReshapeBackward final : Node {
  Shape in_shape;
  const char* op = "ReshapeBackward";
  const char* name() const override { return op; }
  tensor_list apply(tensor_list&& grads) override { return {grads[0].detach().reshape(in_shape)}; }
};

template <typename F>
Tensor reshape_like(const Tensor& x, const char* node_name, F&& raw) {
  HYMBA_CHECK(x.defined(), node_name, ": undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = raw(x);
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<ReshapeBackward>();
    n->in_shape = x.shape();
    n->op = node_name;
    return n;
  });
}

struct PermuteBackward final : Node {
  std::vector<int64_t> inverse;
  const char* name() const override { return "PermuteBackward"; }
  tensor_list apply(tensor_list&& grads) override { return {grads[0].detach().permute(inverse)}; }
};

// narrow, slice, select: the gradient lands in a zero tensor through the same view.
struct SliceBackward final : Node {
  Shape in_shape;
  int64_t dim = 0, start = 0, end = 0, step = 1;
  bool select = false;  // select(dim, start): the dim is dropped
  const char* name() const override { return select ? "SelectBackward" : "SliceBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& g = grads[0];
    Tensor dx = zeros(in_shape, TensorOptions(g.dtype(), g.device()));
    (select ? dx.select(dim, start) : dx.slice(dim, start, end, step)).copy_(g.detach());
    return {dx};
  }
};

struct ExpandBackward final : Node {
  Shape in_shape;
  const char* name() const override { return "ExpandBackward"; }
  tensor_list apply(tensor_list&& grads) override { return {sum_to(grads[0], in_shape)}; }
};

struct IdentityBackward final : Node {
  const char* name() const override { return "ContiguousBackward"; }
  tensor_list apply(tensor_list&& grads) override { return {grads[0]}; }
};

struct CatBackward final : Node {
  int64_t dim = 0;
  std::vector<int64_t> sizes;
  const char* name() const override { return "CatBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor g = grads[0].detach();
    tensor_list out(sizes.size());
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (needs_input_grad(i)) out[i] = g.narrow(dim, off, sizes[i]);
      off += sizes[i];
    }
    return out;
  }
};

struct SplitBackward final : Node {
  int64_t dim = 0;
  std::vector<int64_t> sizes;
  Shape in_shape;
  const char* name() const override { return "SplitBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    // The engine hands zeros for pieces that received no gradient, so this is a plain cat.
    Tensor dx = empty(in_shape, TensorOptions(grads[0].dtype(), grads[0].device()));
    int64_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] > 0) dx.narrow(dim, off, sizes[i]).copy_(grads[i].detach());
      off += sizes[i];
    }
    return {dx};
  }
};

struct CastBackward final : Node {
  DType in_dtype = DType::F32;
  Device in_device;
  bool device_move = false;
  const char* name() const override { return device_move ? "ToDeviceBackward" : "CastBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor g = grads[0].detach();
    return {device_move ? g.to(in_device) : g.to(in_dtype)};
  }
};

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  return reshape_like(x, "ReshapeBackward", [&](const Tensor& t) { return t.reshape(shape); });
}

Tensor view(const Tensor& x, const Shape& shape) {
  return reshape_like(x, "ViewBackward", [&](const Tensor& t) { return t.view(shape); });
}

Tensor flatten(const Tensor& x, int64_t start, int64_t end) {
  return reshape_like(x, "FlattenBackward", [&](const Tensor& t) { return t.flatten(start, end); });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  return reshape_like(x, "SqueezeBackward", [&](const Tensor& t) { return t.squeeze(dim); });
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  return reshape_like(x, "UnsqueezeBackward", [&](const Tensor& t) { return t.unsqueeze(dim); });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  HYMBA_CHECK(x.defined(), "permute: undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = x.permute(dims);
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<PermuteBackward>();
    n->inverse.resize(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) n->inverse[size_t(wrap_dim(dims[i], x.dim(), "permute"))] = int64_t(i);
    return n;
  });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  HYMBA_CHECK(x.defined(), "transpose: undefined input");
  std::vector<int64_t> p(size_t(x.dim()));
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[size_t(wrap_dim(d0, x.dim(), "transpose"))], p[size_t(wrap_dim(d1, x.dim(), "transpose"))]);
  return permute(x, p);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  HYMBA_CHECK(x.defined(), "slice: undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = x.slice(dim, start, end, step);  // validates and names the op
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<SliceBackward>();
    n->in_shape = x.shape();
    n->dim = wrap_dim(dim, x.dim(), "slice");
    const int64_t size = x.shape()[size_t(n->dim)];
    n->start = start < 0 ? start + size : start;
    n->end = end < 0 ? end + size : end;
    n->step = step;
    return n;
  });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  HYMBA_CHECK(x.defined(), "narrow: undefined input");
  const int64_t d = wrap_dim(dim, x.dim(), "narrow");
  const int64_t size = x.shape()[size_t(d)];
  HYMBA_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow: start ", start, " length ", length,
              " out of range for dim ", dim, " of ", x.meta_str());
  return slice(x, d, start, start + length, 1);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  HYMBA_CHECK(x.defined(), "select: undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = x.select(dim, index);
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<SliceBackward>();
    n->in_shape = x.shape();
    n->dim = wrap_dim(dim, x.dim(), "select");
    n->start = index < 0 ? index + x.shape()[size_t(n->dim)] : index;
    n->select = true;
    return n;
  });
}

Tensor expand(const Tensor& x, const Shape& shape) {
  HYMBA_CHECK(x.defined(), "expand: undefined input");
  Tensor y;
  {
    NoGradGuard ng;
    y = x.expand(shape);
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<ExpandBackward>();
    n->in_shape = x.shape();
    return n;
  });
}

Tensor contiguous(const Tensor& x) {
  HYMBA_CHECK(x.defined(), "contiguous: undefined input");
  if (x.is_contiguous()) return x;
  Tensor y;
  {
    NoGradGuard ng;
    y = x.contiguous();
  }
  return finish(x, y, [] { return std::make_shared<IdentityBackward>(); });
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  HYMBA_CHECK(!tensors.empty(), "cat: no tensors given");
  const Tensor& t0 = tensors[0];
  HYMBA_CHECK(t0.defined() && t0.dim() > 0, "cat: tensors must be at least 1-D, got ", t0.meta_str());
  const int64_t d = wrap_dim(dim, t0.dim(), "cat");
  Shape out_shape = t0.shape();
  out_shape[size_t(d)] = 0;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    HYMBA_CHECK(t.defined(), "cat: tensor ", i, " is undefined");
    bool same = t.dim() == t0.dim();
    for (int64_t k = 0; same && k < t.dim(); ++k) same = k == d || t.shape()[size_t(k)] == t0.shape()[size_t(k)];
    HYMBA_CHECK(same, "cat: tensor ", i, " ", t.meta_str(), " does not match tensor 0 ", t0.meta_str(),
                " outside dim ", dim);
    HYMBA_CHECK(t.dtype() == t0.dtype() && t.device() == t0.device(), "cat: tensor ", i, " ", t.meta_str(),
                " differs in dtype or device from tensor 0 ", t0.meta_str());
    sizes.push_back(t.shape()[size_t(d)]);
    out_shape[size_t(d)] += sizes.back();
  }
  Tensor y = empty(out_shape, TensorOptions(t0.dtype(), t0.device()));
  {
    NoGradGuard ng;
    int64_t off = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (sizes[i] > 0) y.narrow(d, off, sizes[i]).copy_(tensors[i].detach());
      off += sizes[i];
    }
  }
  if (autograd::compute_requires_grad(tensors)) {
    auto n = std::make_shared<CatBackward>();
    n->dim = d;
    n->sizes = sizes;
    autograd::set_history(n, tensors, {y});
  }
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  HYMBA_CHECK(x.defined() && x.dim() > 0, "split: expected a tensor of at least 1 dim, got ",
              x.defined() ? x.meta_str() : "undefined");
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    HYMBA_CHECK(s >= 0, "split: negative size in ", shape_str(sizes));
    total += s;
  }
  HYMBA_CHECK(total == x.shape()[size_t(d)], "split: sizes ", shape_str(sizes), " sum to ", total, ", but dim ", dim,
              " of ", x.meta_str(), " has ", x.shape()[size_t(d)]);
  std::vector<Tensor> outs;
  {
    NoGradGuard ng;
    int64_t off = 0;
    for (int64_t s : sizes) {
      outs.push_back(x.narrow(d, off, s));
      off += s;
    }
  }
  if (autograd::compute_requires_grad({x}) && !outs.empty()) {
    auto n = std::make_shared<SplitBackward>();
    n->dim = d;
    n->sizes = sizes;
    n->in_shape = x.shape();
    autograd::set_history(n, {x}, outs);
  }
  return outs;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  HYMBA_CHECK(chunks >= 1, "chunk: chunks must be >= 1, got ", chunks);
  HYMBA_CHECK(x.defined() && x.dim() > 0, "chunk: expected a tensor of at least 1 dim");
  const int64_t n = x.size(wrap_dim(dim, x.dim(), "chunk"));
  const int64_t each = std::max<int64_t>(1, (n + chunks - 1) / chunks);
  std::vector<int64_t> sizes;
  for (int64_t off = 0; off < n; off += each) sizes.push_back(std::min(each, n - off));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, dim);
}

Tensor cast(const Tensor& x, DType dtype) {
  HYMBA_CHECK(x.defined(), "cast: undefined input");
  if (x.dtype() == dtype) return x;
  Tensor y;
  {
    NoGradGuard ng;
    y = x.to(dtype);
  }
  if (!is_floating(dtype)) return y;  // integers carry no gradient
  return finish(x, y, [&] {
    auto n = std::make_shared<CastBackward>();
    n->in_dtype = x.dtype();
    return n;
  });
}

Tensor to_device(const Tensor& x, Device device) {
  HYMBA_CHECK(x.defined(), "to_device: undefined input");
  if (x.device() == device) return x;
  Tensor y;
  {
    NoGradGuard ng;
    y = x.to(device);
  }
  return finish(x, y, [&] {
    auto n = std::make_shared<CastBackward>();
    n->in_device = x.device();
    n->device_move = true;
    return n;
  });
}

}  // namespace hymba
