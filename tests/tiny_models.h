// Tiny model configs (YAML, as in configs/) shared by the model, decode and generation tests:
// small enough for float64 references and finite differences, with every Hymba feature on.
#pragma once

#include <string>

namespace hymba::tiny_models {

// 3 hybrid layers: a full-attention layer, then a KV group of two sliding-window layers
// (window 3: over 2 meta + 13 tokens the ring of 4 slots wraps several times), 2 meta
// tokens, GQA 2:1, dv = 2 dk, inner SSM norms.
inline std::string hymba3(int vocab) {
  return "vocab_size: " + std::to_string(vocab) + R"(
hidden_size: 8
num_layers: 3
block: hybrid
num_heads: 2
num_kv_heads: 1
head_dim: 4
v_head_dim: 8
ssm: {d_state: 3, d_conv: 4, expand: 2, dt_rank: 2, inner_layernorms: true}
mlp: {intermediate_size: 6}
num_meta_tokens: 2
sliding_window: 3
full_attention_layers: [0]
kv_reuse_groups: [[1, 2]]
)";
}

// 4 hybrid layers, vocabulary 11: full attention in layers 0 and 3, layers 1 -> 2 share k
// and v, window 3, 2 meta tokens, GQA 2:1, dv = 2 dk, convolution width 3.
inline const char* const kHybrid4 = R"(
vocab_size: 11
hidden_size: 8
num_layers: 4
block: hybrid
num_heads: 2
num_kv_heads: 1
head_dim: 4
v_head_dim: 8
ssm: {d_state: 3, d_conv: 3, expand: 2, dt_rank: 2, inner_layernorms: true}
mlp: {intermediate_size: 12}
num_meta_tokens: 2
sliding_window: 3
full_attention_layers: [0, 3]
kv_reuse_groups: [[1, 2]]
)";

}  // namespace hymba::tiny_models
