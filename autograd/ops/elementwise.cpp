#include "autograd/ops/elementwise.h"

#include "autograd/node.h"
#include "autograd/ops/reduce.h"
#include "kernels/elementwise.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;
using kernels::BinaryOp;
using kernels::ScalarOp;
using kernels::UnaryOp;

namespace {

struct BinaryBackward final : Node {
  BinaryOp op;
  Shape a_shape, b_shape;
  Tensor a, b;  // saved only where the gradient needs them
  const char* name() const override {
    switch (op) {
      case BinaryOp::Add: return "AddBackward";
      case BinaryOp::Sub: return "SubBackward";
      case BinaryOp::Mul: return "MulBackward";
      case BinaryOp::Div: return "DivBackward";
    }
    return "BinaryBackward";
  }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& g = grads[0];
    Tensor ga, gb;
    switch (op) {
      case BinaryOp::Add:
        if (needs_input_grad(0)) ga = sum_to(g, a_shape);
        if (needs_input_grad(1)) gb = sum_to(g, b_shape);
        break;
      case BinaryOp::Sub:
        if (needs_input_grad(0)) ga = sum_to(g, a_shape);
        if (needs_input_grad(1)) gb = sum_to(kernels::unary(UnaryOp::Neg, g), b_shape);
        break;
      case BinaryOp::Mul:
        if (needs_input_grad(0)) ga = sum_to(kernels::binary(BinaryOp::Mul, g, autograd::unpack(b, *this)), a_shape);
        if (needs_input_grad(1)) gb = sum_to(kernels::binary(BinaryOp::Mul, g, autograd::unpack(a, *this)), b_shape);
        break;
      case BinaryOp::Div: {
        const Tensor& bb = autograd::unpack(b, *this);
        Tensor g_over_b = kernels::binary(BinaryOp::Div, g, bb);
        if (needs_input_grad(0)) ga = sum_to(g_over_b, a_shape);
        if (needs_input_grad(1)) {
          // d(a/b)/db = -a/b^2 = -(a/b)/b
          Tensor q = kernels::binary(BinaryOp::Div, autograd::unpack(a, *this), bb);
          gb = sum_to(kernels::unary(UnaryOp::Neg, kernels::binary(BinaryOp::Mul, g_over_b, q)), b_shape);
        }
        break;
      }
    }
    return {ga, gb};
  }
  void release_saved() override {
    a = Tensor();
    b = Tensor();
  }
};

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out;
  {
    NoGradGuard ng;
    out = kernels::binary(op, a, b);
  }
  if (autograd::compute_requires_grad({a, b})) {
    auto node = std::make_shared<BinaryBackward>();
    node->op = op;
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    if (op == BinaryOp::Mul && b.requires_grad()) node->a = autograd::save(a);
    if (op == BinaryOp::Mul && a.requires_grad()) node->b = autograd::save(b);
    if (op == BinaryOp::Div) {
      node->b = autograd::save(b);
      if (b.requires_grad()) node->a = autograd::save(a);
    }
    autograd::set_history(node, {a, b}, {out});
  }
  return out;
}

struct UnaryBackward final : Node {
  UnaryOp op;
  Tensor x, y;
  const char* name() const override { return "UnaryBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    bool uses_x = op == UnaryOp::Log || op == UnaryOp::Abs;
    bool uses_y = op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt;
    Tensor xx = uses_x ? autograd::unpack(x, *this) : grads[0];
    Tensor yy = uses_y ? autograd::unpack(y, *this) : grads[0];
    return {kernels::unary_backward(op, grads[0], xx, yy)};
  }
  void release_saved() override {
    x = Tensor();
    y = Tensor();
  }
};

Tensor unary_op(UnaryOp op, const Tensor& x) {
  Tensor out;
  {
    NoGradGuard ng;
    out = kernels::unary(op, x);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<UnaryBackward>();
    node->op = op;
    if (op == UnaryOp::Log || op == UnaryOp::Abs) node->x = autograd::save(x);
    if (op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt) node->y = autograd::save(out);
    autograd::set_history(node, {x}, {out});
  }
  return out;
}

struct ScalarBackward final : Node {
  ScalarOp op;
  double s = 0;
  Tensor x, y;
  const char* name() const override { return "ScalarOpBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    const Tensor& g = grads[0];
    switch (op) {
      case ScalarOp::Add: return {g};
      case ScalarOp::Mul: return {kernels::scalar(ScalarOp::Mul, g, s)};
      case ScalarOp::RSub: return {kernels::unary(UnaryOp::Neg, g)};
      case ScalarOp::RDiv: {  // d(s/x)/dx = -s/x^2 = -y/x
        const Tensor& xx = autograd::unpack(x, *this);
        Tensor y_over_x = kernels::binary(BinaryOp::Div, autograd::unpack(y, *this), xx);
        return {kernels::unary(UnaryOp::Neg, kernels::binary(BinaryOp::Mul, g, y_over_x))};
      }
      case ScalarOp::Pow: {  // p x^(p-1)
        const Tensor& xx = autograd::unpack(x, *this);
        Tensor d = s == 2.0 ? kernels::scalar(ScalarOp::Mul, xx, 2.0)
                            : kernels::scalar(ScalarOp::Mul, kernels::scalar(ScalarOp::Pow, xx, s - 1.0), s);
        return {kernels::binary(BinaryOp::Mul, g, d)};
      }
    }
    return {Tensor()};
  }
  void release_saved() override {
    x = Tensor();
    y = Tensor();
  }
};

Tensor scalar_op(ScalarOp op, const Tensor& x, double s) {
  Tensor out;
  {
    NoGradGuard ng;
    out = kernels::scalar(op, x, s);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<ScalarBackward>();
    node->op = op;
    node->s = s;
    if (op == ScalarOp::RDiv || op == ScalarOp::Pow) node->x = autograd::save(x);
    if (op == ScalarOp::RDiv) node->y = autograd::save(out);
    autograd::set_history(node, {x}, {out});
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, a, b); }

Tensor add(const Tensor& x, double s) { return scalar_op(ScalarOp::Add, x, s); }
Tensor mul(const Tensor& x, double s) { return scalar_op(ScalarOp::Mul, x, s); }
Tensor rsub(const Tensor& x, double s) { return scalar_op(ScalarOp::RSub, x, s); }
Tensor rdiv(const Tensor& x, double s) { return scalar_op(ScalarOp::RDiv, x, s); }
Tensor pow(const Tensor& x, double p) { return scalar_op(ScalarOp::Pow, x, p); }

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, x); }

}  // namespace hymba
