#include "layers/model_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "kernels/rope.h"

namespace hymba {

const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::Attention: return "attention";
    case BlockKind::SSM: return "ssm";
    case BlockKind::Hybrid: return "hybrid";
  }
  return "?";
}

const char* fusion_name(Fusion f) { return f == Fusion::Mean ? "mean" : "concat"; }

double ModelConfig::rope_base() const {
  return kernels::rope_base(rope.theta, kernels::rope_type_from_string(rope.type), head_dim, rope.max_position,
                            rope.orig_max_position);
}

namespace {

// Reads typed values out of YAML nodes, turning every problem into a UserError that names
// the file, the line, the key and the expectation.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    int line = at.Mark().line;
    std::ostringstream os;
    os << file_;
    if (line >= 0) os << ":" << line + 1;
    os << ": key '" << key << "': " << what;
    throw UserError(os.str());
  }

  std::string scalar_text(const YAML::Node& n) const {
    if (n.IsScalar()) return "'" + n.Scalar() + "'";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a map";
    return "null";
  }

  void check_keys(const YAML::Node& map, const std::string& prefix, const std::set<std::string>& allowed) const {
    std::set<std::string> seen;
    for (const auto& kv : map) {
      std::string k = kv.first.as<std::string>();
      // yaml-cpp keeps the first of two equal keys; a later one silently losing is a trap.
      if (!seen.insert(k).second) fail(kv.first, prefix + k, "given twice");
      if (!allowed.count(k)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(kv.first, prefix + k, "unknown key (expected one of: " + list + ")");
      }
    }
  }

  int64_t to_int(const YAML::Node& n, const std::string& key, int64_t min_value) const {
    int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v))
      fail(n, key, "expected an integer, got " + scalar_text(n));
    if (v < min_value) fail(n, key, "expected an integer >= " + std::to_string(min_value) + ", got " + n.Scalar());
    return v;
  }
  double to_double(const YAML::Node& n, const std::string& key) const {
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v)) fail(n, key, "expected a number, got " + scalar_text(n));
    return v;
  }
  bool to_bool(const YAML::Node& n, const std::string& key) const {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail(n, key, "expected true or false, got " + scalar_text(n));
    return v;
  }
  std::string to_choice(const YAML::Node& n, const std::string& key, const std::vector<std::string>& choices) const {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : " or ") + c;
    if (!n.IsScalar()) fail(n, key, "expected " + list + ", got " + scalar_text(n));
    std::string s = n.Scalar();
    if (std::find(choices.begin(), choices.end(), s) == choices.end())
      fail(n, key, "expected " + list + ", got '" + s + "'");
    return s;
  }
  bool is_none(const YAML::Node& n) const {
    return n.IsNull() || (n.IsScalar() && (n.Scalar() == "none" || n.Scalar() == "null"));
  }
  std::vector<int64_t> to_int_list(const YAML::Node& n, const std::string& key) const {
    if (!n.IsSequence()) fail(n, key, "expected a list of integers, got " + scalar_text(n));
    std::vector<int64_t> out;
    for (size_t i = 0; i < n.size(); ++i) out.push_back(to_int(n[i], key + "[" + std::to_string(i) + "]", 0));
    return out;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

BlockKind parse_kind(const Reader& r, const YAML::Node& n, const std::string& key) {
  std::string s = r.to_choice(n, key, {"attention", "ssm", "hybrid"});
  return s == "attention" ? BlockKind::Attention : s == "ssm" ? BlockKind::SSM : BlockKind::Hybrid;
}

// window: `full`, `none` or an integer >= 0.
int64_t parse_window(const Reader& r, const YAML::Node& n, const std::string& key) {
  if (n.IsScalar() && (n.Scalar() == "full" || n.Scalar() == "none")) return -1;
  int64_t v = 0;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < 0)
    r.fail(n, key, "expected `full` or an integer >= 0, got " + r.scalar_text(n));
  return v;
}

}  // namespace

