// `hymba info` accounting: parameters by part, FLOPs per token, the fp16 inference cache,
// against numbers written out by hand from HYMBA_SPEC; and the parameter-equality
// constraints of the controlled-study configs under configs/study.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "layers/model_config.h"
#include "train/model_info.h"

namespace hymba {
namespace {

namespace fs = std::filesystem;

ModelConfig hymba_15b() { return load_model_config(std::string(HYMBA_SOURCE_DIR) + "/configs/hymba-1.5b.yaml"); }

TEST(ModelInfo, Hymba15BParametersByPart) {
  ModelConfig c = hymba_15b();
  ParameterBreakdown p = parameter_breakdown(c);
  EXPECT_EQ(p.total, count_parameters(c));
  EXPECT_EQ(p.total, 1522797824);  // HYMBA_SPEC section 1
  EXPECT_EQ(p.embedding + p.meta_tokens + p.attention + p.ssm + p.fusion_out + p.mlp + p.norms, p.total);
  EXPECT_EQ(p.embedding, 32001LL * 1600);
  EXPECT_EQ(p.meta_tokens, 128LL * 1600);
  EXPECT_EQ(p.mlp, 32LL * 3 * 5504 * 1600);
  // 17 KV producers/standalone (q, k, v rows = 1600 + 320 + 640), 15 consumers (q only).
  EXPECT_EQ(p.attention, (17LL * 2560 + 15LL * 1600) * 1600);
  EXPECT_EQ(p.fusion_out, 32LL * 1600 * 3200);
  // Norms: input + pre-MLP per layer, dt/B/C, the two fusion norms, the final norm.
  EXPECT_EQ(p.norms, 32LL * (2 * 1600 + 100 + 16 + 16 + 3200 + 3200) + 1600);
}

TEST(ModelInfo, Hymba15BMatmulParametersAndFlops) {
  ModelConfig c = hymba_15b();
  // Written out: in_proj, out_proj, x_proj, dt_proj, three MLP matrices per layer; the tied
  // head once.
  int64_t matmul = 32001LL * 1600;
  for (int i = 0; i < 32; ++i) {
    const bool consumer = c.layers[size_t(i)].is_kv_consumer();
    matmul += (consumer ? 8000LL : 8960LL) * 1600 + 1600LL * 3200 + 132LL * 3200 + 3200LL * 100 + 3LL * 5504 * 1600;
  }
  ModelInfo info = model_info(c, 8192);
  EXPECT_EQ(info.params.matmul, matmul);
  // Attention term by brute force over the mask of HYMBA_SPEC section 2.
  const int64_t S = 8192, M = 128, W = 1024;
  double keys_full = 0, keys_swa = 0;
  for (int64_t i = M; i < M + S; ++i) {
    keys_full += double(i + 1);
    for (int64_t j = 0; j <= i; ++j) keys_swa += (i - j <= W || j < M) ? 1.0 : 0.0;
  }
  const double attn = 6.0 * 25 * (64 + 128) * (3 * keys_full + 29 * keys_swa) / double(S);
  EXPECT_NEAR(info.attention_flops_per_token, attn, 1e-9 * attn);
  EXPECT_NEAR(info.train_flops_per_token, 6.0 * double(matmul) + attn, 1e-9 * attn);
}

TEST(ModelInfo, MeanVisibleKeysMatchesTheMask) {
  for (int64_t S : {1, 3, 17}) {
    for (int64_t M : {0, 2, 5}) {
      for (int64_t W : {-1, 0, 1, 4, 30}) {
        double sum = 0;
        for (int64_t i = M; i < M + S; ++i)
          for (int64_t j = 0; j <= i; ++j) sum += (W < 0 || i - j <= W || j < M) ? 1.0 : 0.0;
        EXPECT_DOUBLE_EQ(mean_visible_keys(S, M, W), sum / double(S)) << "S=" << S << " M=" << M << " W=" << W;
      }
    }
  }
}

TEST(ModelInfo, Hymba15BCacheAt8192) {
  ModelConfig c = hymba_15b();
  CacheBreakdown k = inference_cache(c, 8192);
  const int64_t per_key = 5 * (64 + 128) * 2;
  EXPECT_EQ(k.kv_layers_full, 3);
  EXPECT_EQ(k.kv_layers_swa, 14);
  EXPECT_EQ(k.ssm_layers, 32);
  EXPECT_EQ(k.kv_bytes_full, 3 * (128 + 8192) * per_key);
  EXPECT_EQ(k.kv_bytes_swa, 14 * (128 + 1024 + 1) * per_key);
  EXPECT_EQ(k.kv_bytes(), 78915840);  // ours; the paper reports 78.6 MB
  EXPECT_EQ(k.ssm_state_bytes, 32LL * 3200 * 16 * 2);
  EXPECT_EQ(k.conv_state_bytes, 32LL * 3200 * 3 * 2);
  EXPECT_EQ(k.total_bytes(), 82807040);
  std::printf("Hymba-1.5B cache at S=8192 (fp16): paper 78.6 MB; ours KV %.2f MB (%lld B), with SSM+conv states %.2f MB\n",
              double(k.kv_bytes()) / 1e6, static_cast<long long>(k.kv_bytes()), double(k.total_bytes()) / 1e6);
  // A short sequence caps the SWA layers at the sequence itself.
  CacheBreakdown s = inference_cache(c, 100);
  EXPECT_EQ(s.kv_bytes_swa, 14 * (128 + 100) * per_key);
}

TEST(ModelInfo, FormatMentionsEveryPart) {
  ModelConfig c = hymba_15b();
  std::string s = format_model_info(c, model_info(c, 8192));
  for (const char* w : {"embedding", "meta tokens", "attention", "ssm", "mlp", "norms", "1,522,797,824", "78,915,840"})
    EXPECT_THAT(s, testing::HasSubstr(w));
}

TEST(ModelInfo, BadSequenceLengthThrows) {
  EXPECT_THROW(inference_cache(hymba_15b(), 0), Error);
}

// Every config of the study loads, and within one folder (one table of the study) all rows
// have the same number of layers and parameters within 5% of each other.
TEST(StudyConfigs, EqualLayersAndParameters) {
  const fs::path root = fs::path(HYMBA_SOURCE_DIR) / "configs" / "study";
  ASSERT_TRUE(fs::is_directory(root));
  std::map<std::string, std::vector<std::pair<std::string, ModelConfig>>> groups;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file() && e.path().extension() == ".yaml")
      groups[e.path().parent_path().filename().string()].emplace_back(e.path().filename().string(),
                                                                      load_model_config(e.path().string()));
  ASSERT_EQ(groups.count("300m"), 1u);
  ASSERT_EQ(groups.count("1b"), 1u);
  ASSERT_EQ(groups.count("roadmap-300m"), 1u);
  for (const auto& [dir, rows] : groups) {
    int64_t lo = INT64_MAX, hi = 0;
    for (const auto& [name, c] : rows) {
      EXPECT_EQ(c.num_layers, rows[0].second.num_layers) << dir << "/" << name;
      lo = std::min(lo, count_parameters(c));
      hi = std::max(hi, count_parameters(c));
    }
    EXPECT_LE(double(hi - lo) / double(lo), 0.05) << dir << ": parameters range " << lo << " .. " << hi;
  }
  for (const char* scale : {"300m", "1b"}) {
    std::set<std::string> names;
    for (const auto& [n, c] : groups[scale]) names.insert(n);
    EXPECT_EQ(names, (std::set<std::string>{"hymba.yaml", "llama.yaml", "mamba.yaml", "mamba-ffn.yaml", "samba.yaml"}));
    for (const auto& [n, c] : groups[scale]) {
      const double p = double(count_parameters(c));
      if (std::string(scale) == "300m") EXPECT_NEAR(p, 300e6, 30e6) << n;
      else EXPECT_NEAR(p, 1e9, 100e6) << n;
    }
  }
  // The roadmap rows differ from their predecessor in exactly the feature they name.
  std::map<std::string, ModelConfig> r;
  for (const auto& [n, c] : groups["roadmap-300m"]) r[n] = c;
  ASSERT_EQ(r.size(), 7u);
  const ModelConfig &seq = r.at("1-sequential.yaml"), &par = r.at("2-parallel.yaml"), &swa = r.at("3-swa-3full.yaml"),
                    &kv = r.at("4-kv-sharing.yaml"), &meta = r.at("5-meta-tokens.yaml"),
                    &cat = r.at("ablation-concat.yaml"), &all = r.at("ablation-all-swa.yaml");
  for (const auto& L : seq.layers) EXPECT_NE(L.kind, BlockKind::Hybrid);
  for (const auto& L : par.layers) {
    EXPECT_EQ(L.kind, BlockKind::Hybrid);
    EXPECT_EQ(L.window, -1);
  }
  int full = 0;
  for (const auto& L : swa.layers) full += L.window < 0;
  EXPECT_EQ(full, 3);
  EXPECT_TRUE(swa.kv_reuse_groups.empty());
  EXPECT_FALSE(kv.kv_reuse_groups.empty());
  EXPECT_EQ(kv.num_meta_tokens, 0);
  EXPECT_EQ(meta.num_meta_tokens, 128);
  // Row 5 is the full design: the same model as the controlled study's 300m Hymba.
  const ModelConfig* hymba300 = nullptr;
  for (const auto& [n, c] : groups["300m"])
    if (n == "hymba.yaml") hymba300 = &c;
  ASSERT_NE(hymba300, nullptr);
  EXPECT_EQ(parameter_shapes(meta), parameter_shapes(*hymba300));
  EXPECT_EQ(cat.fusion, Fusion::Concat);
  for (const auto& L : all.layers) EXPECT_GE(L.window, 0);
}

}  // namespace
}  // namespace hymba
