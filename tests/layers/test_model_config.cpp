// Model configs: parameter counts of every shipped config (Hymba-1.5B exactly, computed from
// shapes without allocating), the shape arithmetic checked against real models, the resolved
// dump round trip, and validation errors naming file, key and line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "layers/model.h"
#include "layers/model_config.h"
#include "tests/tiny_models.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

std::string cfg_path(const std::string& rel) { return std::string(HYMBA_SOURCE_DIR) + "/configs/" + rel; }

// The message of the UserError `f` throws ("" if none).
template <typename F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

const char* const kSmallHybrid = tiny_models::kHybrid4;

}  // namespace

TEST(ModelConfig, Hymba15BHasThePublishedParameterCount) {
  ModelConfig c = load_model_config(cfg_path("hymba-1.5b.yaml"));
  EXPECT_EQ(count_parameters(c), 1522797824);
  // The structure the count depends on (HYMBA_SPEC section 1).
  int producers = 0, consumers = 0, full = 0;
  for (const auto& L : c.layers) {
    EXPECT_EQ(L.kind, BlockKind::Hybrid);
    EXPECT_TRUE(L.mlp);
    consumers += L.is_kv_consumer();
    producers += !L.is_kv_consumer();
    full += L.window < 0;
  }
  EXPECT_EQ(producers, 17);
  EXPECT_EQ(consumers, 15);
  EXPECT_EQ(full, 3);
  EXPECT_EQ(c.layers[18].kv_producer, 16);
  EXPECT_EQ(c.layers[1].window, 1024);
  EXPECT_NEAR(c.rope_base(), 1e4 * std::pow(2.0 * 8192 / 2048 - 1, 64.0 / 62), 1e-6);
  std::map<std::string, Shape> shapes;
  for (auto& [n, s] : parameter_shapes(c)) shapes[n] = s;
  EXPECT_EQ(shapes.at("layers.0.mixer.in_proj.weight"), (Shape{8960, 1600}));
  EXPECT_EQ(shapes.at("layers.2.mixer.in_proj.weight"), (Shape{8000, 1600}));
  EXPECT_EQ(shapes.at("layers.5.mixer.x_proj.weight"), (Shape{132, 3200}));
  EXPECT_EQ(shapes.at("layers.5.mixer.out_proj.weight"), (Shape{1600, 3200}));
  EXPECT_EQ(shapes.count("lm_head.weight"), 0u);
}

TEST(ModelConfig, PaperSizedConfigsCount) {
  // Hymba-125M / 350M: Table 11's shapes; counts pinned to catch silent config edits, and
  // within the names' sizes (embeddings of the 32001 vocabulary included).
  ModelConfig c125 = load_model_config(cfg_path("hymba-125m.yaml"));
  ModelConfig c350 = load_model_config(cfg_path("hymba-350m.yaml"));
  EXPECT_EQ(c125.num_layers, 24);
  EXPECT_EQ(c350.num_layers, 32);
  int64_t n125 = count_parameters(c125), n350 = count_parameters(c350);
  EXPECT_GT(n125, 100'000'000);
  EXPECT_LT(n125, 175'000'000);
  EXPECT_GT(n350, 280'000'000);
  EXPECT_LT(n350, 420'000'000);
  std::cout << "hymba-125m: " << n125 << " parameters, hymba-350m: " << n350 << "\n";
}

TEST(ModelConfig, TinyConfigsAreTwoToTenMillionAndWithinTenPercent) {
  std::map<std::string, int64_t> n;
  for (const char* name : {"hymba", "llama", "mamba", "mamba-ffn", "samba"}) {
    ModelConfig c = load_model_config(cfg_path(std::string("tiny/") + name + ".yaml"));
    EXPECT_EQ(c.vocab_size, 4096) << name;
    n[name] = count_parameters(c);
    std::cout << "tiny/" << name << ": " << n[name] << " parameters\n";
    EXPECT_GE(n[name], 2'000'000) << name;
    EXPECT_LE(n[name], 10'000'000) << name;
  }
  int64_t lo = INT64_MAX, hi = 0;
  for (auto& [_, v] : n) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_LE(double(hi) / double(lo), 1.10) << "smallest " << lo << " largest " << hi;
  // The sequential stack alternates kinds; Llama has no SSM, Mamba no attention.
  ModelConfig samba = load_model_config(cfg_path("tiny/samba.yaml"));
  EXPECT_EQ(samba.layers[0].kind, BlockKind::SSM);
  EXPECT_EQ(samba.layers[1].kind, BlockKind::Attention);
  EXPECT_EQ(samba.layers[1].window, 64);
}

