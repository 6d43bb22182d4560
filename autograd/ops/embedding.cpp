#include "autograd/ops/embedding.h"

#include "autograd/node.h"
#include "kernels/embedding.h"

namespace hymba {

namespace {

struct EmbeddingBackward final : autograd::Node {
  Tensor ids;  // integer, never in a graph
  int64_t num_embeddings = 0, padding_idx = -1;
  const char* name() const override { return "EmbeddingBackward"; }
  autograd::tensor_list apply(autograd::tensor_list&& grads) override {
    return {kernels::embedding_backward(grads[0], autograd::unpack(ids, *this), num_embeddings, padding_idx)};
  }
  void release_saved() override { ids = Tensor(); }
};

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx) {
  HYMBA_CHECK(weight.defined() && weight.dim() == 2, "embedding: weight must be 2-D (V, H), got ",
              weight.defined() ? weight.meta_str() : "undefined");
  HYMBA_CHECK(padding_idx == -1 || (padding_idx >= 0 && padding_idx < weight.size(0)), "embedding: padding_idx ",
              padding_idx, " out of range for weight ", weight.meta_str(), " (-1 means none)");
  Tensor y;
  {
    NoGradGuard ng;
    y = kernels::embedding_forward(weight, ids);
  }
  if (autograd::compute_requires_grad({weight})) {
    auto node = std::make_shared<EmbeddingBackward>();
    node->ids = ids.detach();
    node->num_embeddings = weight.size(0);
    node->padding_idx = padding_idx;
    autograd::set_history(node, {weight}, {y});
  }
  return y;
}

}  // namespace hymba
