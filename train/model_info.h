// Size, compute and inference-memory accounting of a ModelConfig (`hymba info`), computed
// from the config alone so that it works for models too big to allocate.
//
// Training FLOPs per token (the convention of Kaplan et al. / PaLM, made exact for our masks):
//   flops = 6 * N_matmul + 6 * sum over attention layers of Hq * (dk + dv) * Kbar
// N_matmul: parameters of every weight used in a matrix product (in/out/x/dt projections,
// the MLP, the output head once even when tied). Embedding lookups, meta tokens, norms,
// conv1d, A_log, D and biases are not matmul parameters. Kbar is the number of keys a query
// sees, averaged over the S token positions i = M .. M+S-1 of a sequence with M meta tokens:
// full attention i + 1; sliding window min(i + 1, W + 1) plus the meta keys that fell out of
// the window (min(M, i - W) when positive). 2*dk FLOPs per key for q.k and 2*dv for p.v
// forward, times 3 for forward + backward. The work of the M meta rows themselves is not
// counted (a relative M/S extra).
//
// Inference cache at sequence length S in fp16 (2 bytes per element): KV caches only in
// layers that produce k, v (standalone or KV-sharing producers; consumers hold none): a full
// layer keeps M + S keys, a sliding-window layer min(M + S, M + W + 1); each key costs
// Hkv * (dk + dv) * 2 bytes. Every SSM layer keeps I * N state and I * (d_conv - 1) conv
// state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/model_config.h"

namespace hymba {

struct ParameterBreakdown {
  int64_t embedding = 0;    // embed_tokens (+ lm_head when untied)
  int64_t meta_tokens = 0;
  int64_t attention = 0;    // attention rows of in_proj (q, k, v) + out_proj of attention blocks
  int64_t ssm = 0;          // x|z rows of in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj of ssm blocks
  int64_t fusion_out = 0;   // the shared out_proj of hybrid blocks (reads the fused attention+SSM)
  int64_t mlp = 0;
  int64_t norms = 0;        // every RMSNorm weight (block, inner SSM, fusion and final norms)
  int64_t total = 0;
  int64_t matmul = 0;       // N_matmul of the FLOPs formula
};

struct CacheBreakdown {
  int64_t seq_len = 0;
  int64_t kv_layers_full = 0, kv_layers_swa = 0, ssm_layers = 0;
  int64_t kv_bytes_full = 0;   // all full-attention producer layers together
  int64_t kv_bytes_swa = 0;    // all sliding-window producer layers together
  int64_t ssm_state_bytes = 0;
  int64_t conv_state_bytes = 0;
  int64_t kv_bytes() const { return kv_bytes_full + kv_bytes_swa; }
  int64_t total_bytes() const { return kv_bytes() + ssm_state_bytes + conv_state_bytes; }
};

struct ModelInfo {
  ParameterBreakdown params;
  int64_t blocks_attention = 0, blocks_ssm = 0, blocks_hybrid = 0, blocks_with_mlp = 0;
  int64_t seq_len = 0;
  double attention_flops_per_token = 0;  // the 6 * sum Hq (dk+dv) Kbar term
  double train_flops_per_token = 0;
  CacheBreakdown cache;
};

ParameterBreakdown parameter_breakdown(const ModelConfig& cfg);
// Mean number of visible keys per token position (see the header comment); window < 0: full.
double mean_visible_keys(int64_t seq_len, int64_t num_meta, int64_t window);
CacheBreakdown inference_cache(const ModelConfig& cfg, int64_t seq_len);
ModelInfo model_info(const ModelConfig& cfg, int64_t seq_len);
// Human-readable report, as `hymba info` prints it.
std::string format_model_info(const ModelConfig& cfg, const ModelInfo& info);

}  // namespace hymba
