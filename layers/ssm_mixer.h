// The SSM (Mamba-1) branch and the plain Mamba-1 mixer.
//
// SSMBranch is in_proj-free: it takes x and z (B, T, I) already projected and returns the
// gated scan output (B, T, I):
//   xc = silu(causal_depthwise_conv(x) + conv bias)
//   dt_r | B | C = split(xc @ x_proj^T, [dt_rank, N, N]), each optionally RMS-normalized
//   y = selective_scan(xc, dt_r @ dt_proj^T, -exp(A_log), B, C, D, z, delta_bias = dt_proj.bias)
// Its parameters are registered on the owning mixer, so their names mirror HF's
// (mixer.conv1d.weight, mixer.A_log, ...). Init: A_log[d, n] = log(n + 1), D = 1, weights
// N(0, init_std), dt_proj bias 0 (as the published Hymba code leaves it).
#pragma once

#include <cstdint>
#include <memory>

#include "layers/basic.h"
#include "layers/mixer.h"

namespace hymba {

struct SSMBranch {
  int64_t inner = 0, d_state = 0, dt_rank = 0;
  Tensor A_log, D;
  std::shared_ptr<CausalConv1d> conv1d;
  std::shared_ptr<Linear> x_proj, dt_proj;
  std::shared_ptr<RMSNorm> dt_layernorm, B_layernorm, C_layernorm;  // null without inner_layernorms

  // Registers A_log, D and the children conv1d, x_proj, dt_proj, [dt|B|C]_layernorm on owner.
  void build(Module& owner, const ModelConfig& cfg, Generator* gen);
  // With `capture`, also stores the decode state after the last step: the conv input's last
  // d_conv - 1 columns (zero-padded on the left for short inputs) and the scan's final state.
  Tensor forward(const Tensor& x, const Tensor& z, LayerCache* capture = nullptr) const;
  // One decode step: x, z (B, 1, I) -> (B, 1, I), advancing c.conv_state and c.ssm_state.
  Tensor decode(const Tensor& x, const Tensor& z, LayerCache& c) const;
};

// Plain Mamba-1 block mixer: in_proj (hidden -> x | z), SSMBranch, out_proj (I -> hidden).
class MambaMixer : public Mixer {
 public:
  MambaMixer(const ModelConfig& cfg, int64_t layer_index, Generator* gen);
  std::string type_name() const override { return "MambaMixer"; }
  Tensor forward(const Tensor& u, KVStore& store) const override;
  Tensor decode(const Tensor& u, InferenceCache& cache) const override;

  int64_t layer, hidden;
  std::shared_ptr<Linear> in_proj, out_proj;
  SSMBranch ssm;
};

}  // namespace hymba
