#include "autograd/ops/meta_tokens.h"

#include "autograd/node.h"
#include "kernels/meta_tokens.h"

namespace hymba {

using autograd::Node;
using autograd::tensor_list;

namespace {

struct PrependMetaBackward final : Node {
  int64_t num_meta = 0;
  const char* name() const override { return "PrependMetaBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    auto [dmeta, dx] = kernels::prepend_meta_backward(grads[0], num_meta, needs_input_grad(0), needs_input_grad(1));
    return {dmeta, dx};
  }
};

struct DropMetaBackward final : Node {
  int64_t num_meta = 0;
  const char* name() const override { return "DropMetaBackward"; }
  tensor_list apply(tensor_list&& grads) override { return {kernels::drop_meta_backward(grads[0], num_meta)}; }
};

struct EmbedWithMetaBackward final : Node {
  Tensor ids;
  int64_t vocab = 0, num_meta = 0, padding_idx = -1;
  const char* name() const override { return "EmbedWithMetaBackward"; }
  tensor_list apply(tensor_list&& grads) override {
    auto [dw, dmeta] = kernels::embed_with_meta_backward(grads[0], autograd::unpack(ids, *this), vocab, num_meta,
                                                         padding_idx, needs_input_grad(0), needs_input_grad(1));
    return {dw, dmeta};
  }
  void release_saved() override { ids = Tensor(); }
};

}  // namespace

Tensor prepend_meta(const Tensor& meta, const Tensor& x) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::prepend_meta_forward(meta, x);
  }
  if (autograd::compute_requires_grad({meta, x})) {
    auto node = std::make_shared<PrependMetaBackward>();
    node->num_meta = meta.size(0);
    autograd::set_history(node, {meta, x}, {y});
  }
  return y;
}

Tensor drop_meta(const Tensor& x, int64_t num_meta) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::drop_meta_forward(x, num_meta);
  }
  if (autograd::compute_requires_grad({x})) {
    auto node = std::make_shared<DropMetaBackward>();
    node->num_meta = num_meta;
    autograd::set_history(node, {x}, {y});
  }
  return y;
}

Tensor embed_with_meta(const Tensor& weight, const Tensor& ids, const Tensor& meta, int64_t padding_idx) {
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::embed_with_meta_forward(weight, ids, meta);
  }
  if (autograd::compute_requires_grad({weight, meta})) {
    auto node = std::make_shared<EmbedWithMetaBackward>();
    node->ids = autograd::save(ids);
    node->vocab = weight.size(0);
    node->num_meta = meta.size(0);
    node->padding_idx = padding_idx;
    autograd::set_history(node, {weight, meta}, {y});
  }
  return y;
}

}  // namespace hymba
