#include "layers/inference_cache.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/attention.h"

namespace hymba {

namespace {
// The window a producer's slots must cover: the widest of its group, full if any member is.
int64_t group_window(const ModelConfig& cfg, size_t producer) {
  int64_t w = cfg.layers[producer].window;
  for (const LayerSpec& s : cfg.layers) {
    if (s.kv_producer != int64_t(producer)) continue;
    if (w < 0 || s.window < 0) return -1;
    w = std::max(w, s.window);
  }
  return w;
}
constexpr int64_t kInitialSlots = 64;
}  // namespace

InferenceCache::InferenceCache(const ModelConfig& cfg, int64_t batch, DType dtype, Device device)
    : pos(size_t(batch), 0), batch_(batch), num_meta_(cfg.num_meta_tokens) {
  HYMBA_CHECK(batch > 0, "InferenceCache: batch must be positive, got ", batch);
  layers.resize(cfg.layers.size());
  for (size_t i = 0; i < cfg.layers.size(); ++i) {
    const LayerSpec& s = cfg.layers[i];
    LayerCache& c = layers[i];
    if (s.has_attention() && !s.is_kv_consumer()) {
      c.has_kv = true;
      c.window = group_window(cfg, i);
      c.ring = c.window >= 0 ? c.window + 1 : 0;
      const int64_t S = c.window >= 0 ? num_meta_ + c.ring : num_meta_ + kInitialSlots;
      c.k = zeros({batch, cfg.num_kv_heads, S, cfg.head_dim}, TensorOptions(dtype, device));
      c.v = zeros({batch, cfg.num_kv_heads, S, cfg.v_head_dim}, TensorOptions(dtype, device));
      c.k_pos = full({batch, S}, -1.0, DType::I64);
    }
    if (s.has_ssm()) {
      c.has_ssm = true;
      c.conv_state = zeros({batch, cfg.ssm_inner(), cfg.ssm.d_conv - 1}, TensorOptions(dtype, device));
      c.ssm_state = zeros({batch, cfg.ssm_inner(), cfg.ssm.d_state}, TensorOptions(dtype, device));
    }
  }
}

size_t InferenceCache::nbytes() const {
  size_t n = 0;
  for (const LayerCache& c : layers)
    for (const Tensor* t : {&c.k, &c.v, &c.conv_state, &c.ssm_state})
      if (t->defined()) n += t->nbytes();
  return n;
}

void InferenceCache::grow(LayerCache& c, int64_t needed) {
  const int64_t S = c.k.size(2);
  if (needed <= S) return;
  const int64_t S2 = std::max(needed, 2 * S);
  auto widen = [&](const Tensor& t, double fill) {
    Shape sh = t.shape();
    sh[t.dim() == 4 ? 2 : 1] = S2;
    Tensor n = full(sh, fill, TensorOptions(t.dtype(), t.device()));
    n.narrow(t.dim() == 4 ? 2 : 1, 0, S).copy_(t);
    return n;
  };
  c.k = widen(c.k, 0.0);
  c.v = widen(c.v, 0.0);
  c.k_pos = widen(c.k_pos, -1.0);
}

void InferenceCache::write_kv(size_t li, int64_t b, const Tensor& k, const Tensor& v, int64_t pos0) {
  HYMBA_CHECK(li < layers.size() && layers[li].has_kv, "InferenceCache::write_kv: layer ", li,
              " keeps no KV cache");
  HYMBA_CHECK(b >= 0 && b < batch_, "InferenceCache::write_kv: row ", b, " out of ", batch_);
  LayerCache& c = layers[li];
  HYMBA_CHECK(k.dim() == 3 && v.dim() == 3 && k.size(0) == c.k.size(1) && k.size(2) == c.k.size(3) &&
                  v.size(0) == c.v.size(1) && v.size(2) == c.v.size(3) && v.size(1) == k.size(1),
              "InferenceCache::write_kv (layer ", li, "): expected k (", c.k.size(1), ", T, ", c.k.size(3),
              ") and v (", c.v.size(1), ", T, ", c.v.size(3), "), got ", shape_str(k.shape()), " and ",
              shape_str(v.shape()));
  const int64_t T = k.size(1), end = pos0 + T;
  int64_t* kp = c.k_pos.data<int64_t>();
  if (c.window < 0) {
    grow(c, end);
    const int64_t S = c.k.size(2);
    kp = c.k_pos.data<int64_t>();
    c.k.select(0, b).narrow(1, pos0, T).copy_(k);
    c.v.select(0, b).narrow(1, pos0, T).copy_(v);
    for (int64_t p = pos0; p < end; ++p) kp[b * S + p] = p;
    return;
  }
  const int64_t S = c.k.size(2);
  for (int64_t p = pos0; p < end; ++p) {
    // Older non-meta keys would be overwritten within this same write anyway.
    if (p >= num_meta_ && p < end - c.ring) continue;
    const int64_t slot = kernels::kv_ring_slot(p, num_meta_, c.ring);
    c.k.select(0, b).select(1, slot).copy_(k.select(1, p - pos0));
    c.v.select(0, b).select(1, slot).copy_(v.select(1, p - pos0));
    kp[b * S + slot] = p;
  }
}

void InferenceCache::write_ssm(size_t li, int64_t b, const Tensor& conv_state, const Tensor& ssm_state) {
  HYMBA_CHECK(li < layers.size() && layers[li].has_ssm, "InferenceCache::write_ssm: layer ", li,
              " has no SSM state");
  LayerCache& c = layers[li];
  HYMBA_CHECK(conv_state.shape() == c.conv_state.select(0, b).shape() &&
                  ssm_state.shape() == c.ssm_state.select(0, b).shape(),
              "InferenceCache::write_ssm (layer ", li, "): expected conv ", shape_str(c.conv_state.select(0, b).shape()),
              " and scan ", shape_str(c.ssm_state.select(0, b).shape()), ", got ", shape_str(conv_state.shape()),
              " and ", shape_str(ssm_state.shape()));
  c.conv_state.select(0, b).copy_(conv_state);
  c.ssm_state.select(0, b).copy_(ssm_state);
}

Tensor InferenceCache::query_positions() const { return from_vector<int64_t>(pos, {batch_, 1}); }

}  // namespace hymba