ModelConfig parse_model_config(const YAML::Node& root, const std::string& file) {
  Reader r(file);
  ModelConfig c;
  c.source = file;
  if (!root.IsMap()) r.fail(root, "<top level>", "expected a map of model settings");
  r.check_keys(root, "",
               {"vocab_size", "hidden_size", "num_layers", "block", "num_heads", "num_kv_heads", "head_dim",
                "v_head_dim", "ssm", "mlp", "num_meta_tokens", "sliding_window", "full_attention_layers",
                "kv_reuse_groups", "rope", "norm_eps", "tie_embeddings", "fusion", "init_std", "layers", "name"});
  auto required = [&](const char* key) {
    YAML::Node n = root[key];
    if (!n) r.fail(root, key, "missing (required)");
    return n;
  };
  c.vocab_size = r.to_int(required("vocab_size"), "vocab_size", 1);
  c.hidden_size = r.to_int(required("hidden_size"), "hidden_size", 1);
  c.num_layers = r.to_int(required("num_layers"), "num_layers", 1);
  if (auto n = root["block"]) c.block = parse_kind(r, n, "block");

  // Which block kinds appear decides which keys are required; read the overrides' kinds first.
  bool any_attention = c.block != BlockKind::SSM, any_ssm = c.block != BlockKind::Attention;
  YAML::Node layers_node = root["layers"];
  if (layers_node) {
    if (!layers_node.IsSequence()) r.fail(layers_node, "layers", "expected a list of {index: ..., ...} overrides");
    for (const auto& o : layers_node)
      if (o.IsMap() && o["block"]) {
        BlockKind k = parse_kind(r, o["block"], "layers.block");
        any_attention |= k != BlockKind::SSM;
        any_ssm |= k != BlockKind::Attention;
      }
  }

  if (any_attention) {
    YAML::Node nh = required("num_heads");
    c.num_heads = r.to_int(nh, "num_heads", 1);
    c.num_kv_heads = root["num_kv_heads"] ? r.to_int(root["num_kv_heads"], "num_kv_heads", 1) : c.num_heads;
    if (root["head_dim"]) {
      c.head_dim = r.to_int(root["head_dim"], "head_dim", 2);
    } else {
      if (c.hidden_size % c.num_heads != 0)
        r.fail(nh, "num_heads", str("num_heads (", c.num_heads, ") must divide hidden_size (", c.hidden_size,
                                    ") unless head_dim is given"));
      c.head_dim = c.hidden_size / c.num_heads;
    }
    if (c.head_dim % 2 != 0) r.fail(root["head_dim"] ? root["head_dim"] : nh, "head_dim", str("must be even for RoPE, got ", c.head_dim));
    c.v_head_dim = root["v_head_dim"] ? r.to_int(root["v_head_dim"], "v_head_dim", 1) : c.head_dim;
    if (c.num_heads % c.num_kv_heads != 0)
      r.fail(root["num_kv_heads"], "num_kv_heads",
             str("num_kv_heads (", c.num_kv_heads, ") must divide num_heads (", c.num_heads, ")"));
  } else {
    for (const char* k : {"num_heads", "num_kv_heads", "head_dim", "v_head_dim"})
      if (root[k]) {
        if (std::string(k) == "num_heads") c.num_heads = r.to_int(root[k], k, 1);
        if (std::string(k) == "num_kv_heads") c.num_kv_heads = r.to_int(root[k], k, 1);
        if (std::string(k) == "head_dim") c.head_dim = r.to_int(root[k], k, 2);
        if (std::string(k) == "v_head_dim") c.v_head_dim = r.to_int(root[k], k, 1);
      }
  }

  if (auto s = root["ssm"]) {
    if (!s.IsMap()) r.fail(s, "ssm", "expected a map {d_state, d_conv, expand, dt_rank, inner_layernorms, conv_bias}");
    r.check_keys(s, "ssm.", {"d_state", "d_conv", "expand", "dt_rank", "inner_layernorms", "conv_bias"});
    if (s["d_state"]) c.ssm.d_state = r.to_int(s["d_state"], "ssm.d_state", 1);
    if (s["d_conv"]) {
      c.ssm.d_conv = r.to_int(s["d_conv"], "ssm.d_conv", 2);
      if (c.ssm.d_conv > 4) r.fail(s["d_conv"], "ssm.d_conv", str("expected 2 to 4 (the conv kernel's range), got ", c.ssm.d_conv));
    }
    if (s["expand"]) c.ssm.expand = r.to_int(s["expand"], "ssm.expand", 1);
    if (s["dt_rank"] && !(s["dt_rank"].IsScalar() && s["dt_rank"].Scalar() == "auto"))
      c.ssm.dt_rank = r.to_int(s["dt_rank"], "ssm.dt_rank", 1);
    if (s["inner_layernorms"]) c.ssm.inner_layernorms = r.to_bool(s["inner_layernorms"], "ssm.inner_layernorms");
    if (s["conv_bias"]) c.ssm.conv_bias = r.to_bool(s["conv_bias"], "ssm.conv_bias");
  }
  if (c.ssm.dt_rank == 0) c.ssm.dt_rank = (c.hidden_size + 15) / 16;  // Mamba's "auto"

  if (auto m = root["mlp"]) {
    if (r.is_none(m) || (m.IsScalar() && m.Scalar() == "false")) {
      c.intermediate_size = 0;
    } else {
      if (!m.IsMap()) r.fail(m, "mlp", "expected {intermediate_size: N} or none, got " + r.scalar_text(m));
      r.check_keys(m, "mlp.", {"intermediate_size"});
      if (!m["intermediate_size"]) r.fail(m, "mlp.intermediate_size", "missing (required when mlp is given)");
      c.intermediate_size = r.to_int(m["intermediate_size"], "mlp.intermediate_size", 1);
    }
  }
  if (auto n = root["num_meta_tokens"]) c.num_meta_tokens = r.to_int(n, "num_meta_tokens", 0);
  if (auto n = root["sliding_window"]) c.sliding_window = r.is_none(n) ? -1 : parse_window(r, n, "sliding_window");
  if (auto n = root["full_attention_layers"]) {
    c.full_attention_layers = r.to_int_list(n, "full_attention_layers");
    for (size_t i = 0; i < c.full_attention_layers.size(); ++i)
      if (c.full_attention_layers[i] >= c.num_layers)
        r.fail(n[i], "full_attention_layers", str("layer ", c.full_attention_layers[i], " is out of range [0, ",
                                                   c.num_layers, ")"));
  }
  if (auto rn = root["rope"]) {
    if (!rn.IsMap()) r.fail(rn, "rope", "expected a map {theta, type, max_position, orig_max_position}");
    r.check_keys(rn, "rope.", {"theta", "type", "max_position", "orig_max_position"});
    if (rn["theta"]) c.rope.theta = r.to_double(rn["theta"], "rope.theta");
    if (rn["type"]) c.rope.type = r.to_choice(rn["type"], "rope.type", {"default", "ntk"});
    if (rn["max_position"]) c.rope.max_position = r.to_int(rn["max_position"], "rope.max_position", 1);
    if (rn["orig_max_position"]) c.rope.orig_max_position = r.to_int(rn["orig_max_position"], "rope.orig_max_position", 1);
    if (c.rope.type == "ntk" && (c.rope.max_position == 0 || c.rope.orig_max_position == 0))
      r.fail(rn, "rope", "type ntk needs max_position and orig_max_position");
    if (c.rope.theta <= 0) r.fail(rn["theta"], "rope.theta", "expected a positive number");
  }
  if (auto n = root["norm_eps"]) {
    c.norm_eps = r.to_double(n, "norm_eps");
    if (!(c.norm_eps > 0)) r.fail(n, "norm_eps", "expected a positive number");
  }
  if (auto n = root["tie_embeddings"]) c.tie_embeddings = r.to_bool(n, "tie_embeddings");
  if (auto n = root["fusion"]) c.fusion = r.to_choice(n, "fusion", {"mean", "concat"}) == "mean" ? Fusion::Mean : Fusion::Concat;
  if (auto n = root["init_std"]) c.init_std = r.to_double(n, "init_std");
  if (auto n = root["name"]) {
    if (!n.IsScalar()) r.fail(n, "name", "expected a string");
  }

  // Resolve layers: defaults, then full-attention list, then overrides in order.
  std::set<int64_t> full(c.full_attention_layers.begin(), c.full_attention_layers.end());
  c.layers.resize(size_t(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerSpec& L = c.layers[size_t(i)];
    L.kind = c.block;
    L.mlp = c.intermediate_size > 0;
    L.window = full.count(i) ? -1 : c.sliding_window;
  }
  if (layers_node) {
    for (size_t oi = 0; oi < layers_node.size(); ++oi) {
      const YAML::Node o = layers_node[oi];
      std::string p = "layers[" + std::to_string(oi) + "].";
      if (!o.IsMap()) r.fail(o, "layers[" + std::to_string(oi) + "]", "expected a map {index: ..., block/mlp/window: ...}");
      r.check_keys(o, p, {"index", "block", "mlp", "window"});
      YAML::Node idx = o["index"];
      if (!idx) r.fail(o, p + "index", "missing (required: an integer, a list, all, even or odd)");
      std::vector<int64_t> which;
      if (idx.IsScalar() && (idx.Scalar() == "all" || idx.Scalar() == "even" || idx.Scalar() == "odd")) {
        for (int64_t i = 0; i < c.num_layers; ++i)
          if (idx.Scalar() == "all" || (i % 2 == 0) == (idx.Scalar() == "even")) which.push_back(i);
      } else if (idx.IsSequence()) {
        which = r.to_int_list(idx, p + "index");
      } else {
        which.push_back(r.to_int(idx, p + "index", 0));
      }
      for (int64_t i : which)
        if (i >= c.num_layers) r.fail(idx, p + "index", str("layer ", i, " is out of range [0, ", c.num_layers, ")"));
      for (int64_t i : which) {
        LayerSpec& L = c.layers[size_t(i)];
        if (o["block"]) L.kind = parse_kind(r, o["block"], p + "block");
        if (o["mlp"]) {
          L.mlp = r.to_bool(o["mlp"], p + "mlp");
          if (L.mlp && c.intermediate_size == 0)
            r.fail(o["mlp"], p + "mlp", "true needs a model-level mlp: {intermediate_size: N}");
        }
        if (o["window"]) L.window = parse_window(r, o["window"], p + "window");
      }
    }
  }

  // KV sharing groups: the first member produces, the others consume; all need attention.
  if (auto g = root["kv_reuse_groups"]) {
    if (!g.IsSequence()) r.fail(g, "kv_reuse_groups", "expected a list of lists of layer indices");
    c.kv_reuse_groups.clear();
    std::set<int64_t> seen;
    for (size_t gi = 0; gi < g.size(); ++gi) {
      std::string key = "kv_reuse_groups[" + std::to_string(gi) + "]";
      std::vector<int64_t> grp = r.to_int_list(g[gi], key);
      if (grp.size() < 2) r.fail(g[gi], key, "expected at least two layers (a producer and a consumer)");
      for (size_t j = 0; j < grp.size(); ++j) {
        int64_t i = grp[j];
        if (i >= c.num_layers) r.fail(g[gi][j], key, str("layer ", i, " is out of range [0, ", c.num_layers, ")"));
        if (!seen.insert(i).second) r.fail(g[gi][j], key, str("layer ", i, " is in more than one group"));
        if (!c.layers[size_t(i)].has_attention())
          r.fail(g[gi][j], key, str("layer ", i, " is an ssm block and has no k, v to share"));
        if (j > 0 && i <= grp[0])
          r.fail(g[gi][j], key, str("consumer layer ", i, " comes before (or is) its producer, layer ", grp[0],
                                    " (the first index of a group produces k, v)"));
      }
      for (size_t j = 1; j < grp.size(); ++j) c.layers[size_t(grp[j])].kv_producer = grp[0];
      c.layers[size_t(grp[0])].kv_shared = true;
      c.kv_reuse_groups.push_back(grp);
    }
  }

  // Shape consistency of what the layers actually use.
  bool uses_attention = false, uses_ssm = false, uses_hybrid = false;
  for (const auto& L : c.layers) {
    uses_attention |= L.has_attention();
    uses_ssm |= L.has_ssm();
    uses_hybrid |= L.kind == BlockKind::Hybrid;
  }
  if (uses_attention && c.num_heads == 0)
    r.fail(root, "num_heads", "missing (required: some layer has attention)");
  if (uses_hybrid && c.fusion == Fusion::Mean && c.attn_out() != c.ssm_inner())
    r.fail(root["fusion"] ? root["fusion"] : root, "fusion",
           str("mean fusion needs num_heads * v_head_dim (", c.attn_out(), ") == ssm.expand * hidden_size (",
               c.ssm_inner(), "); use fusion: concat or change v_head_dim"));
  if (!uses_ssm && root["ssm"]) {
    // Harmless, but it hints at a typo'd block kind: keep it legal (study configs share defaults).
  }
  if (uses_attention && c.rope.type == "ntk") (void)c.rope_base();  // throws early on a bad NTK setting
  return c;
}

ModelConfig parse_model_config_string(const std::string& yaml, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    HYMBA_USER_ERROR(file, ":", e.mark.line + 1, ": invalid YAML: ", e.msg);
  }
  return parse_model_config(root, file);
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) HYMBA_USER_ERROR(path, ": cannot open model config");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_config_string(ss.str(), path);
}

