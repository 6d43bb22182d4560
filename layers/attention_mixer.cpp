#include "layers/attention_mixer.h"

#include <algorithm>

#include "autograd/ops.h"
#include "kernels/attention.h"
#include "kernels/rope.h"

namespace hymba {

AttentionBranch::AttentionBranch(const ModelConfig& cfg, int64_t li)
    : layer(li),
      num_heads(cfg.num_heads),
      num_kv_heads(cfg.num_kv_heads),
      head_dim(cfg.head_dim),
      v_head_dim(cfg.v_head_dim),
      window(cfg.layers.at(size_t(li)).window),
      num_meta(cfg.num_meta_tokens),
      rope_base(cfg.rope_base()),
      kv_producer(cfg.layers.at(size_t(li)).kv_producer),
      kv_shared(cfg.layers.at(size_t(li)).kv_shared) {}

int64_t AttentionBranch::in_width() const {
  return num_heads * head_dim + (kv_producer >= 0 ? 0 : num_kv_heads * (head_dim + v_head_dim));
}

namespace {
// (B, T, H*d) -> (B, H, T, d): a view when the last stride is 1, so q/k/v are read in place.
Tensor heads(const Tensor& x, int64_t h, int64_t d) {
  return permute(reshape(x, {x.size(0), x.size(1), h, d}), {0, 2, 1, 3});
}
}  // namespace

Tensor AttentionBranch::forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, KVStore& store) const {
  HYMBA_CHECK(q_in.dim() == 3 && q_in.size(2) == num_heads * head_dim, "attention (layer ", layer,
              "): expected q (B, T, ", num_heads * head_dim, "), got ", shape_str(q_in.shape()));
  const int64_t B = q_in.size(0), T = q_in.size(1);
  Tensor q = rope(heads(q_in, num_heads, head_dim), rope_base);
  Tensor k, v;
  if (kv_producer >= 0) {
    HYMBA_CHECK(size_t(kv_producer) < store.kv.size() && store.kv[size_t(kv_producer)].first.defined(),
                "attention (layer ", layer, "): KV consumer of layer ", kv_producer,
                ", which has not published k, v in this forward pass");
    std::tie(k, v) = store.kv[size_t(kv_producer)];
    HYMBA_CHECK(k.size(0) == B && k.size(2) == T, "attention (layer ", layer, "): producer layer ", kv_producer,
                " has k ", shape_str(k.shape()), " but q is ", shape_str(q.shape()));
  } else {
    HYMBA_CHECK(k_in.defined() && v_in.defined() && k_in.dim() == 3 && v_in.dim() == 3 &&
                    k_in.size(2) == num_kv_heads * head_dim && v_in.size(2) == num_kv_heads * v_head_dim,
                "attention (layer ", layer, "): expected k (B, T, ", num_kv_heads * head_dim, ") and v (B, T, ",
                num_kv_heads * v_head_dim, "), got ", k_in.defined() ? shape_str(k_in.shape()) : "none", " and ",
                v_in.defined() ? shape_str(v_in.shape()) : "none");
    k = rope(heads(k_in, num_kv_heads, head_dim), rope_base);
    v = heads(v_in, num_kv_heads, v_head_dim);
    if (kv_shared) {
      if (store.kv.size() <= size_t(layer)) store.kv.resize(size_t(layer) + 1);
      store.kv[size_t(layer)] = {k, v};
    }
    if (store.capture) {
      LayerCache& c = store.capture->layers.at(size_t(layer));
      c.k = k.detach();
      c.v = v.detach();
    }
  }
  Tensor o = attention(q, k, v, window, num_meta);  // (B, Hq, T, dv), scale 1/sqrt(dk)
  return reshape(permute(o, {0, 2, 1, 3}), {B, T, num_heads * v_head_dim});
}

