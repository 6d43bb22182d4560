// Hugging Face conversion: config.json <-> ModelConfig, the name map, and a tiny Hymba
// exported to a synthetic HF directory and imported back (identical parameters and logits).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <unistd.h>

#include "core/error.h"
#include "layers/model.h"
#include "train/checkpoint.h"
#include "train/hf_convert.h"

namespace hymba {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::HasSubstr;

// vocab 32, hidden 16, 4 layers, layers 1-2 share KV, 2 meta tokens; V is twice Q/K wide
// so attention output (2 x 16) equals the SSM width (2 x 16), as in Hymba-1.5B.
constexpr const char* kTiny = R"(
vocab_size: 32
hidden_size: 16
num_layers: 4
block: hybrid
num_heads: 2
num_kv_heads: 1
head_dim: 8
v_head_dim: 16
ssm: {d_state: 4, d_conv: 4, expand: 2, dt_rank: 2, inner_layernorms: true, conv_bias: true}
mlp: {intermediate_size: 24}
num_meta_tokens: 2
sliding_window: 3
full_attention_layers: [0, 3]
kv_reuse_groups: [[1, 2]]
rope: {theta: 10000, type: ntk, max_position: 64, orig_max_position: 16}
norm_eps: 1.0e-6
tie_embeddings: true
fusion: mean
)";

class HFConvert : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hymba_hf_" + std::to_string(::getpid()) + "_" + testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const UserError& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected a UserError";
    return "";
  }
  fs::path dir_;
};

ModelConfig tiny() { return parse_model_config_string(kTiny, "tiny"); }

TEST_F(HFConvert, NameMapCoversEveryParameterOnce) {
  for (bool tie : {true, false}) {
    ModelConfig c = tiny();
    c.tie_embeddings = tie;
    c = parse_model_config_string(dump_model_config(c), "tiny");
    Model m(c, 3);
    auto map = hf::name_map(c);
    std::set<std::string> ours, theirs;
    for (const auto& e : map) {
      EXPECT_TRUE(ours.insert(e.ours).second) << e.ours;
      EXPECT_TRUE(theirs.insert(e.hf).second) << e.hf;
      EXPECT_EQ(shape_numel(e.our_shape), shape_numel(e.hf_shape)) << e.ours;
    }
    std::set<std::string> model_names;
    for (const auto& [n, t] : m.state_dict()) {
      model_names.insert(n);
      EXPECT_TRUE(ours.count(n)) << n << " has no HF name";
    }
    EXPECT_EQ(ours, model_names);
    EXPECT_EQ(theirs.count("lm_head.weight"), tie ? 0u : 1u);
  }
}

TEST_F(HFConvert, Hymba15BNamesAndShapes) {
  ModelConfig c = load_model_config(std::string(HYMBA_SOURCE_DIR) + "/configs/hymba-1.5b.yaml");
  std::map<std::string, Shape> hf;
  for (const auto& e : hf::name_map(c)) hf[e.hf] = e.hf_shape;
  EXPECT_EQ(hf.at("model.embed_tokens.weight"), (Shape{32001, 1600}));
  EXPECT_EQ(hf.at("model.memory_tokens"), (Shape{128, 1600}));
  EXPECT_EQ(hf.at("model.layers.0.mamba.in_proj.weight"), (Shape{8960, 1600}));
  EXPECT_EQ(hf.at("model.layers.2.mamba.in_proj.weight"), (Shape{8000, 1600}));
  EXPECT_EQ(hf.at("model.layers.5.mamba.conv1d.weight"), (Shape{3200, 1, 4}));
  EXPECT_EQ(hf.at("model.layers.5.mamba.x_proj.0.weight"), (Shape{132, 3200}));
  EXPECT_EQ(hf.at("model.layers.5.mamba.dt_proj.0.bias"), (Shape{3200}));
  EXPECT_EQ(hf.at("model.layers.5.mamba.A_log.0"), (Shape{3200, 16}));
  EXPECT_EQ(hf.at("model.layers.31.moe.experts.0.down_proj.weight"), (Shape{1600, 5504}));
  EXPECT_EQ(hf.at("model.layers.31.pre_moe_layernorm.weight"), (Shape{1600}));
  EXPECT_EQ(hf.count("lm_head.weight"), 0u);
  // config.json round trip gives the same model.
  ModelConfig back = hf::config_from_json(hf::config_to_json(c), "config.json");
  EXPECT_EQ(parameter_shapes(back), parameter_shapes(c));
  EXPECT_EQ(count_parameters(back), 1522797824);
  for (size_t i = 0; i < c.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].window, c.layers[i].window) << i;
    EXPECT_EQ(back.layers[i].kv_producer, c.layers[i].kv_producer) << i;
  }
  EXPECT_DOUBLE_EQ(back.rope_base(), c.rope_base());
}

