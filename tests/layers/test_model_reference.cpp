// The whole Model's forward against an independent float64 transcription of HYMBA_SPEC
// sections 2-3, written here in plain loops from the spec text (not from our layers): meta
// tokens prepended and dropped, RMSNorm, one fused in_proj split q|k|v|x|z (consumer q|x|z),
// rotate-half RoPE with the NTK-scaled base, GQA attention with a materialized mask
// (full / sliding window with i - j <= W / meta keys always visible), KV sharing in a group
// of three, causal depthwise conv, normalized dt/B/C, sequential selective scan, mean fusion,
// SwiGLU MLP, tied head. Parameters are read by name from state_dict, so a renamed or
// transposed weight fails here too. Tolerance: max |ours - ref| <= 1e-9 * max |ref|
// (both in float64; only summation order differs).
// Plus a float64 gradcheck of one full hybrid block (mixer + MLP) with respect to every one
// of its parameters (test_layers checks a selection across a two-layer model).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tests/layers/reference_f64.h"
#include "layers/model.h"

using namespace hymba;
using Vec = std::vector<double>;

namespace {

using testref::cols;
using testref::linear;
using testref::rms;
using testref::silu;
using testref::softplus;

// 6 hybrid layers: full attention at 0 and 5, sliding window 2 elsewhere (T = 3 + 7 = 10 > 3
// visible keys), layers 1 -> 2, 3 share k, v; layer 4 is a standalone SWA layer. GQA 2:1,
// v_head_dim = 2 * head_dim so 4 * 8 = 2 * 16 suits mean fusion.
const char* kCfg = R"(
vocab_size: 13
hidden_size: 16
num_layers: 6
block: hybrid
num_heads: 4
num_kv_heads: 2
head_dim: 4
v_head_dim: 8
ssm: {d_state: 3, d_conv: 3, expand: 2, dt_rank: 2, inner_layernorms: true}
mlp: {intermediate_size: 12}
num_meta_tokens: 3
sliding_window: 2
full_attention_layers: [0, 5]
kv_reuse_groups: [[1, 2, 3]]
rope: {theta: 50, type: ntk, max_position: 64, orig_max_position: 16}
norm_eps: 1.0e-5
tie_embeddings: true
fusion: mean
)";

// Every parameter random (norm weights near 1, A_log both signs, dt bias non-zero) so the
// comparison cannot pass on an init symmetry.
void randomize(Module& m, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  for (auto& [name, p] : m.named_parameters()) {
    bool is_norm = name.find("layernorm") != std::string::npos;
    Tensor r = rand(p.shape(), DType::F64, &g, is_norm ? 0.5 : -0.5, is_norm ? 1.5 : 0.5);
    if (name.find("A_log") != std::string::npos) r = rand(p.shape(), DType::F64, &g, -1.0, 1.0);
    if (name == "memory_tokens" || name == "embed_tokens.weight") r = randn(p.shape(), DType::F64, &g);
    p.detach().copy_(r);
  }
}

// ---- float64 reference; activations are (rows, width) row-major, rows = b * T + t ----
struct Ref {
  std::map<std::string, Vec> p;
  const Vec& w(const std::string& name) const {
    auto it = p.find(name);
    if (it == p.end()) throw std::runtime_error("reference: no parameter " + name);
    return it->second;
  }
};


// Rotate-half RoPE in place on (rows, heads * dh), position = t of row b * T + t.
void rope(Vec& x, int64_t B, int64_t T, int64_t heads, int64_t dh, double base) {
  const int64_t half = dh / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        double* v = x.data() + ((b * T + t) * heads + h) * dh;
        for (int64_t j = 0; j < half; ++j) {
          double ang = double(t) * std::pow(base, -2.0 * double(j) / double(dh));
          double c = std::cos(ang), s = std::sin(ang), a = v[j], bb = v[j + half];
          v[j] = a * c - bb * s;
          v[j + half] = bb * c + a * s;
        }
      }
}

