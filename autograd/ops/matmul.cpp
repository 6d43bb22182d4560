#include "autograd/ops/matmul.h"

#include "autograd/node.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/shape.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

int64_t batch_numel(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 0; d + 2 < t.dim(); ++d) n *= t.shape()[size_t(d)];
  return n;
}

struct MatmulBackward final : Node {
  Tensor a, b;  // each saved only when the other's gradient needs it
  Shape a_shape, b_shape;
  const char* name() const override { return "MatmulBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor g = grads[0].detach();
    Tensor da, db;
    if (needs_input_grad(0)) {
      // dA = G B^T over the broadcast batch, summed back over dims where A was broadcast.
      da = sum_to(kernels::matmul(g, autograd::unpack(b, *this), false, true), a_shape);
    }
    if (needs_input_grad(1)) {
      const Tensor& A = autograd::unpack(a, *this);
      const int64_t K = A.size(-1), N = g.size(-1);
      if (A.dim() > 2 && batch_numel(A) == shape_numel(Shape(g.shape().begin(), g.shape().end() - 2)) &&
          b_shape.size() >= 2 && shape_numel(b_shape) == K * N) {
        // B shared by the whole batch (a weight): dB = A^T G with the batch flattened into
        // the rows, one gemm instead of a batch of products and a reduction.
        db = kernels::matmul(A.reshape({-1, K}), g.reshape({-1, N}), true, false).view(b_shape);
      } else {
        db = sum_to(kernels::matmul(A, g, true, false), b_shape);
      }
    }
    return {da, db};
  }
  void release_saved() override {
    a = Tensor();
    b = Tensor();
  }
};

Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::matmul(a, b);
  }
  if (autograd::compute_requires_grad({a, b})) {
    auto node = std::make_shared<MatmulBackward>();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    if (b.requires_grad()) node->a = autograd::save(a);
    if (a.requires_grad()) node->b = autograd::save(b);
    autograd::set_history(node, {a, b}, {y});
  }
  return y;
}

struct LinearBackward final : Node {
  Tensor x, w;  // x for dW, w for dx
  Shape x_shape;
  const char* name() const override { return "LinearBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor g = grads[0].detach();
    const int64_t in = x_shape.empty() ? 1 : x_shape.back();
    const int64_t out = g.dim() ? g.size(-1) : 1;
    const Tensor g2 = g.reshape({-1, out});
    Tensor dx, dw, db;
    if (needs_input_grad(0)) dx = kernels::matmul(g2, autograd::unpack(w, *this)).view(x_shape);
    if (needs_input_grad(1))
      dw = kernels::matmul(g2, autograd::unpack(x, *this).reshape({-1, in}), true, false);  // g^T x, one gemm
    if (needs_input_grad(2)) db = kernels::sum(g2, {0});
    return {dx, dw, db};
  }
  void release_saved() override {
    x = Tensor();
    w = Tensor();
  }
};

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  HYMBA_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  HYMBA_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: 0-dim operand: ", a.meta_str(), " and ", b.meta_str());
  // Vectors become 1-row / 1-column matrices through differentiable views, so their
  // gradients come back in the vectors' shapes.
  if (a.dim() == 1 && b.dim() == 1) {
    HYMBA_CHECK(a.size(0) == b.size(0), "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                " cannot be multiplied");
    return squeeze(squeeze(matmul_nd(unsqueeze(a, 0), unsqueeze(b, 1)), -1), -1);
  }
  if (a.dim() == 1) return squeeze(matmul_nd(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul_nd(a, unsqueeze(b, 1)), -1);
  return matmul_nd(a, b);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  HYMBA_CHECK(x.defined() && w.defined(), "linear: undefined input or weight");
  HYMBA_CHECK(w.dim() == 2, "linear: weight must be 2-D (out, in), got ", w.meta_str());
  HYMBA_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", x.meta_str(), " does not match weight ",
              w.meta_str(), " (in features ", x.dim() ? x.size(-1) : 0, " vs ", w.size(1), ")");
  HYMBA_CHECK(x.dtype() == w.dtype(), "linear: dtype mismatch: input ", x.meta_str(), ", weight ", w.meta_str());
  const int64_t in = w.size(1), out = w.size(0);
  if (bias.defined()) {
    HYMBA_CHECK(bias.dim() == 1 && bias.size(0) == out, "linear: bias ", bias.meta_str(), " does not match weight ",
                w.meta_str(), " (expected [", out, "])");
    HYMBA_CHECK(bias.dtype() == w.dtype() && bias.device() == w.device(), "linear: bias ", bias.meta_str(),
                " differs from weight ", w.meta_str());
  }
  Shape y_shape = x.shape();
  y_shape.back() = out;
  Tensor y;
  {
    NoGradGuard ng;
    Tensor x2 = x.reshape({-1, in});
    Tensor y2 = empty({x2.size(0), out}, TensorOptions(x.dtype(), x.device()));
    if (bias.defined()) {
      // The bias seeds C and the gemm adds onto it (beta = 1): no second pass over y.
      y2.copy_(bias.detach().expand({x2.size(0), out}));
      kernels::matmul_out(y2, x2, w, false, true, 1.0, 1.0);
    } else {
      kernels::matmul_out(y2, x2, w, false, true, 1.0, 0.0);
    }
    y = y2.view(y_shape);
  }
  if (autograd::compute_requires_grad({x, w, bias})) {
    auto node = std::make_shared<LinearBackward>();
    node->x_shape = x.shape();
    if (w.requires_grad()) node->x = autograd::save(x);
    if (x.requires_grad()) node->w = autograd::save(w);
    autograd::set_history(node, {x, w, bias}, {y});
  }
  return y;
}

}  // namespace hymba
