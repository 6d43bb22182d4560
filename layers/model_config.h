// ModelConfig: the layer stack of a model, read from YAML and validated once.
//
// A config file holds model-level defaults and optional per-layer overrides:
//
//   vocab_size: 32001            hidden_size: 1600          num_layers: 32
//   block: hybrid                # default block kind: attention | ssm | hybrid
//   num_heads: 25                num_kv_heads: 5
//   head_dim: 64                 # default hidden_size / num_heads
//   v_head_dim: 128              # default head_dim
//   ssm: {d_state: 16, d_conv: 4, expand: 2, dt_rank: 100, inner_layernorms: true, conv_bias: true}
//   mlp: {intermediate_size: 5504}     # or `mlp: none`
//   num_meta_tokens: 128
//   sliding_window: 1024         # or `none`: every attention layer is full
//   full_attention_layers: [0, 15, 31]
//   kv_reuse_groups: [[1, 2], [3, 4]]  # first index produces k, v; the others reuse them
//   rope: {theta: 10000, type: ntk, max_position: 8192, orig_max_position: 2048}
//   norm_eps: 1.0e-6             tie_embeddings: true        fusion: mean   # or concat
//   init_std: 0.02
//   layers:                      # overrides, applied in order; index: int, list, all/even/odd
//     - {index: [0, 15, 31], window: full}
//     - {index: odd, block: attention, mlp: true}
//
// Keys not listed are errors, as are wrong types and inconsistent shapes; each error is a
// hymba::UserError naming the file, the line, the key and what was expected. A sequential
// (Samba-style) stack is a list of attention and ssm blocks; Llama-style is `block:
// attention` with an MLP; Mamba is `block: ssm, mlp: none`.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace YAML {
class Node;
}

namespace hymba {

enum class BlockKind { Attention, SSM, Hybrid };
enum class Fusion { Mean, Concat };

const char* block_kind_name(BlockKind k);
const char* fusion_name(Fusion f);

struct SSMConfig {
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0 in a file means "auto": ceil(hidden_size / 16), resolved at load
  bool inner_layernorms = false;
  bool conv_bias = true;
};

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // default | ntk
  int64_t max_position = 0;       // ntk only
  int64_t orig_max_position = 0;  // ntk only
};

// One resolved layer.
struct LayerSpec {
  BlockKind kind = BlockKind::Hybrid;
  bool mlp = true;
  int64_t window = -1;       // -1: full attention (ignored by ssm blocks)
  int64_t kv_producer = -1;  // >= 0: this layer reuses k, v of that layer (a consumer)
  bool kv_shared = false;    // true: some later layer consumes this layer's k, v

  bool has_attention() const { return kind != BlockKind::SSM; }
  bool has_ssm() const { return kind != BlockKind::Attention; }
  bool is_kv_consumer() const { return kv_producer >= 0; }
};

struct ModelConfig {
  std::string source = "<memory>";  // file name, for messages
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  BlockKind block = BlockKind::Hybrid;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t v_head_dim = 0;
  SSMConfig ssm;
  int64_t intermediate_size = 0;  // 0: no MLP anywhere unless a layer override asks (error)
  int64_t num_meta_tokens = 0;
  int64_t sliding_window = -1;    // -1: none
  std::vector<int64_t> full_attention_layers;
  std::vector<std::vector<int64_t>> kv_reuse_groups;
  RopeConfig rope;
  double norm_eps = 1e-6;
  bool tie_embeddings = true;
  Fusion fusion = Fusion::Mean;
  double init_std = 0.02;
  std::vector<LayerSpec> layers;  // resolved, one per layer

  // Derived widths.
  int64_t ssm_inner() const { return ssm.expand * hidden_size; }
  int64_t attn_out() const { return num_heads * v_head_dim; }
  int64_t q_width() const { return num_heads * head_dim; }
  int64_t k_width() const { return num_kv_heads * head_dim; }
  int64_t v_width() const { return num_kv_heads * v_head_dim; }
  double rope_base() const;
};

// Parsing. `file` names the source in messages. A config may also be a `model:` section of
// a larger file: pass that node.
ModelConfig parse_model_config(const YAML::Node& node, const std::string& file);
ModelConfig parse_model_config_string(const std::string& yaml, const std::string& file = "<string>");
ModelConfig load_model_config(const std::string& path);

// The resolved config as YAML (every layer spelled out): parse_model_config_string of it
// gives the same model. Stored in checkpoints.
std::string dump_model_config(const ModelConfig& cfg);

// Every parameter of Model(cfg): dotted name and shape, in state_dict order, computed from
// the config alone (no allocation: Hymba-1.5B is 6 GB in fp32).
std::vector<std::pair<std::string, Shape>> parameter_shapes(const ModelConfig& cfg);
int64_t count_parameters(const ModelConfig& cfg);

}  // namespace hymba