Vec reference_logits(const ModelConfig& cfg, const Ref& R, const std::vector<int64_t>& ids, int64_t B, int64_t L) {
  const int64_t H = cfg.hidden_size, M = cfg.num_meta_tokens, T = M + L, rows = B * T, V = cfg.vocab_size;
  const int64_t nh = cfg.num_heads, nkv = cfg.num_kv_heads, dk = cfg.head_dim, dv = cfg.v_head_dim;
  const int64_t I = cfg.ssm.expand * H, N = cfg.ssm.d_state, Wc = cfg.ssm.d_conv, Rk = cfg.ssm.dt_rank;
  const double eps = cfg.norm_eps;
  // NTK base from the spec formula, not from the config helper.
  const double base = cfg.rope.theta * std::pow(2.0 * double(cfg.rope.max_position) / double(cfg.rope.orig_max_position) - 1.0,
                                                double(dk) / double(dk - 2));
  Vec X(size_t(rows * H));
  const Vec &meta = R.w("memory_tokens"), &emb = R.w("embed_tokens.weight");
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c)
        X[size_t((b * T + t) * H + c)] =
            t < M ? meta[size_t(t * H + c)] : emb[size_t(ids[size_t(b * L + t - M)] * H + c)];

  // Which layers are full attention and who produces whose k, v: from the spec's lists.
  auto is_full = [&](int64_t li) {
    return std::find(cfg.full_attention_layers.begin(), cfg.full_attention_layers.end(), li) !=
           cfg.full_attention_layers.end();
  };
  auto producer_of = [&](int64_t li) -> int64_t {
    for (const auto& g : cfg.kv_reuse_groups)
      for (size_t k = 1; k < g.size(); ++k)
        if (g[k] == li) return g[0];
    return -1;
  };
  std::map<int64_t, std::pair<Vec, Vec>> kv;  // layer -> (k after RoPE, v)

  for (int64_t li = 0; li < cfg.num_layers; ++li) {
    const std::string pre = "layers." + std::to_string(li) + ".";
    const std::string mx = pre + "mixer.";
    Vec u = rms(X, rows, H, R.w(pre + "input_layernorm.weight"), eps);
    const int64_t prod = producer_of(li);
    const int64_t Pw = nh * dk + (prod < 0 ? nkv * (dk + dv) : 0) + 2 * I;
    Vec P = linear(u, rows, H, R.w(mx + "in_proj.weight"), Pw);
    int64_t c = 0;
    Vec q = cols(P, rows, Pw, c, nh * dk);
    c += nh * dk;
    rope(q, B, T, nh, dk, base);
    if (prod < 0) {
      Vec k = cols(P, rows, Pw, c, nkv * dk);
      c += nkv * dk;
      Vec v = cols(P, rows, Pw, c, nkv * dv);
      c += nkv * dv;
      rope(k, B, T, nkv, dk, base);
      kv[li] = {k, v};
    }
    const Vec& K = kv.at(prod < 0 ? li : prod).first;
    const Vec& Vv = kv.at(prod < 0 ? li : prod).second;
    Vec x = cols(P, rows, Pw, c, I);
    Vec z = cols(P, rows, Pw, c + I, I);

    // Attention with a materialized (T, T) mask.
    const bool full = is_full(li);
    const int64_t W = cfg.sliding_window;
    Vec o(size_t(rows * nh * dv), 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t g = h / (nh / nkv);
        for (int64_t i = 0; i < T; ++i) {
          Vec s(size_t(T), -INFINITY);
          double mxs = -INFINITY;
          for (int64_t j = 0; j < T; ++j) {
            bool visible = j <= i && (full || i - j <= W || j < M);
            if (!visible) continue;
            double acc = 0;
            for (int64_t e = 0; e < dk; ++e)
              acc += q[size_t(((b * T + i) * nh + h) * dk + e)] * K[size_t(((b * T + j) * nkv + g) * dk + e)];
            s[size_t(j)] = acc / std::sqrt(double(dk));
            mxs = std::max(mxs, s[size_t(j)]);
          }
          double den = 0;
          for (int64_t j = 0; j < T; ++j) den += std::isinf(s[size_t(j)]) ? 0.0 : std::exp(s[size_t(j)] - mxs);
          for (int64_t j = 0; j < T; ++j) {
            if (std::isinf(s[size_t(j)])) continue;
            double pj = std::exp(s[size_t(j)] - mxs) / den;
            for (int64_t e = 0; e < dv; ++e)
              o[size_t((b * T + i) * nh * dv + h * dv + e)] += pj * Vv[size_t(((b * T + j) * nkv + g) * dv + e)];
          }
        }
      }

    // SSM: causal depthwise conv (zero left padding) + bias, silu.
    const Vec &cw = R.w(mx + "conv1d.weight"), &cb = R.w(mx + "conv1d.bias");
    Vec xc(size_t(rows * I));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < I; ++d) {
          double acc = cb[size_t(d)];
          for (int64_t k = 0; k < Wc; ++k) {
            int64_t tt = t - (Wc - 1) + k;
            if (tt >= 0) acc += cw[size_t(d * Wc + k)] * x[size_t((b * T + tt) * I + d)];
          }
          xc[size_t((b * T + t) * I + d)] = silu(acc);
        }
    const int64_t Xw = Rk + 2 * N;
    Vec xd = linear(xc, rows, I, R.w(mx + "x_proj.weight"), Xw);
    Vec dtr = rms(cols(xd, rows, Xw, 0, Rk), rows, Rk, R.w(mx + "dt_layernorm.weight"), eps);
    Vec Bm = rms(cols(xd, rows, Xw, Rk, N), rows, N, R.w(mx + "B_layernorm.weight"), eps);
    Vec Cm = rms(cols(xd, rows, Xw, Rk + N, N), rows, N, R.w(mx + "C_layernorm.weight"), eps);
    Vec dt = linear(dtr, rows, Rk, R.w(mx + "dt_proj.weight"), I);
    const Vec &bdt = R.w(mx + "dt_proj.bias"), &Alog = R.w(mx + "A_log"), &Dp = R.w(mx + "D");
    Vec y(size_t(rows * I));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < I; ++d) {
        Vec hs(size_t(N), 0.0);
        for (int64_t t = 0; t < T; ++t) {
          const size_t r = size_t(b * T + t);
          const double delta = softplus(dt[r * size_t(I) + size_t(d)] + bdt[size_t(d)]);
          const double uu = xc[r * size_t(I) + size_t(d)];
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            const double A = -std::exp(Alog[size_t(d * N + n)]);
            hs[size_t(n)] = std::exp(delta * A) * hs[size_t(n)] + delta * Bm[r * size_t(N) + size_t(n)] * uu;
            acc += Cm[r * size_t(N) + size_t(n)] * hs[size_t(n)];
          }
          acc += Dp[size_t(d)] * uu;
          y[r * size_t(I) + size_t(d)] = acc * silu(z[r * size_t(I) + size_t(d)]);
        }
      }

    // Mean fusion, out_proj, residual; then the SwiGLU MLP, residual.
    Vec a = rms(o, rows, nh * dv, R.w(mx + "pre_avg_layernorm1.weight"), eps);
    Vec s = rms(y, rows, I, R.w(mx + "pre_avg_layernorm2.weight"), eps);
    Vec f(a.size());
    for (size_t i = 0; i < f.size(); ++i) f[i] = (a[i] + s[i]) / 2;
    Vec mix = linear(f, rows, I, R.w(mx + "out_proj.weight"), H);
    for (size_t i = 0; i < X.size(); ++i) X[i] += mix[i];
    const int64_t F = cfg.intermediate_size;
    Vec m = rms(X, rows, H, R.w(pre + "pre_mlp_layernorm.weight"), eps);
    Vec gt = linear(m, rows, H, R.w(pre + "mlp.gate_proj.weight"), F);
    Vec up = linear(m, rows, H, R.w(pre + "mlp.up_proj.weight"), F);
    for (size_t i = 0; i < gt.size(); ++i) gt[i] = silu(gt[i]) * up[i];
    Vec dn = linear(gt, rows, F, R.w(pre + "mlp.down_proj.weight"), H);
    for (size_t i = 0; i < X.size(); ++i) X[i] += dn[i];
  }

  Vec Xf = rms(X, rows, H, R.w("final_layernorm.weight"), eps);
  Vec tok(size_t(B * L * H));  // meta rows dropped
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < H; ++c) tok[size_t((b * L + t) * H + c)] = Xf[size_t((b * T + M + t) * H + c)];
  return linear(tok, B * L, H, emb, V);  // tied head
}

}  // namespace

