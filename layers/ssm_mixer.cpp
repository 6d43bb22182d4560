#include "layers/ssm_mixer.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "layers/precision.h"

namespace hymba {

void SSMBranch::build(Module& owner, const ModelConfig& cfg, Generator* gen) {
  inner = cfg.ssm_inner();
  d_state = cfg.ssm.d_state;
  dt_rank = cfg.ssm.dt_rank;
  std::vector<float> a(size_t(inner * d_state));
  for (int64_t d = 0; d < inner; ++d)
    for (int64_t n = 0; n < d_state; ++n) a[size_t(d * d_state + n)] = float(std::log(double(n + 1)));
  A_log = owner.register_parameter("A_log", from_vector<float>(a, {inner, d_state}));
  D = owner.register_parameter("D", ones({inner}));
  conv1d = owner.register_module(
      "conv1d", std::make_shared<CausalConv1d>(inner, cfg.ssm.d_conv, cfg.ssm.conv_bias, gen, cfg.init_std));
  x_proj = owner.register_module("x_proj",
                                 std::make_shared<Linear>(inner, dt_rank + 2 * d_state, false, gen, cfg.init_std));
  dt_proj = owner.register_module("dt_proj", std::make_shared<Linear>(dt_rank, inner, true, gen, cfg.init_std));
  if (cfg.ssm.inner_layernorms) {
    dt_layernorm = owner.register_module("dt_layernorm", std::make_shared<RMSNorm>(dt_rank, cfg.norm_eps));
    B_layernorm = owner.register_module("B_layernorm", std::make_shared<RMSNorm>(d_state, cfg.norm_eps));
    C_layernorm = owner.register_module("C_layernorm", std::make_shared<RMSNorm>(d_state, cfg.norm_eps));
  }
}

Tensor SSMBranch::forward(const Tensor& x, const Tensor& z, LayerCache* capture) const {
  HYMBA_CHECK(x.dim() == 3 && x.size(2) == inner && z.shape() == x.shape(), "ssm: expected x and z (B, T, ", inner,
              "), got ", shape_str(x.shape()), " and ", shape_str(z.shape()));
  Tensor xc = conv1d->forward(transpose(x, 1, 2), /*silu=*/true);  // (B, I, T)
  auto parts = split(x_proj->forward(transpose(xc, 1, 2)), {dt_rank, d_state, d_state}, -1);
  Tensor dt_r = parts[0], Bm = parts[1], Cm = parts[2];
  if (dt_layernorm) {
    dt_r = dt_layernorm->forward(dt_r);
    Bm = B_layernorm->forward(Bm);
    Cm = C_layernorm->forward(Cm);
  }
  // dt_proj's bias is not added here: the scan adds it before the softplus (delta_bias).
  Tensor dt = linear(dt_r, compute_cast(dt_proj->weight));  // (B, T, I)
  // The scan takes one dtype: A, D and the dt bias follow the activations (A = -exp(A_log) is
  // formed in the master dtype first, then cast once).
  Tensor A = cast_like(neg(exp(A_log)), xc), Dv = cast_like(D, xc), dt_bias = cast_like(dt_proj->bias, xc);
  if (capture) {
    auto [y, state] = selective_scan_with_state(xc, transpose(dt, 1, 2), A, transpose(Bm, 1, 2),
                                                transpose(Cm, 1, 2), Dv, transpose(z, 1, 2), dt_bias, true);
    NoGradGuard ng;
    const int64_t T = x.size(1), keep = conv1d->width - 1, n = std::min(T, keep);
    Tensor xt = x.detach().transpose(1, 2);  // (B, I, T)
    capture->conv_state = zeros({x.size(0), inner, keep}, TensorOptions(x.dtype(), x.device()));
    if (n > 0) capture->conv_state.narrow(2, keep - n, n).copy_(xt.narrow(2, T - n, n));
    capture->ssm_state = state.detach();
    return transpose(y, 1, 2);
  }
  Tensor y = selective_scan(xc, transpose(dt, 1, 2), A, transpose(Bm, 1, 2), transpose(Cm, 1, 2), Dv,
                            transpose(z, 1, 2), dt_bias, /*delta_softplus=*/true);
  return transpose(y, 1, 2);  // (B, T, I)
}

Tensor SSMBranch::decode(const Tensor& x, const Tensor& z, LayerCache& c) const {
  HYMBA_CHECK(x.dim() == 3 && x.size(1) == 1 && x.size(2) == inner && z.shape() == x.shape(),
              "ssm decode: expected x and z (B, 1, ", inner, "), got ", shape_str(x.shape()), " and ",
              shape_str(z.shape()));
  HYMBA_CHECK(c.has_ssm && c.conv_state.size(0) == x.size(0), "ssm decode: cache for batch ",
              c.conv_state.defined() ? c.conv_state.size(0) : 0, " but x is ", shape_str(x.shape()));
  Tensor x2 = x.select(1, 0).contiguous(), z2 = z.select(1, 0).contiguous();  // (B, I)
  Tensor xc = causal_conv1d_step(c.conv_state, x2, conv1d->weight, conv1d->bias, /*silu=*/true);
  auto parts = split(x_proj->forward(xc), {dt_rank, d_state, d_state}, -1);
  Tensor dt_r = parts[0], Bm = parts[1], Cm = parts[2];
  if (dt_layernorm) {
    dt_r = dt_layernorm->forward(dt_r);
    Bm = B_layernorm->forward(Bm);
    Cm = C_layernorm->forward(Cm);
  }
  Tensor dt = linear(dt_r, dt_proj->weight);  // (B, I)
  Tensor y = selective_scan_step(c.ssm_state, xc, dt, neg(exp(A_log)), Bm.contiguous(), Cm.contiguous(), D, z2,
                                 dt_proj->bias, /*delta_softplus=*/true);
  return y.unsqueeze(1);  // (B, 1, I)
}

MambaMixer::MambaMixer(const ModelConfig& cfg, int64_t li, Generator* gen) : layer(li), hidden(cfg.hidden_size) {
  in_proj = register_module("in_proj", std::make_shared<Linear>(hidden, 2 * cfg.ssm_inner(), false, gen, cfg.init_std));
  ssm.build(*this, cfg, gen);
  out_proj = register_module("out_proj", std::make_shared<Linear>(cfg.ssm_inner(), hidden, false, gen, cfg.init_std));
}

Tensor MambaMixer::forward(const Tensor& u, KVStore& store) const {
  HYMBA_CHECK(u.dim() == 3 && u.size(2) == hidden, "MambaMixer (layer ", layer, "): expected (B, T, ", hidden,
              "), got ", shape_str(u.shape()));
  auto xz = split(in_proj->forward(u), {ssm.inner, ssm.inner}, -1);
  LayerCache* cap = store.capture ? &store.capture->layers.at(size_t(layer)) : nullptr;
  return out_proj->forward(ssm.forward(xz[0], xz[1], cap));
}

Tensor MambaMixer::decode(const Tensor& u, InferenceCache& cache) const {
  auto xz = split(in_proj->forward(u), {ssm.inner, ssm.inner}, -1);
  return out_proj->forward(ssm.decode(xz[0], xz[1], cache.layers.at(size_t(layer))));
}

}  // namespace hymba