namespace {
// RoPE of x (B, H, 1, d) with row b at position pos[b]: the rope kernel takes one offset, and
// the rows of a left-padded batch sit at different positions.
Tensor rope_rows(const Tensor& x, double base, const std::vector<int64_t>& pos) {
  const int64_t B = x.size(0);
  if (std::all_of(pos.begin(), pos.end(), [&](int64_t p) { return p == pos[0]; }))
    return kernels::rope_forward(x, base, pos[0]);
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < B; ++b) rows.push_back(kernels::rope_forward(x.narrow(0, b, 1), base, pos[size_t(b)]));
  return cat(rows, 0);
}
}  // namespace

Tensor AttentionBranch::decode(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                               InferenceCache& cache) const {
  const int64_t B = cache.batch();
  HYMBA_CHECK(q_in.dim() == 3 && q_in.size(0) == B && q_in.size(1) == 1 && q_in.size(2) == num_heads * head_dim,
              "attention decode (layer ", layer, "): expected q (", B, ", 1, ", num_heads * head_dim, "), got ",
              shape_str(q_in.shape()));
  Tensor q = rope_rows(heads(q_in, num_heads, head_dim), rope_base, cache.pos);
  const size_t src = size_t(kv_producer >= 0 ? kv_producer : layer);
  if (kv_producer < 0) {
    HYMBA_CHECK(k_in.defined() && v_in.defined(), "attention decode (layer ", layer, "): missing k or v");
    Tensor k = rope_rows(heads(k_in, num_kv_heads, head_dim), rope_base, cache.pos);
    Tensor v = heads(v_in, num_kv_heads, v_head_dim);
    for (int64_t b = 0; b < B; ++b) cache.write_kv(src, b, k.select(0, b), v.select(0, b), cache.pos[size_t(b)]);
  }
  const LayerCache& c = cache.layers.at(src);
  HYMBA_CHECK(c.has_kv, "attention decode (layer ", layer, "): layer ", src, " keeps no KV cache");
  kernels::AttentionParams p;
  p.window = window;
  p.num_meta = num_meta;
  Tensor o = kernels::attention_decode(q, c.k, c.v, cache.query_positions().to(q.device()),
                                       c.k_pos.to(q.device()), p);  // (B, Hq, 1, dv)
  return reshape(permute(o, {0, 2, 1, 3}), {B, 1, num_heads * v_head_dim});
}

Tensor AttentionMixer::decode(const Tensor& u, InferenceCache& cache) const {
  Tensor P = in_proj->forward(u);
  if (attn.kv_producer >= 0) return out_proj->forward(attn.decode(P, Tensor(), Tensor(), cache));
  auto p = split(P, {attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim,
                     attn.num_kv_heads * attn.v_head_dim}, -1);
  return out_proj->forward(attn.decode(p[0], p[1], p[2], cache));
}

AttentionMixer::AttentionMixer(const ModelConfig& cfg, int64_t li, Generator* gen)
    : attn(cfg, li), hidden(cfg.hidden_size) {
  in_proj = register_module("in_proj", std::make_shared<Linear>(hidden, attn.in_width(), false, gen, cfg.init_std));
  out_proj = register_module("out_proj", std::make_shared<Linear>(attn.out_width(), hidden, false, gen, cfg.init_std));
}

Tensor AttentionMixer::forward(const Tensor& u, KVStore& store) const {
  HYMBA_CHECK(u.dim() == 3 && u.size(2) == hidden, "AttentionMixer (layer ", attn.layer, "): expected (B, T, ",
              hidden, "), got ", shape_str(u.shape()));
  Tensor P = in_proj->forward(u);
  const int64_t qw = attn.num_heads * attn.head_dim;
  Tensor o;
  if (attn.kv_producer >= 0) {
    o = attn.forward(P, Tensor(), Tensor(), store);
  } else {
    auto p = split(P, {qw, attn.num_kv_heads * attn.head_dim, attn.num_kv_heads * attn.v_head_dim}, -1);
    o = attn.forward(p[0], p[1], p[2], store);
  }
  return out_proj->forward(o);
}

}  // namespace hymba