TEST(ModelReference, HymbaForwardMatchesFloat64SpecTranscription) {
  ModelConfig cfg = parse_model_config_string(kCfg, "kCfg");
  // The config is what the test claims: a group of three, SWA shorter than T, two full layers.
  ASSERT_EQ(cfg.layers.size(), 6u);
  EXPECT_EQ(cfg.layers[2].kv_producer, 1);
  EXPECT_EQ(cfg.layers[3].kv_producer, 1);
  EXPECT_TRUE(cfg.layers[1].kv_shared);
  EXPECT_EQ(cfg.layers[0].window, -1);
  EXPECT_EQ(cfg.layers[5].window, -1);
  EXPECT_EQ(cfg.layers[4].window, 2);

  Model m(cfg, 3);
  m.to(DType::F64);
  randomize(m, 21);
  Ref R;
  for (auto& [name, t] : m.state_dict()) R.p[name] = t.detach().to(DType::F64).contiguous().to_vector<double>();
  ASSERT_EQ(R.p.count("lm_head.weight"), 0u);  // tied: the head is the embedding

  const int64_t B = 2, L = 7;
  std::vector<int64_t> ids = {1, 5, 7, 12, 0, 3, 3, 9, 2, 11, 4, 6, 8, 10};
  Tensor logits;
  {
    NoGradGuard ng;
    logits = m.forward(from_vector<int64_t>(ids, {B, L}));
  }
  ASSERT_EQ(logits.shape(), (Shape{B, L, cfg.vocab_size}));
  ASSERT_EQ(logits.dtype(), DType::F64);
  Vec ours = logits.contiguous().to_vector<double>();
  Vec ref = reference_logits(cfg, R, ids, B, L);
  ASSERT_EQ(ours.size(), ref.size());
  double scale = 0, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(ref[i]));
    if (std::abs(ours[i] - ref[i]) > worst) worst = std::abs(ours[i] - ref[i]), at = i;
  }
  ASSERT_GT(scale, 1e-3);  // non-degenerate logits
  EXPECT_LE(worst, 1e-9 * scale) << "worst at " << at << ": " << ours[at] << " vs " << ref[at] << " (scale " << scale << ")";

  // The reference is sensitive to what it claims to check: dropping the window, or letting a
  // consumer use its own rows, changes the logits well beyond the tolerance.
  ModelConfig no_swa = cfg;
  no_swa.full_attention_layers = {0, 1, 2, 3, 4, 5};
  Vec ref_full = reference_logits(no_swa, R, ids, B, L);
  double diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, std::abs(ref_full[i] - ref[i]));
  EXPECT_GT(diff, 1e-4 * scale) << "window 2 must matter at T = 10";
}

