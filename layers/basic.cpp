#include "layers/basic.h"

#include "autograd/ops.h"
#include "layers/precision.h"

namespace hymba {

void check_last_dim(const Tensor& x, int64_t expected, const char* layer) {
  HYMBA_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == expected, layer, ": expected input (..., ", expected,
              "), got ", x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
}

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator* gen, double std)
    : in_features(in), out_features(out) {
  HYMBA_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in ", in, " out ", out);
  weight = register_parameter("weight", randn({out, in}, {}, gen, 0.0, std));
  if (with_bias) bias = register_parameter("bias", zeros({out}));
}

Tensor Linear::forward(const Tensor& x) const {
  check_last_dim(x, in_features, "Linear");
  // Mixed precision: the product runs in the compute dtype; the casts' backward brings the
  // weight and bias gradients back to the masters' dtype.
  return linear(compute_cast(x), compute_cast(weight), compute_cast(bias));
}

Embedding::Embedding(int64_t num, int64_t dim, Generator* gen, double std) {
  HYMBA_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got ", num, " x ", dim);
  weight = register_parameter("weight", randn({num, dim}, {}, gen, 0.0, std));
}

// The rows are gathered from the master table and then cast: cheaper than casting the table.
Tensor Embedding::forward(const Tensor& ids) const { return compute_cast(embedding(weight, ids)); }

RMSNorm::RMSNorm(int64_t d, double e) : dim(d), eps(e) {
  HYMBA_CHECK(d > 0, "RMSNorm: dim must be positive, got ", d);
  weight = register_parameter("weight", ones({d}));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  check_last_dim(x, dim, "RMSNorm");
  return rms_norm(x, cast_like(weight, x), eps);
}

SwiGLUMLP::SwiGLUMLP(int64_t hidden, int64_t intermediate, Generator* gen, double std) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(hidden, intermediate, false, gen, std));
  up_proj = register_module("up_proj", std::make_shared<Linear>(hidden, intermediate, false, gen, std));
  down_proj = register_module("down_proj", std::make_shared<Linear>(intermediate, hidden, false, gen, std));
}

Tensor SwiGLUMLP::forward(const Tensor& x) const {
  check_last_dim(x, gate_proj->in_features, "SwiGLUMLP");
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

CausalConv1d::CausalConv1d(int64_t c, int64_t w, bool with_bias, Generator* gen, double std)
    : channels(c), width(w) {
  weight = register_parameter("weight", randn({c, w}, {}, gen, 0.0, std));
  if (with_bias) bias = register_parameter("bias", zeros({c}));
}

Tensor CausalConv1d::forward(const Tensor& x, bool silu) const {
  HYMBA_CHECK(x.defined() && x.dim() == 3 && x.size(1) == channels, "CausalConv1d: expected input (B, ", channels,
              ", L), got ", x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  return causal_conv1d(x, cast_like(weight, x), cast_like(bias, x), silu);
}

}  // namespace hymba
