#include "train/hf_convert.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace hymba::hf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string value_text(const json& v) { return v.dump(); }

// A key's value, or nullptr-json when absent.
const json& get(const json& j, const char* key) {
  static const json null_json;
  auto it = j.find(key);
  return it == j.end() ? null_json : *it;
}

[[noreturn]] void refuse(const std::string& source, const std::string& key, const json& v, const std::string& why) {
  HYMBA_USER_ERROR(source, ": unsupported config.json value ", key, " = ", value_text(v), " (", why, ")");
}

int64_t need_int(const json& j, const char* key, const std::string& source) {
  const json& v = get(j, key);
  if (v.is_null()) HYMBA_USER_ERROR(source, ": config.json is missing required key ", key);
  if (!v.is_number_integer()) HYMBA_USER_ERROR(source, ": config.json key ", key, " must be an integer, got ", value_text(v));
  return v.get<int64_t>();
}

// HF Hymba describes attention windows only as one sliding_window plus global_attn_idx, so
// the resolved layers (not full_attention_layers, which a dumped config no longer carries)
// must fit that shape. Returns {window or -1, full-attention layer indices}.
std::pair<int64_t, std::vector<int64_t>> check_hf_expressible(const ModelConfig& c) {
  auto fail = [&](const std::string& what) {
    HYMBA_USER_ERROR(c.source, ": cannot be expressed as a Hugging Face Hymba model: ", what);
  };
  if (c.fusion != Fusion::Mean) fail("fusion is concat (HF Hymba averages the two branches: fusion mean)");
  int64_t window = -1;
  std::vector<int64_t> full;
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const LayerSpec& L = c.layers[i];
    if (L.kind != BlockKind::Hybrid)
      fail(str("layer ", i, " is a ", block_kind_name(L.kind), " block (HF Hymba has only hybrid layers)"));
    if (L.mlp != (c.intermediate_size > 0)) fail(str("layer ", i, " overrides the MLP"));
    if (L.window < 0) {
      full.push_back(int64_t(i));
    } else if (window >= 0 && L.window != window) {
      fail(str("layers use different sliding windows (", window, " and ", L.window, " in layer ", i,
               "); HF has one sliding_window"));
    } else {
      window = L.window;
    }
  }
  if (window < 0) full.clear();  // no sliding window at all: HF needs no global_attn_idx
  return {window, full};
}

// KV groups from the resolved layers: [producer, consumers...] in layer order.
std::vector<std::vector<int64_t>> kv_groups(const ModelConfig& c) {
  std::map<int64_t, std::vector<int64_t>> g;
  for (size_t i = 0; i < c.layers.size(); ++i)
    if (c.layers[i].is_kv_consumer()) g[c.layers[i].kv_producer].push_back(int64_t(i));
  std::vector<std::vector<int64_t>> out;
  for (auto& [p, cs] : g) {
    out.push_back({p});
    out.back().insert(out.back().end(), cs.begin(), cs.end());
  }
  return out;
}

std::string hf_layer_suffix(const std::string& s, const std::string& full_name) {
  static const std::map<std::string, std::string> exact = {
      {"input_layernorm.weight", "input_layernorm.weight"},
      {"pre_mlp_layernorm.weight", "pre_moe_layernorm.weight"},
      {"mlp.gate_proj.weight", "moe.experts.0.gate_proj.weight"},
      {"mlp.up_proj.weight", "moe.experts.0.up_proj.weight"},
      {"mlp.down_proj.weight", "moe.experts.0.down_proj.weight"},
      {"mixer.in_proj.weight", "mamba.in_proj.weight"},
      {"mixer.out_proj.weight", "mamba.out_proj.weight"},
      {"mixer.conv1d.weight", "mamba.conv1d.weight"},
      {"mixer.conv1d.bias", "mamba.conv1d.bias"},
      {"mixer.x_proj.weight", "mamba.x_proj.0.weight"},
      {"mixer.dt_proj.weight", "mamba.dt_proj.0.weight"},
      {"mixer.dt_proj.bias", "mamba.dt_proj.0.bias"},
      {"mixer.A_log", "mamba.A_log.0"},
      {"mixer.D", "mamba.D.0"},
      {"mixer.dt_layernorm.weight", "mamba.dt_layernorm.weight"},
      {"mixer.B_layernorm.weight", "mamba.B_layernorm.weight"},
      {"mixer.C_layernorm.weight", "mamba.C_layernorm.weight"},
      {"mixer.pre_avg_layernorm1.weight", "mamba.pre_avg_layernorm1.weight"},
      {"mixer.pre_avg_layernorm2.weight", "mamba.pre_avg_layernorm2.weight"},
  };
  auto it = exact.find(s);
  HYMBA_CHECK(it != exact.end(), "hf::name_map: parameter '", full_name, "' has no Hugging Face name");
  return it->second;
}

}  // namespace