// The shape arithmetic must name and size exactly what a real model registers, in order, for
// every block kind, fusion and sharing option.
TEST(ModelConfig, ParameterShapesMatchAnInstantiatedModel) {
  std::vector<std::string> variants = {
      kSmallHybrid,
      std::string(kSmallHybrid) + "fusion: concat\ntie_embeddings: false\n",
      std::string(kSmallHybrid) + "layers:\n  - {index: [0, 2], block: attention}\n  - {index: 3, block: ssm, mlp: false}\n",
  };
  for (const char* tiny : {"tiny/samba.yaml"}) {  // ssm + attention blocks with MLPs, no inner norms
    ModelConfig c = load_model_config(cfg_path(tiny));
    c.vocab_size = 17;  // keep the allocation small; the layer arithmetic is unchanged
    variants.push_back(dump_model_config(c));
  }
  for (const std::string& y : variants) {
    ModelConfig c = parse_model_config_string(y);
    Model m(c, 3);
    auto expect = parameter_shapes(c);
    auto got = m.named_parameters();
    ASSERT_EQ(got.size(), expect.size()) << y;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, expect[i].first) << y;
      EXPECT_EQ(got[i].second.shape(), expect[i].second) << got[i].first;
    }
    EXPECT_EQ(m.num_parameters(), count_parameters(c));
  }
}

TEST(ModelConfig, ResolvedDumpRoundTrips) {
  for (const char* f : {"hymba-1.5b.yaml", "tiny/samba.yaml", "tiny/mamba.yaml"}) {
    ModelConfig a = load_model_config(cfg_path(f));
    std::string d = dump_model_config(a);
    ModelConfig b = parse_model_config_string(d, "dump");
    EXPECT_EQ(dump_model_config(b), d) << f;
    EXPECT_EQ(count_parameters(b), count_parameters(a)) << f;
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t i = 0; i < a.layers.size(); ++i) {
      EXPECT_EQ(a.layers[i].kind, b.layers[i].kind);
      EXPECT_EQ(a.layers[i].window, b.layers[i].window);
      EXPECT_EQ(a.layers[i].kv_producer, b.layers[i].kv_producer);
      EXPECT_EQ(a.layers[i].mlp, b.layers[i].mlp);
    }
  }
}

TEST(ModelConfig, OverridesApplyInOrder) {
  ModelConfig c = parse_model_config_string(std::string(kSmallHybrid) +
                                            "layers:\n  - {index: all, window: 2}\n  - {index: even, mlp: false}\n");
  EXPECT_EQ(c.layers[0].window, 2);  // the override wins over full_attention_layers
  EXPECT_FALSE(c.layers[0].mlp);
  EXPECT_TRUE(c.layers[1].mlp);
  EXPECT_EQ(c.layers[2].kv_producer, 1);
  EXPECT_TRUE(c.layers[1].kv_shared);
}