std::string dump_model_config(const ModelConfig& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "vocab_size" << YAML::Value << c.vocab_size;
  e << YAML::Key << "hidden_size" << YAML::Value << c.hidden_size;
  e << YAML::Key << "num_layers" << YAML::Value << c.num_layers;
  e << YAML::Key << "block" << YAML::Value << block_kind_name(c.block);
  if (c.num_heads > 0) {
    e << YAML::Key << "num_heads" << YAML::Value << c.num_heads;
    e << YAML::Key << "num_kv_heads" << YAML::Value << c.num_kv_heads;
    e << YAML::Key << "head_dim" << YAML::Value << c.head_dim;
    e << YAML::Key << "v_head_dim" << YAML::Value << c.v_head_dim;
  }
  e << YAML::Key << "ssm" << YAML::Value << YAML::Flow << YAML::BeginMap;
  e << YAML::Key << "d_state" << YAML::Value << c.ssm.d_state << YAML::Key << "d_conv" << YAML::Value << c.ssm.d_conv;
  e << YAML::Key << "expand" << YAML::Value << c.ssm.expand << YAML::Key << "dt_rank" << YAML::Value << c.ssm.dt_rank;
  e << YAML::Key << "inner_layernorms" << YAML::Value << c.ssm.inner_layernorms;
  e << YAML::Key << "conv_bias" << YAML::Value << c.ssm.conv_bias << YAML::EndMap;
  e << YAML::Key << "mlp" << YAML::Value;
  if (c.intermediate_size > 0)
    e << YAML::Flow << YAML::BeginMap << YAML::Key << "intermediate_size" << YAML::Value << c.intermediate_size
      << YAML::EndMap;
  else
    e << "none";
  e << YAML::Key << "num_meta_tokens" << YAML::Value << c.num_meta_tokens;
  e << YAML::Key << "sliding_window" << YAML::Value;
  if (c.sliding_window < 0) e << "none"; else e << c.sliding_window;
  e << YAML::Key << "kv_reuse_groups" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& g : c.kv_reuse_groups) {
    e << YAML::Flow << YAML::BeginSeq;
    for (int64_t i : g) e << i;
    e << YAML::EndSeq;
  }
  e << YAML::EndSeq;
  e << YAML::Key << "rope" << YAML::Value << YAML::Flow << YAML::BeginMap;
  e << YAML::Key << "theta" << YAML::Value << c.rope.theta << YAML::Key << "type" << YAML::Value << c.rope.type;
  if (c.rope.max_position) e << YAML::Key << "max_position" << YAML::Value << c.rope.max_position;
  if (c.rope.orig_max_position) e << YAML::Key << "orig_max_position" << YAML::Value << c.rope.orig_max_position;
  e << YAML::EndMap;
  e << YAML::Key << "norm_eps" << YAML::Value << c.norm_eps;
  e << YAML::Key << "tie_embeddings" << YAML::Value << c.tie_embeddings;
  e << YAML::Key << "fusion" << YAML::Value << fusion_name(c.fusion);
  e << YAML::Key << "init_std" << YAML::Value << c.init_std;
  // Every layer spelled out, so the dump does not depend on how the source grouped overrides.
  e << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const LayerSpec& L = c.layers[i];
    e << YAML::Flow << YAML::BeginMap << YAML::Key << "index" << YAML::Value << int64_t(i);
    e << YAML::Key << "block" << YAML::Value << block_kind_name(L.kind);
    e << YAML::Key << "mlp" << YAML::Value << L.mlp;
    e << YAML::Key << "window" << YAML::Value;
    if (L.window < 0) e << "full"; else e << L.window;
    e << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::pair<std::string, Shape>> parameter_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, Shape>> out;
  const int64_t H = c.hidden_size, I = c.ssm_inner(), N = c.ssm.d_state, R = c.ssm.dt_rank;
  // Model's own parameter first (Module lists own parameters before children's).
  if (c.num_meta_tokens > 0) out.push_back({"memory_tokens", {c.num_meta_tokens, H}});
  out.push_back({"embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t li = 0; li < c.num_layers; ++li) {
    const LayerSpec& L = c.layers[size_t(li)];
    std::string p = "layers." + std::to_string(li) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    std::string m = p + "mixer.";
    int64_t attn_in = L.has_attention() ? c.q_width() + (L.is_kv_consumer() ? 0 : c.k_width() + c.v_width()) : 0;
    auto ssm_params = [&] {  // after in_proj, in the SSM branch's registration order
      out.push_back({m + "conv1d.weight", {I, c.ssm.d_conv}});
      if (c.ssm.conv_bias) out.push_back({m + "conv1d.bias", {I}});
      out.push_back({m + "x_proj.weight", {R + 2 * N, I}});
      out.push_back({m + "dt_proj.weight", {I, R}});
      out.push_back({m + "dt_proj.bias", {I}});
      if (c.ssm.inner_layernorms) {
        out.push_back({m + "dt_layernorm.weight", {R}});
        out.push_back({m + "B_layernorm.weight", {N}});
        out.push_back({m + "C_layernorm.weight", {N}});
      }
    };
    switch (L.kind) {
      case BlockKind::Attention:
        out.push_back({m + "in_proj.weight", {attn_in, H}});
        out.push_back({m + "out_proj.weight", {H, c.attn_out()}});
        break;
      case BlockKind::SSM:
        out.push_back({m + "A_log", {I, N}});
        out.push_back({m + "D", {I}});
        out.push_back({m + "in_proj.weight", {2 * I, H}});
        ssm_params();
        out.push_back({m + "out_proj.weight", {H, I}});
        break;
      case BlockKind::Hybrid:
        out.push_back({m + "A_log", {I, N}});
        out.push_back({m + "D", {I}});
        out.push_back({m + "in_proj.weight", {attn_in + 2 * I, H}});
        ssm_params();
        out.push_back({m + "pre_avg_layernorm1.weight", {c.attn_out()}});
        out.push_back({m + "pre_avg_layernorm2.weight", {I}});
        out.push_back({m + "out_proj.weight", {H, c.fusion == Fusion::Mean ? I : c.attn_out() + I}});
        break;
    }
    if (L.mlp) {
      out.push_back({p + "pre_mlp_layernorm.weight", {H}});
      out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, H}});
      out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, H}});
      out.push_back({p + "mlp.down_proj.weight", {H, c.intermediate_size}});
    }
  }
  out.push_back({"final_layernorm.weight", {H}});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

int64_t count_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& [_, s] : parameter_shapes(c)) n += shape_numel(s);
  return n;
}

}  // namespace hymba