TEST_F(HFConvert, ExportImportIsIdentical) {
  ModelConfig c = tiny();
  Model m(c, 11);
  hf::save(dir_.string(), c, m.state_dict());
  EXPECT_TRUE(fs::exists(dir_ / "config.json"));
  safetensors::Reader r(dir_.string());
  EXPECT_FALSE(r.contains("lm_head.weight"));
  EXPECT_EQ(r.info("model.layers.1.mamba.conv1d.weight").shape, (Shape{32, 1, 4}));

  hf::HFModel back = hf::load(dir_.string());
  EXPECT_EQ(parameter_shapes(back.config), parameter_shapes(c));
  Model m2(back.config, 99);  // different init: the load must overwrite everything
  m2.load_state_dict(back.state);
  auto s1 = m.state_dict(), s2 = m2.state_dict();
  ASSERT_EQ(s1.size(), s2.size());
  for (size_t i = 0; i < s1.size(); ++i) {
    EXPECT_EQ(s1[i].first, s2[i].first);
    EXPECT_EQ(s1[i].second.to_vector<float>(), s2[i].second.to_vector<float>()) << s1[i].first;
  }
  Tensor ids = from_vector<int64_t>({1, 5, 31, 0, 7, 7, 2, 9, 3, 30, 12, 4}, {2, 6});
  NoGradGuard ng;
  EXPECT_EQ(m.forward(ids).to_vector<float>(), m2.forward(ids).to_vector<float>());
}

TEST_F(HFConvert, Bf16ExportRoundsOnce) {
  ModelConfig c = tiny();
  Model m(c, 5);
  hf::save(dir_.string(), c, m.state_dict(), DType::BF16);
  safetensors::Reader r(dir_.string());
  EXPECT_EQ(r.info("model.embed_tokens.weight").dtype, DType::BF16);
  hf::HFModel back = hf::load(dir_.string());
  for (const auto& [n, t] : back.state) {
    Tensor orig = m.find(n);
    EXPECT_EQ(t.to_vector<float>(), orig.detach().to(DType::BF16).to(DType::F32).to_vector<float>()) << n;
  }
}

TEST_F(HFConvert, UnsupportedConfigValuesRefusedByKey) {
  const json base = hf::config_to_json(tiny());
  EXPECT_NO_THROW(hf::config_from_json(base, "config.json"));
  const std::vector<std::pair<std::string, json>> bad = {
      {"kv_weight_reuse", true},
      {"kq_norm", "rms"},
      {"num_experts", 4},
      {"memory_tokens_interspersed_every", 8},
      {"layer_type", json::array({"h", "a", "h", "h"})},
      {"layer_type", "m"},
      {"mamba_proj_bias", true},
      {"hidden_act", "gelu"},
      {"kv_reuse_every_i_layer", 2},
      {"model_type", "llama"},
      {"rope_type", "yarn"},
      {"attn_hidden_size", 32},
  };
  for (const auto& [key, value] : bad) {
    json j = base;
    j[key] = value;
    std::string msg = error_of([&] { hf::config_from_json(j, "dir/config.json"); });
    EXPECT_THAT(msg, HasSubstr(key)) << value.dump();
    EXPECT_THAT(msg, HasSubstr("dir/config.json"));
  }
  json j = base;
  j.erase("hidden_size");
  EXPECT_THAT(error_of([&] { hf::config_from_json(j, "c.json"); }), HasSubstr("hidden_size"));
  // Values our own parser rejects come back naming the file too.
  j = base;
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(error_of([&] { hf::config_from_json(j, "c.json"); }), HasSubstr("c.json"));
}

TEST_F(HFConvert, UnexpressibleModelsRefusedOnExport) {
  ModelConfig c = tiny();
  c.fusion = Fusion::Concat;
  EXPECT_THAT(error_of([&] { hf::config_to_json(c); }), HasSubstr("concat"));
  ModelConfig samba = load_model_config(std::string(HYMBA_SOURCE_DIR) + "/configs/tiny/samba.yaml");
  EXPECT_THAT(error_of([&] { hf::name_map(samba); }), HasSubstr("hybrid"));
}

TEST_F(HFConvert, CorruptWeightsRefused) {
  ModelConfig c = tiny();
  Model m(c, 1);
  hf::save(dir_.string(), c, m.state_dict());
  const fs::path st = dir_ / "model.safetensors";
  const auto size = fs::file_size(st);
  fs::resize_file(st, size - 4);
  std::string msg = error_of([&] { hf::load(dir_.string()); });
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
  // A wrong shape in an otherwise valid file names the tensor and both shapes.
  auto state = m.state_dict();
  std::vector<std::pair<std::string, Tensor>> weights;
  for (const auto& [n, t] : hf::export_weights(c, {state.begin(), state.end()})) weights.emplace_back(n, t);
  for (auto& [n, t] : weights)
    if (n == "model.final_layernorm.weight") t = zeros({17});
  safetensors::save(st.string(), weights);
  msg = error_of([&] { hf::load(dir_.string()); });
  EXPECT_THAT(msg, HasSubstr("model.final_layernorm.weight"));
  EXPECT_THAT(msg, HasSubstr("[17]"));
  // An extra tensor with no counterpart is refused, not silently dropped.
  for (auto& [n, t] : weights)
    if (n == "model.final_layernorm.weight") t = zeros({16});
  weights.emplace_back("model.layers.0.mamba.extra", zeros({2}));
  safetensors::save(st.string(), weights);
  EXPECT_THAT(error_of([&] { hf::load(dir_.string()); }), HasSubstr("model.layers.0.mamba.extra"));
}