TEST(ModelConfig, ErrorsNameFileKeyAndLine) {
  // Unknown key, on line 3 of the string.
  std::string msg = user_error([] { parse_model_config_string("vocab_size: 11\nhidden_size: 8\nnum_layerz: 2\n", "bad.yaml"); });
  EXPECT_THAT(msg, HasSubstr("bad.yaml:3"));
  EXPECT_THAT(msg, HasSubstr("num_layerz"));
  EXPECT_THAT(msg, HasSubstr("unknown key"));
  // Unknown nested key.
  msg = user_error([] { parse_model_config_string(std::string(kSmallHybrid) + "rope: {theta: 1, kind: ntk}\n", "r.yaml"); });
  EXPECT_THAT(msg, HasSubstr("rope.kind"));
  EXPECT_THAT(msg, HasSubstr("r.yaml:16"));
  // A key given twice.
  msg = user_error([] { parse_model_config_string(std::string(kSmallHybrid) + "hidden_size: 16\n", "d.yaml"); });
  EXPECT_THAT(msg, HasSubstr("d.yaml:16: key 'hidden_size': given twice"));
  // Wrong type.
  msg = user_error([] { parse_model_config_string("vocab_size: eleven\nhidden_size: 8\nnum_layers: 2\nblock: ssm\n", "t.yaml"); });
  EXPECT_THAT(msg, HasSubstr("t.yaml:1"));
  EXPECT_THAT(msg, HasSubstr("vocab_size"));
  EXPECT_THAT(msg, HasSubstr("expected an integer"));
  // Heads not dividing hidden (no head_dim given).
  msg = user_error([] { parse_model_config_string("vocab_size: 11\nhidden_size: 10\nnum_layers: 2\nblock: attention\nnum_heads: 3\n", "h.yaml"); });
  EXPECT_THAT(msg, HasSubstr("h.yaml:5"));
  EXPECT_THAT(msg, HasSubstr("num_heads (3) must divide hidden_size (10)"));
  // kv heads not dividing heads.
  msg = user_error([] { parse_model_config_string("vocab_size: 11\nhidden_size: 12\nnum_layers: 2\nblock: attention\nnum_heads: 6\nnum_kv_heads: 4\n", "k.yaml"); });
  EXPECT_THAT(msg, HasSubstr("k.yaml:6"));
  EXPECT_THAT(msg, HasSubstr("num_kv_heads"));
  // Group member out of range; consumer before producer; ssm layer in a group.
  auto with_groups = [](const std::string& g) { return std::string(kSmallHybrid).replace(std::string(kSmallHybrid).find("kv_reuse_groups: [[1, 2]]"), 25, g); };
  msg = user_error([&] { parse_model_config_string(with_groups("kv_reuse_groups: [[1, 7]]"), "g.yaml"); });
  EXPECT_THAT(msg, HasSubstr("g.yaml:15"));
  EXPECT_THAT(msg, HasSubstr("kv_reuse_groups[0]"));
  EXPECT_THAT(msg, HasSubstr("layer 7 is out of range"));
  msg = user_error([&] { parse_model_config_string(with_groups("kv_reuse_groups: [[2, 1]]"), "g.yaml"); });
  EXPECT_THAT(msg, HasSubstr("consumer layer 1 comes before"));
  msg = user_error([&] { parse_model_config_string(with_groups("kv_reuse_groups: [[1, 2], [2, 3]]"), "g.yaml"); });
  EXPECT_THAT(msg, HasSubstr("more than one group"));
  msg = user_error([&] {
    parse_model_config_string(with_groups("kv_reuse_groups: [[1, 2]]\nlayers:\n  - {index: 2, block: ssm}"), "g.yaml");
  });
  EXPECT_THAT(msg, HasSubstr("ssm block"));
  // Mean fusion with mismatched widths.
  msg = user_error([] {
    std::string y = kSmallHybrid;
    y.replace(y.find("v_head_dim: 8"), 13, "v_head_dim: 4");
    parse_model_config_string(y, "f.yaml");
  });
  EXPECT_THAT(msg, HasSubstr("mean fusion"));
  // Bad enum, bad layer index, missing key, missing file.
  msg = user_error([] { parse_model_config_string(std::string(kSmallHybrid) + "fusion: sum\n", "e.yaml"); });
  EXPECT_THAT(msg, HasSubstr("expected mean or concat, got 'sum'"));
  msg = user_error([] { parse_model_config_string(std::string(kSmallHybrid) + "layers:\n  - {index: [9], block: ssm}\n", "i.yaml"); });
  EXPECT_THAT(msg, HasSubstr("layers[0].index"));
  EXPECT_THAT(msg, HasSubstr("i.yaml:17"));
  msg = user_error([] { parse_model_config_string("hidden_size: 8\nnum_layers: 2\n", "m.yaml"); });
  EXPECT_THAT(msg, HasSubstr("vocab_size"));
  EXPECT_THAT(msg, HasSubstr("missing"));
  msg = user_error([] { load_model_config("/nonexistent/x.yaml"); });
  EXPECT_THAT(msg, HasSubstr("/nonexistent/x.yaml"));
}
