// The basic layers: Linear, Embedding, RMSNorm, the SwiGLU MLP and the depthwise causal
// conv of the SSM branch. Each checks its input's width and names itself and both shapes
// when it does not match.
#pragma once

#include <cstdint>
#include <memory>

#include "core/rng.h"
#include "layers/module.h"

namespace hymba {

// y = x @ weight^T + bias; weight (out, in) as PyTorch stores it, init N(0, std).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator* gen, double std = 0.02);
  std::string type_name() const override { return "Linear"; }
  Tensor forward(const Tensor& x) const;

  int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined without one
};

// A lookup table (num, dim), init N(0, std). `weight` doubles as the tied LM head.
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator* gen, double std = 0.02);
  std::string type_name() const override { return "Embedding"; }
  Tensor forward(const Tensor& ids) const;

  Tensor weight;
};

// y = x / rms(x) * weight over the last dim; weight init 1.
class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  std::string type_name() const override { return "RMSNorm"; }
  Tensor forward(const Tensor& x) const;

  int64_t dim;
  double eps;
  Tensor weight;
};

// down(silu(gate(x)) * up(x)), no biases (Llama / Hymba).
class SwiGLUMLP : public Module {
 public:
  SwiGLUMLP(int64_t hidden, int64_t intermediate, Generator* gen, double std = 0.02);
  std::string type_name() const override { return "SwiGLUMLP"; }
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

// Parameters of a depthwise causal conv: weight (channels, width) - HF stores (channels, 1,
// width), the converter reshapes - and an optional bias (channels). Init N(0, std), bias 0.
class CausalConv1d : public Module {
 public:
  CausalConv1d(int64_t channels, int64_t width, bool bias, Generator* gen, double std = 0.02);
  std::string type_name() const override { return "CausalConv1d"; }
  // x (B, C, L) -> act(conv(x) + bias), act = SiLU when `silu`.
  Tensor forward(const Tensor& x, bool silu) const;

  int64_t channels, width;
  Tensor weight, bias;
};

// Checks x's last dim against `expected`, naming the layer and the shapes.
void check_last_dim(const Tensor& x, int64_t expected, const char* layer);

}  // namespace hymba