ModelConfig config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) HYMBA_USER_ERROR(source, ": config.json is not a JSON object");
  auto expect = [&](const char* key, auto ok, const char* why) {
    const json& v = get(j, key);
    if (!v.is_null() && !ok(v)) refuse(source, key, v, why);
  };
  expect("model_type", [](const json& v) { return v == "hymba"; }, "expected \"hymba\"");
  expect("kv_weight_reuse", [](const json& v) { return v == false; }, "only false is supported");
  expect("kq_norm", [](const json& v) { return v == "none"; }, "only \"none\" is supported");
  expect("num_experts", [](const json& v) { return v == 1; }, "only 1 is supported: a single dense MLP");
  expect("num_mamba", [](const json& v) { return v == 1; }, "only 1 is supported");
  expect("memory_tokens_interspersed_every", [](const json& v) { return v == 0; },
         "only 0 is supported: meta tokens form a prefix");
  expect("mamba_proj_bias", [](const json& v) { return v == false; }, "in_proj/out_proj have no bias here");
  expect("hidden_act", [](const json& v) { return v == "silu"; }, "only silu is supported");
  expect("mlp_hidden_act", [](const json& v) { return v == "silu"; }, "only silu is supported");
  expect("kv_reuse_every_i_layer", [](const json& v) { return v == -1; },
         "only -1 is supported: give KV sharing as kv_reuse_group");
  expect("rope", [](const json& v) { return v == true; }, "only rotary position embeddings are supported");
  expect("rope_type", [](const json& v) { return v == "ntk" || v == "default"; }, "expected \"ntk\" or \"default\"");
  expect("layer_type",
         [](const json& v) {
           if (v.is_string()) return v == "h" || v == "hybrid";
           if (!v.is_array()) return false;
           for (const auto& e : v)
             if (e != "h") return false;
           return true;
         },
         "only hybrid layers (\"h\") are supported");

  const int64_t hidden = need_int(j, "hidden_size", source);
  const int64_t heads = need_int(j, "num_attention_heads", source);
  const int64_t layers = need_int(j, "num_hidden_layers", source);
  expect("attn_hidden_size", [&](const json& v) { return v == -1 || v == hidden; }, "must be -1 or hidden_size");
  const json& lt = get(j, "layer_type");
  if (lt.is_array() && int64_t(lt.size()) != layers)
    refuse(source, "layer_type", lt, str("expected ", layers, " entries, one per layer"));

  std::ostringstream y;
  y << "vocab_size: " << need_int(j, "vocab_size", source) << "\n";
  y << "hidden_size: " << hidden << "\nnum_layers: " << layers << "\nblock: hybrid\n";
  y << "num_heads: " << heads << "\n";
  y << "num_kv_heads: " << (get(j, "num_key_value_heads").is_null() ? heads : need_int(j, "num_key_value_heads", source)) << "\n";
  const json& kq = get(j, "kq_head_dim");
  if (!kq.is_null() && kq != -1) y << "head_dim: " << need_int(j, "kq_head_dim", source) << "\n";
  const json& vh = get(j, "v_head_dim");
  if (!vh.is_null() && vh != -1) y << "v_head_dim: " << need_int(j, "v_head_dim", source) << "\n";

  y << "ssm: {";
  y << "d_state: " << (get(j, "mamba_d_state").is_null() ? 16 : need_int(j, "mamba_d_state", source));
  y << ", d_conv: " << (get(j, "mamba_d_conv").is_null() ? 4 : need_int(j, "mamba_d_conv", source));
  y << ", expand: " << (get(j, "mamba_expand").is_null() ? 2 : need_int(j, "mamba_expand", source));
  const json& dr = get(j, "mamba_dt_rank");
  y << ", dt_rank: " << (dr.is_null() || dr == "auto" ? std::string("auto") : std::to_string(need_int(j, "mamba_dt_rank", source)));
  auto boolean = [&](const char* key, bool def) {
    const json& v = get(j, key);
    if (v.is_null()) return def;
    if (!v.is_boolean()) HYMBA_USER_ERROR(source, ": config.json key ", key, " must be true or false, got ", value_text(v));
    return v.get<bool>();
  };
  y << ", inner_layernorms: " << (boolean("mamba_inner_layernorms", true) ? "true" : "false");
  y << ", conv_bias: " << (boolean("mamba_conv_bias", true) ? "true" : "false") << "}\n";

  const int64_t inter = need_int(j, "intermediate_size", source);
  if (inter > 0) y << "mlp: {intermediate_size: " << inter << "}\n";
  else y << "mlp: none\n";
  y << "num_meta_tokens: " << (get(j, "num_memory_tokens").is_null() ? 0 : need_int(j, "num_memory_tokens", source)) << "\n";
  const json& sw = get(j, "sliding_window");
  if (sw.is_null()) y << "sliding_window: none\n";
  else y << "sliding_window: " << need_int(j, "sliding_window", source) << "\n";
  const json& ga = get(j, "global_attn_idx");
  if (!ga.is_null()) {
    if (!ga.is_array()) refuse(source, "global_attn_idx", ga, "expected a list of layer indices");
    y << "full_attention_layers: " << ga.dump() << "\n";
  }
  const json& kg = get(j, "kv_reuse_group");
  if (!kg.is_null() && !kg.empty()) {
    if (!kg.is_array()) refuse(source, "kv_reuse_group", kg, "expected a list of lists of layer indices");
    y << "kv_reuse_groups: " << kg.dump() << "\n";
  }
  y << "rope: {theta: ";
  const json& th = get(j, "rope_theta");
  if (!th.is_null() && !th.is_number()) refuse(source, "rope_theta", th, "expected a number");
  char theta[64];
  std::snprintf(theta, sizeof theta, "%.17g", th.is_null() ? 10000.0 : th.get<double>());
  y << theta;
  if (get(j, "rope_type") == "ntk")
    y << ", type: ntk, max_position: " << need_int(j, "max_position_embeddings", source)
      << ", orig_max_position: " << need_int(j, "orig_max_position_embeddings", source);
  y << "}\n";
  const json& eps = get(j, "rms_norm_eps");
  if (!eps.is_null()) {
    if (!eps.is_number()) refuse(source, "rms_norm_eps", eps, "expected a number");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", eps.get<double>());
    y << "norm_eps: " << buf << "\n";
  }
  y << "tie_embeddings: " << (boolean("tie_word_embeddings", true) ? "true" : "false") << "\n";
  y << "fusion: mean\n";
  try {
    ModelConfig c = parse_model_config_string(y.str(), source + " (converted from config.json)");
    c.source = source;
    return c;
  } catch (const UserError& e) {
    HYMBA_USER_ERROR(source, ": config.json describes an invalid model: ", e.what());
  }
}

