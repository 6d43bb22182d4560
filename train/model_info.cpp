#include "train/model_info.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "core/error.h"

namespace hymba {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "layers.7.mixer.in_proj.weight" -> 7; -1 for model-level names.
int64_t layer_index(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return -1;
  return std::stoll(name.substr(7, name.find('.', 7) - 7));
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string human(double v, const char* unit) {
  char buf[64];
  const char* prefixes[] = {"", "K", "M", "G", "T", "P"};
  int p = 0;
  while (v >= 1000.0 && p < 5) {
    v /= 1000.0;
    ++p;
  }
  std::snprintf(buf, sizeof buf, "%.2f %s%s", v, prefixes[p], unit);
  return buf;
}

}  // namespace

ParameterBreakdown parameter_breakdown(const ModelConfig& c) {
  ParameterBreakdown b;
  for (const auto& [name, shape] : parameter_shapes(c)) {
    const int64_t n = shape_numel(shape);
    b.total += n;
    if (name == "memory_tokens") {
      b.meta_tokens += n;
      continue;
    }
    if (name == "embed_tokens.weight" || name == "lm_head.weight") {
      b.embedding += n;
      // The output head is a matmul whether it is tied to the embedding or not.
      if (name == "lm_head.weight" || c.tie_embeddings) b.matmul += n;
      continue;
    }
    if (name.find("layernorm") != std::string::npos) {
      b.norms += n;
      continue;
    }
    if (name.find(".mlp.") != std::string::npos) {
      b.mlp += n;
      b.matmul += n;
      continue;
    }
    const LayerSpec& L = c.layers[size_t(layer_index(name))];
    const bool is_matmul = ends_with(name, "_proj.weight");
    if (is_matmul) b.matmul += n;
    if (ends_with(name, "mixer.in_proj.weight")) {
      const int64_t H = c.hidden_size;
      const int64_t attn_rows =
          L.has_attention() ? c.q_width() + (L.is_kv_consumer() ? 0 : c.k_width() + c.v_width()) : 0;
      b.attention += attn_rows * H;
      b.ssm += n - attn_rows * H;
    } else if (ends_with(name, "mixer.out_proj.weight")) {
      if (L.kind == BlockKind::Attention) b.attention += n;
      else if (L.kind == BlockKind::SSM) b.ssm += n;
      else b.fusion_out += n;
    } else {
      b.ssm += n;  // conv1d, x_proj, dt_proj, A_log, D: only SSM mixers have other parameters
    }
  }
  return b;
}

double mean_visible_keys(int64_t S, int64_t M, int64_t W) {
  HYMBA_CHECK(S > 0, "mean_visible_keys: sequence length must be positive, got ", S);
  // Sum over i = M .. M+S-1 in closed-form pieces would be shorter but this is exact and
  // O(S), negligible next to reading a config.
  double sum = 0;
  for (int64_t i = M; i < M + S; ++i) {
    if (W < 0) {
      sum += double(i + 1);
    } else {
      sum += double(std::min(i + 1, W + 1)) + double(std::max<int64_t>(0, std::min(M, i - W)));
    }
  }
  return sum / double(S);
}

CacheBreakdown inference_cache(const ModelConfig& c, int64_t S) {
  HYMBA_CHECK(S > 0, "inference_cache: sequence length must be positive, got ", S);
  CacheBreakdown k;
  k.seq_len = S;
  const int64_t M = c.num_meta_tokens, bytes = 2;
  const int64_t per_key = c.num_kv_heads * (c.head_dim + c.v_head_dim) * bytes;
  for (const LayerSpec& L : c.layers) {
    if (L.has_attention() && !L.is_kv_consumer()) {
      if (L.window < 0) {
        ++k.kv_layers_full;
        k.kv_bytes_full += (M + S) * per_key;
      } else {
        ++k.kv_layers_swa;
        k.kv_bytes_swa += std::min(M + S, M + L.window + 1) * per_key;
      }
    }
    if (L.has_ssm()) {
      ++k.ssm_layers;
      k.ssm_state_bytes += c.ssm_inner() * c.ssm.d_state * bytes;
      k.conv_state_bytes += c.ssm_inner() * (c.ssm.d_conv - 1) * bytes;
    }
  }
  return k;
}

ModelInfo model_info(const ModelConfig& c, int64_t S) {
  ModelInfo info;
  info.params = parameter_breakdown(c);
  info.seq_len = S;
  for (const LayerSpec& L : c.layers) {
    switch (L.kind) {
      case BlockKind::Attention: ++info.blocks_attention; break;
      case BlockKind::SSM: ++info.blocks_ssm; break;
      case BlockKind::Hybrid: ++info.blocks_hybrid; break;
    }
    if (L.mlp) ++info.blocks_with_mlp;
    if (L.has_attention())
      info.attention_flops_per_token += 6.0 * double(c.num_heads) * double(c.head_dim + c.v_head_dim) *
                                        mean_visible_keys(S, c.num_meta_tokens, L.window);
  }
  info.train_flops_per_token = 6.0 * double(info.params.matmul) + info.attention_flops_per_token;
  info.cache = inference_cache(c, S);
  return info;
}

std::string format_model_info(const ModelConfig& c, const ModelInfo& info) {
  std::ostringstream os;
  const auto& p = info.params;
  auto row = [&](const char* what, int64_t n) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "  %-24s %16s  %6.2f%%\n", what, with_commas(n).c_str(),
                  p.total > 0 ? 100.0 * double(n) / double(p.total) : 0.0);
    os << buf;
  };
  os << "model: " << c.source << "\n";
  os << "layers: " << c.num_layers << " (" << info.blocks_hybrid << " hybrid, " << info.blocks_attention
     << " attention, " << info.blocks_ssm << " ssm; " << info.blocks_with_mlp << " with MLP)\n";
  os << "parameters:\n";
  row("embedding", p.embedding);
  row("meta tokens", p.meta_tokens);
  row("attention", p.attention);
  row("ssm", p.ssm);
  row("fusion out_proj", p.fusion_out);
  row("mlp", p.mlp);
  row("norms", p.norms);
  row("total", p.total);
  os << "  matmul parameters (N)  " << with_commas(p.matmul) << "\n";
  os << "training FLOPs per token at seq " << info.seq_len << ": " << human(info.train_flops_per_token, "FLOP")
     << " (6N = " << human(6.0 * double(p.matmul), "FLOP") << ", attention " << human(info.attention_flops_per_token, "FLOP")
     << ")\n";
  const auto& k = info.cache;
  os << "inference cache at seq " << k.seq_len << " (fp16):\n";
  os << "  KV full attention      " << with_commas(k.kv_bytes_full) << " B in " << k.kv_layers_full << " layers\n";
  os << "  KV sliding window      " << with_commas(k.kv_bytes_swa) << " B in " << k.kv_layers_swa << " layers\n";
  os << "  KV total               " << with_commas(k.kv_bytes()) << " B (" << human(double(k.kv_bytes()), "B") << ")\n";
  os << "  SSM states             " << with_commas(k.ssm_state_bytes) << " B in " << k.ssm_layers << " layers\n";
  os << "  conv states            " << with_commas(k.conv_state_bytes) << " B\n";
  os << "  total                  " << with_commas(k.total_bytes()) << " B (" << human(double(k.total_bytes()), "B") << ")\n";
  return os.str();
}

}  // namespace hymba