// The CLI end to end: HF dir -> checkpoint -> HF dir gives the same files' tensors. Skipped
// when the hymba binary has not been built next to this test.
TEST_F(HFConvert, CliRoundTripThroughCheckpoint) {
  const fs::path bin = fs::path(HYMBA_BINARY_DIR) / "bin" / "hymba";
  if (!fs::exists(bin)) GTEST_SKIP() << bin << " not built";
  ModelConfig c = tiny();
  Model m(c, 21);
  hf::save((dir_ / "hf").string(), c, m.state_dict());
  const std::string ck = (dir_ / "ck.h5").string(), out = (dir_ / "hf2").string();
  const std::string q = "'" + bin.string() + "' convert ";
  ASSERT_EQ(std::system((q + "--from-hf '" + (dir_ / "hf").string() + "' --out '" + ck + "' >/dev/null").c_str()), 0);
  ASSERT_EQ(std::system((q + "--to-hf '" + ck + "' --out '" + out + "' >/dev/null").c_str()), 0);
  // Refuses to overwrite without --force (exit 1, a user error).
  EXPECT_NE(std::system((q + "--to-hf '" + ck + "' --out '" + out + "' 2>/dev/null").c_str()), 0);
  std::unique_ptr<Model> from_ck = train::load_model_from_checkpoint(ck);
  auto a = safetensors::load((dir_ / "hf").string()), b = safetensors::load(out);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [n, t] : a) {
    ASSERT_TRUE(b.count(n)) << n;
    EXPECT_EQ(t.to_vector<float>(), b[n].to_vector<float>()) << n;
  }
  Tensor ids = from_vector<int64_t>({3, 1, 4, 1, 5, 9}, {1, 6});
  NoGradGuard ng;
  EXPECT_EQ(m.forward(ids).to_vector<float>(), from_ck->forward(ids).to_vector<float>());
  EXPECT_EQ(hf::load_config(out).num_meta_tokens, 2);
}


// A config.json written as the published one is (keys of HYMBA_SPEC section 1 and 4, plus
// keys we ignore), not produced by our exporter.
TEST_F(HFConvert, PublishedStyleConfigImports) {
  json j = json::parse(R"({
    "architectures": ["HymbaForCausalLM"], "model_type": "hymba", "vocab_size": 32001,
    "hidden_size": 1600, "num_hidden_layers": 32, "num_attention_heads": 25, "num_key_value_heads": 5,
    "attn_hidden_size": -1, "kq_head_dim": -1, "v_head_dim": 128, "intermediate_size": 5504,
    "mamba_expand": 2, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_dt_rank": 100,
    "mamba_conv_bias": true, "mamba_proj_bias": false, "mamba_inner_layernorms": true,
    "num_memory_tokens": 128, "memory_tokens_interspersed_every": 0, "sliding_window": 1024,
    "global_attn_idx": [0, 15, 31], "kv_reuse_every_i_layer": -1, "kv_weight_reuse": false,
    "kv_reuse_group": [[1,2],[3,4],[5,6],[7,8],[9,10],[11,12],[13,14],[16,17,18],[19,20],[21,22],[23,24],[25,26],[27,28],[29,30]],
    "kq_norm": "none", "num_experts": 1, "num_experts_per_tok": 1, "num_mamba": 1, "hidden_act": "silu",
    "rope": true, "rope_theta": 10000.0, "rope_type": "ntk", "max_position_embeddings": 8192,
    "orig_max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "tie_word_embeddings": true,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "bfloat16",
    "layer_type": ["h","h","h","h","h","h","h","h","h","h","h","h","h","h","h","h",
                   "h","h","h","h","h","h","h","h","h","h","h","h","h","h","h","h"]})");
  ModelConfig c = hf::config_from_json(j, "config.json");
  ModelConfig ours = load_model_config(std::string(HYMBA_SOURCE_DIR) + "/configs/hymba-1.5b.yaml");
  EXPECT_EQ(count_parameters(c), 1522797824);
  EXPECT_EQ(parameter_shapes(c), parameter_shapes(ours));
  for (size_t i = 0; i < c.layers.size(); ++i) {
    EXPECT_EQ(c.layers[i].window, ours.layers[i].window) << i;
    EXPECT_EQ(c.layers[i].kv_producer, ours.layers[i].kv_producer) << i;
  }
  EXPECT_NEAR(c.rope_base(), 1e4 * std::pow(2.0 * 8192 / 2048 - 1, 64.0 / 62), 1e-6);
  EXPECT_EQ(c.norm_eps, 1e-6);
}

}  // namespace
}  // namespace hymba