ModelConfig load_config(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  if (fs::is_directory(p)) p /= "config.json";
  std::ifstream in(p);
  if (!in) HYMBA_USER_ERROR(p.string(), ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    HYMBA_USER_ERROR(p.string(), ": not valid JSON: ", e.what());
  }
  return config_from_json(j, p.string());
}

json config_to_json(const ModelConfig& c) {
  const auto [window, full] = check_hf_expressible(c);
  json j;
  j["architectures"] = {"HymbaForCausalLM"};
  j["model_type"] = "hymba";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["attn_hidden_size"] = -1;
  j["kq_head_dim"] = c.head_dim == c.hidden_size / c.num_heads ? json(-1) : json(c.head_dim);
  j["v_head_dim"] = c.v_head_dim;
  j["mamba_d_state"] = c.ssm.d_state;
  j["mamba_d_conv"] = c.ssm.d_conv;
  j["mamba_expand"] = c.ssm.expand;
  j["mamba_dt_rank"] = c.ssm.dt_rank;
  j["mamba_inner_layernorms"] = c.ssm.inner_layernorms;
  j["mamba_conv_bias"] = c.ssm.conv_bias;
  j["mamba_proj_bias"] = false;
  j["intermediate_size"] = c.intermediate_size;
  j["hidden_act"] = "silu";
  j["mlp_hidden_act"] = "silu";
  j["num_memory_tokens"] = c.num_meta_tokens;
  j["memory_tokens_interspersed_every"] = 0;
  j["sliding_window"] = window < 0 ? json(nullptr) : json(window);
  j["global_attn_idx"] = full;
  j["kv_reuse_group"] = kv_groups(c);
  j["kv_reuse_every_i_layer"] = -1;
  j["kv_weight_reuse"] = false;
  j["kq_norm"] = "none";
  j["num_experts"] = 1;
  j["num_experts_per_tok"] = 1;
  j["num_mamba"] = 1;
  j["layer_type"] = std::vector<std::string>(size_t(c.num_layers), "h");
  j["rope"] = true;
  j["rope_theta"] = c.rope.theta;
  j["rope_type"] = c.rope.type;
  if (c.rope.type == "ntk") {
    j["max_position_embeddings"] = c.rope.max_position;
    j["orig_max_position_embeddings"] = c.rope.orig_max_position;
  }
  j["rms_norm_eps"] = c.norm_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  return j;
}