// One hybrid block with MLP (standalone KV, sliding window shorter than T, meta tokens):
// float64 gradcheck of the loss w.r.t. every parameter of the block. Gradcheck defaults
// (atol 1e-6, rtol 1e-4, central differences with step 1e-6).
TEST(ModelReference, GradcheckFullHybridBlockAllParameters) {
  ModelConfig cfg = parse_model_config_string(R"(
vocab_size: 7
hidden_size: 4
num_layers: 1
block: hybrid
num_heads: 2
num_kv_heads: 1
head_dim: 2
v_head_dim: 4
ssm: {d_state: 2, d_conv: 3, expand: 2, dt_rank: 2, inner_layernorms: true}
mlp: {intermediate_size: 6}
num_meta_tokens: 2
sliding_window: 2
rope: {theta: 10, type: default}
norm_eps: 1.0e-5
)",
                                              "block");
  Model m(cfg, 5);
  m.to(DType::F64);
  randomize(m, 33);
  Tensor ids = from_vector<int64_t>({3, 1, 4, 1, 5, 2, 6, 5}, {2, 4});
  std::vector<Tensor> params;
  std::vector<std::string> names;
  for (auto& [name, p] : m.named_parameters())
    if (name.rfind("layers.0.", 0) == 0) params.push_back(p), names.push_back(name);
  // Every kind of block parameter is in the check.
  for (const char* n : {"input_layernorm.weight", "pre_mlp_layernorm.weight", "mixer.in_proj.weight",
                        "mixer.out_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.x_proj.weight",
                        "mixer.dt_proj.weight", "mixer.dt_proj.bias", "mixer.A_log", "mixer.D",
                        "mixer.dt_layernorm.weight", "mixer.B_layernorm.weight", "mixer.C_layernorm.weight",
                        "mixer.pre_avg_layernorm1.weight", "mixer.pre_avg_layernorm2.weight", "mlp.gate_proj.weight",
                        "mlp.up_proj.weight", "mlp.down_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), std::string("layers.0.") + n), names.end()) << n;
  auto r = autograd::gradcheck([&](const std::vector<Tensor>&) { return m.loss(ids); }, params);
  EXPECT_TRUE(r.ok) << r.message;
}