std::vector<NameMapping> name_map(const ModelConfig& c) {
  check_hf_expressible(c);
  std::vector<NameMapping> out;
  for (const auto& [name, shape] : parameter_shapes(c)) {
    NameMapping m{name, "", shape, shape};
    if (name == "memory_tokens" || name == "embed_tokens.weight" || name == "final_layernorm.weight") {
      m.hf = "model." + name;
    } else if (name == "lm_head.weight") {
      m.hf = name;
    } else {
      HYMBA_CHECK(name.rfind("layers.", 0) == 0, "hf::name_map: unexpected parameter '", name, "'");
      const size_t dot = name.find('.', 7);
      m.hf = "model." + name.substr(0, dot + 1) + hf_layer_suffix(name.substr(dot + 1), name);
      if (name.ends_with("mixer.conv1d.weight")) m.hf_shape = {shape[0], 1, shape[1]};
    }
    out.push_back(std::move(m));
  }
  return out;
}

StateDict import_weights(const ModelConfig& c, const safetensors::Reader& r) {
  StateDict out;
  std::set<std::string> used;
  for (const NameMapping& m : name_map(c)) {
    if (!r.contains(m.hf)) HYMBA_USER_ERROR(r.path(), ": missing tensor '", m.hf, "' (our ", m.ours, ")");
    const auto& info = r.info(m.hf);
    if (info.shape != m.hf_shape)
      HYMBA_USER_ERROR(r.path(), ": tensor '", m.hf, "' has shape ", shape_str(info.shape), ", the config needs ",
                       shape_str(m.hf_shape));
    if (!is_floating(info.dtype))
      HYMBA_USER_ERROR(r.path(), ": tensor '", m.hf, "' has integer dtype ", dtype_name(info.dtype));
    out.emplace_back(m.ours, r.read(m.hf).to(DType::F32).reshape(m.our_shape).contiguous());
    used.insert(m.hf);
  }
  for (const auto& n : r.names()) {
    if (used.count(n)) continue;
    if (n == "lm_head.weight" && c.tie_embeddings) {
      // Tied: the head is the embedding; a stored copy must at least agree in shape.
      if (r.info(n).shape != Shape{c.vocab_size, c.hidden_size})
        HYMBA_USER_ERROR(r.path(), ": tied lm_head.weight has shape ", shape_str(r.info(n).shape), ", expected ",
                         shape_str(Shape{c.vocab_size, c.hidden_size}));
      continue;
    }
    HYMBA_USER_ERROR(r.path(), ": tensor '", n, "' has no counterpart in our model (unsupported HF variant?)");
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> export_weights(const ModelConfig& c, const std::map<std::string, Tensor>& state,
                                                           DType dtype) {
  HYMBA_CHECK(is_floating(dtype), "hf::export_weights: dtype must be floating, got ", dtype_name(dtype));
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<std::string> used;
  for (const NameMapping& m : name_map(c)) {
    auto it = state.find(m.ours);
    if (it == state.end()) HYMBA_USER_ERROR("export to Hugging Face: the model state has no '", m.ours, "'");
    const Tensor& t = it->second;
    if (t.shape() != m.our_shape)
      HYMBA_USER_ERROR("export to Hugging Face: '", m.ours, "' has shape ", shape_str(t.shape()), ", the config needs ",
                       shape_str(m.our_shape));
    out.emplace_back(m.hf, t.detach().to(Device::cpu()).contiguous().reshape(m.hf_shape).to(dtype).contiguous());
    used.insert(m.ours);
  }
  for (const auto& [n, _] : state)
    if (!used.count(n)) HYMBA_USER_ERROR("export to Hugging Face: state entry '", n, "' is not a parameter of the config");
  return out;
}

HFModel load(const std::string& dir) {
  HFModel m;
  m.config = load_config(dir);
  safetensors::Reader r(dir);
  m.state = import_weights(m.config, r);
  return m;
}

void save(const std::string& dir, const ModelConfig& cfg, const StateDict& state, DType dtype) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  json j = config_to_json(cfg);
  auto weights = export_weights(cfg, by_name, dtype);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) HYMBA_USER_ERROR(dir, ": cannot create directory: ", ec.message());
  {
    const std::string p = (fs::path(dir) / "config.json").string();
    std::ofstream out(p);
    if (!out) HYMBA_USER_ERROR(p, ": cannot write");
    out << j.dump(2) << "\n";
    if (!out) HYMBA_USER_ERROR(p, ": write failed");
  }
  safetensors::save((fs::path(dir) / "model.safetensors").string(), weights, {{"format", "pt"}});
}

}  // namespace hymba::hf
