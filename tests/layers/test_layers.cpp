// Layers and the Model: forward of each layer against plain float64 loops; the hybrid mixer
// (producer and consumer) and the Mamba mixer against a literal float64 transcription of
// HYMBA_SPEC section 2 (materialized mask, sequential conv and scan); KV sharing really reads
// the producer's k, v; the model is causal for every block kind; loss = next-token CE; and a
// float64 gradcheck of a tiny Hymba's loss. Tolerances: 1e-10 (f64 vs f64 loops),
// gradcheck defaults (atol 1e-6, rtol 1e-4).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tests/layers/reference_f64.h"
#include "layers/attention_mixer.h"
#include "layers/hybrid_mixer.h"
#include "layers/model.h"
#include "layers/ssm_mixer.h"
#include "tests/tiny_models.h"

using namespace hymba;
using ::testing::HasSubstr;
using Vec = std::vector<double>;

namespace {

using testref::cols;
using testref::silu;

Vec vals(const Tensor& t) { return t.detach().to(DType::F64).contiguous().to_vector<double>(); }

void expect_close(const Vec& a, const Vec& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::abs(a[i] - b[i]) > worst) worst = std::abs(a[i] - b[i]), at = i;
  EXPECT_LE(worst, tol) << what << ": worst at " << at << ": " << a[at] << " vs " << b[at];
}

// ---- plain float64 reference pieces; rows are (b, t) flattened, row-major ----
// Rotate-half RoPE of every head of a (B*T, heads*d) matrix, position t.
Vec ref_rope(const Vec& x, int64_t B, int64_t T, int64_t heads, int64_t d, double base) {
  Vec y = x;
  const int64_t half = d / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t j = 0; j < half; ++j) {
          double ang = double(t) * std::pow(base, -2.0 * double(j) / double(d));
          size_t i0 = size_t((b * T + t) * heads * d + h * d + j), i1 = i0 + size_t(half);
          y[i0] = x[i0] * std::cos(ang) - x[i1] * std::sin(ang);
          y[i1] = x[i1] * std::cos(ang) + x[i0] * std::sin(ang);
        }
  return y;
}
// Softmax attention with the materialized mask of HYMBA_SPEC section 2. q roped (B*T, Hq*dk),
// k roped (B*T, Hkv*dk), v (B*T, Hkv*dv) -> (B*T, Hq*dv), head-major.
Vec ref_attention(const Vec& q, const Vec& k, const Vec& v, int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                  int64_t dk, int64_t dv, int64_t window, int64_t M) {
  Vec o(size_t(B * T * Hq * dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      int64_t g = h / (Hq / Hkv);
      for (int64_t i = 0; i < T; ++i) {
        Vec s(size_t(T), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (!(window < 0 || i - j <= window || j < M)) continue;
          double d = 0;
          for (int64_t e = 0; e < dk; ++e)
            d += q[size_t((b * T + i) * Hq * dk + h * dk + e)] * k[size_t((b * T + j) * Hkv * dk + g * dk + e)];
          s[size_t(j)] = d / std::sqrt(double(dk));
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += std::isinf(s[size_t(j)]) ? 0 : std::exp(s[size_t(j)] - mx);
        for (int64_t j = 0; j <= i; ++j) {
          if (std::isinf(s[size_t(j)])) continue;
          double p = std::exp(s[size_t(j)] - mx) / z;
          for (int64_t e = 0; e < dv; ++e)
            o[size_t((b * T + i) * Hq * dv + h * dv + e)] += p * v[size_t((b * T + j) * Hkv * dv + g * dv + e)];
        }
      }
    }
  return o;
}
// The SSM branch of HYMBA_SPEC section 2 with a sequential conv and scan. x, z (B*T, I).
Vec ref_ssm(const SSMBranch& p, const Vec& x, const Vec& z, int64_t B, int64_t T, double eps) {
  const int64_t I = p.inner, N = p.d_state, R = p.dt_rank, W = p.conv1d->width;
  Vec cw = vals(p.conv1d->weight), cb = p.conv1d->bias.defined() ? vals(p.conv1d->bias) : Vec(size_t(I), 0.0);
  Vec xc(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < I; ++c) {
        double s = cb[size_t(c)];
        for (int64_t kk = 0; kk < W; ++kk) {
          int64_t tt = t - (W - 1) + kk;
          if (tt >= 0) s += cw[size_t(c * W + kk)] * x[size_t((b * T + tt) * I + c)];
        }
        xc[size_t((b * T + t) * I + c)] = silu(s);
      }
  const int64_t rows = B * T;
  Vec proj = testref::linear(xc, rows, I, vals(p.x_proj->weight), R + 2 * N);
  Vec dtr = cols(proj, rows, R + 2 * N, 0, R), Bm = cols(proj, rows, R + 2 * N, R, N),
      Cm = cols(proj, rows, R + 2 * N, R + N, N);
  if (p.dt_layernorm) {
    dtr = testref::rms(dtr, rows, R, vals(p.dt_layernorm->weight), eps);
    Bm = testref::rms(Bm, rows, N, vals(p.B_layernorm->weight), eps);
    Cm = testref::rms(Cm, rows, N, vals(p.C_layernorm->weight), eps);
  }
  Vec dt = testref::linear(dtr, rows, R, vals(p.dt_proj->weight), I);
  Vec dtb = vals(p.dt_proj->bias), Alog = vals(p.A_log), Dv = vals(p.D);
  Vec y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < I; ++d) {
      Vec h(size_t(N), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        size_t r = size_t(b * T + t);
        double v = dt[r * size_t(I) + size_t(d)] + dtb[size_t(d)];
        double delta = v > 20 ? v : std::log1p(std::exp(v));
        double u = xc[r * size_t(I) + size_t(d)], acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          double A = -std::exp(Alog[size_t(d * N + n)]);
          h[size_t(n)] = std::exp(delta * A) * h[size_t(n)] + delta * Bm[r * size_t(N) + size_t(n)] * u;
          acc += Cm[r * size_t(N) + size_t(n)] * h[size_t(n)];
        }
        acc += Dv[size_t(d)] * u;
        y[r * size_t(I) + size_t(d)] = acc * silu(z[r * size_t(I) + size_t(d)]);
      }
    }
  return y;
}

// Hymba-like and small: 4 hybrid layers, GQA 2:1, dv = 2 dk, window 3 < T, 2 meta tokens,
// full attention in layers 0 and 3, layers 1 -> 2 share k, v.
const std::string kTinyYaml = std::string(tiny_models::kHybrid4) +
                              "rope: {theta: 100, type: ntk, max_position: 64, orig_max_position: 16}\n"
                              "norm_eps: 1.0e-5\n";
const char* kTiny = kTinyYaml.c_str();

// Randomizes every parameter (norm weights near 1) so no test passes on init symmetry, e.g.
// dt_proj's zero bias or unit norm weights.
void randomize(Module& m, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  for (auto& [name, p] : m.named_parameters()) {
    bool is_norm = name.find("layernorm") != std::string::npos;
    Tensor r = rand(p.shape(), DType::F64, &g, is_norm ? 0.5 : -0.5, is_norm ? 1.5 : 0.5);
    if (name.find("A_log") != std::string::npos) r = rand(p.shape(), DType::F64, &g, -1.0, 1.0);
    p.detach().copy_(r);
  }
}

Tensor ids_tensor(const std::vector<int64_t>& v, int64_t B, int64_t L) { return from_vector<int64_t>(v, {B, L}); }

}  // namespace

TEST(Layers, LinearRMSNormMLPEmbeddingMatchLoops) {
  Generator g(5);
  Linear lin(5, 3, true, &g);
  lin.to(DType::F64);
  { NoGradGuard ng; lin.bias.detach().copy_(rand({3}, DType::F64, &g)); }
  Tensor x = rand({2, 4, 5}, DType::F64, &g, -1, 1);
  Vec y = testref::linear(vals(x), 8, 5, vals(lin.weight), 3), b = vals(lin.bias);
  for (size_t i = 0; i < y.size(); ++i) y[i] += b[i % 3];
  expect_close(vals(lin.forward(x)), y, 1e-12, "Linear");
  // Transposed (non-contiguous) input.
  Tensor xt = rand({5, 8}, DType::F64, &g).t();
  Vec yt = testref::linear(vals(xt), 8, 5, vals(lin.weight), 3);
  for (size_t i = 0; i < yt.size(); ++i) yt[i] += b[i % 3];
  expect_close(vals(lin.forward(xt)), yt, 1e-12, "Linear (transposed input)");

  RMSNorm norm(5, 1e-5);
  norm.to(DType::F64);
  { NoGradGuard ng; norm.weight.detach().copy_(rand({5}, DType::F64, &g, 0.5, 1.5)); }
  expect_close(vals(norm.forward(x)), testref::rms(vals(x), 8, 5, vals(norm.weight), 1e-5), 1e-12, "RMSNorm");

  SwiGLUMLP mlp(5, 7, &g);
  mlp.to(DType::F64);
  Vec gate = testref::linear(vals(x), 8, 5, vals(mlp.gate_proj->weight), 7),
      up = testref::linear(vals(x), 8, 5, vals(mlp.up_proj->weight), 7);
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  expect_close(vals(mlp.forward(x)), testref::linear(gate, 8, 7, vals(mlp.down_proj->weight), 5), 1e-12, "SwiGLUMLP");

  Embedding emb(6, 3, &g);
  Tensor ids = from_vector<int32_t>({5, 0, 2, 2}, {2, 2});
  Vec table = vals(emb.weight), got = vals(emb.forward(ids));
  std::vector<int> idv = {5, 0, 2, 2};
  for (size_t r = 0; r < 4; ++r)
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(got[r * 3 + c], table[size_t(idv[r]) * 3 + c]);
}

TEST(Layers, WrongWidthsThrowNamingLayerAndShapes) {
  Generator g(1);
  Linear lin(5, 3, false, &g);
  SwiGLUMLP mlp(5, 7, &g);
  RMSNorm norm(5);
  for (auto f : std::vector<std::function<void()>>{[&] { lin.forward(zeros({2, 4})); },
                                                   [&] { mlp.forward(zeros({2, 4})); },
                                                   [&] { norm.forward(zeros({2, 4})); }}) {
    try {
      f();
      ADD_FAILURE() << "no throw";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("expected input (..., 5), got [2, 4]"));
    }
  }
  Model m(parse_model_config_string(kTiny), 1);
  try {
    m.forward(zeros({2, 3}));
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Model: expected ids (B, L) of i32 or i64, got f32[2, 3]"));
  }
  try {
    m.loss(zeros({2, 3}, DType::I64), zeros({2, 4}, DType::I64));
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("targets [2, 4] must match ids [2, 3]"));
  }
  KVStore store(4);
  auto mixer = m.layers->at<DecoderLayer>(0)->mixer;
  try {
    mixer->forward(zeros({1, 5, 7}, DType::F32), store);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("HybridMixer (layer 0): expected (B, T, 8), got [1, 5, 7]"));
  }
}

// The hybrid mixer of a producer and of its consumer, and the Mamba mixer, against the
// literal float64 transcription of HYMBA_SPEC section 2.
TEST(Layers, HybridMixerMatchesSpecReference) {
  ModelConfig cfg = parse_model_config_string(kTiny);
  for (Fusion fusion : {Fusion::Mean, Fusion::Concat}) {
    cfg.fusion = fusion;
    Model m(cfg, 2);
    m.to(DType::F64);
    randomize(m, 3);
    auto prod = std::dynamic_pointer_cast<HybridMixer>(m.layers->at<DecoderLayer>(1)->mixer);
    auto cons = std::dynamic_pointer_cast<HybridMixer>(m.layers->at<DecoderLayer>(2)->mixer);
    ASSERT_TRUE(prod && cons);
    const int64_t B = 2, T = 7, H = 8, I = 16, Hq = 2, Hkv = 1, dk = 4, dv = 8, M = 2, W = 3;
    const double base = cfg.rope_base(), eps = cfg.norm_eps;
    Generator g(4);
    Tensor u1 = rand({B, T, H}, DType::F64, &g, -1, 1), u2 = rand({B, T, H}, DType::F64, &g, -1, 1);
    KVStore store(4);
    Tensor y1 = prod->forward(u1, store), y2 = cons->forward(u2, store);

    // Producer: P = u W^T; q | k | v | x | z.
    const int64_t rows = B * T, w1 = Hq * dk + Hkv * (dk + dv) + 2 * I, w2 = Hq * dk + 2 * I;
    ASSERT_EQ(prod->in_proj->weight.size(0), w1);
    ASSERT_EQ(cons->in_proj->weight.size(0), w2);  // no k, v rows in a consumer
    Vec P1 = testref::linear(vals(u1), rows, H, vals(prod->in_proj->weight), w1);
    Vec q1 = ref_rope(cols(P1, rows, w1, 0, Hq * dk), B, T, Hq, dk, base);
    Vec k1 = ref_rope(cols(P1, rows, w1, Hq * dk, Hkv * dk), B, T, Hkv, dk, base);
    Vec v1 = cols(P1, rows, w1, Hq * dk + Hkv * dk, Hkv * dv);
    int64_t xo = Hq * dk + Hkv * (dk + dv);
    auto finish = [&](const HybridMixer& mx, const Vec& o, const Vec& x, const Vec& z) {
      Vec y = ref_ssm(mx.ssm, x, z, B, T, eps);
      Vec a = testref::rms(o, rows, Hq * dv, vals(mx.pre_avg_layernorm1->weight), eps);
      Vec s = testref::rms(y, rows, I, vals(mx.pre_avg_layernorm2->weight), eps);
      Vec f;
      if (fusion == Fusion::Mean) {
        for (size_t i = 0; i < a.size(); ++i) f.push_back((a[i] + s[i]) / 2);
        return testref::linear(f, rows, I, vals(mx.out_proj->weight), H);
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < Hq * dv; ++c) f.push_back(a[size_t(r * Hq * dv + c)]);
        for (int64_t c = 0; c < I; ++c) f.push_back(s[size_t(r * I + c)]);
      }
      return testref::linear(f, rows, Hq * dv + I, vals(mx.out_proj->weight), H);
    };
    Vec o1 = ref_attention(q1, k1, v1, B, T, Hq, Hkv, dk, dv, W, M);
    Vec ref1 = finish(*prod, o1, cols(P1, rows, w1, xo, I), cols(P1, rows, w1, xo + I, I));
    expect_close(vals(y1), ref1, 1e-10, "producer");

    // Consumer: q | x | z, with the producer's roped k and v.
    Vec P2 = testref::linear(vals(u2), rows, H, vals(cons->in_proj->weight), w2);
    Vec q2 = ref_rope(cols(P2, rows, w2, 0, Hq * dk), B, T, Hq, dk, base);
    Vec o2 = ref_attention(q2, k1, v1, B, T, Hq, Hkv, dk, dv, W, M);
    Vec ref2 = finish(*cons, o2, cols(P2, rows, w2, Hq * dk, I), cols(P2, rows, w2, Hq * dk + I, I));
    expect_close(vals(y2), ref2, 1e-10, "consumer");
  }
}

TEST(Layers, MambaAndAttentionMixersMatchReference) {
  ModelConfig cfg = parse_model_config_string(std::string(kTiny) + "layers:\n  - {index: 0, block: ssm}\n  - {index: 3, block: attention}\n");
  Model m(cfg, 2);
  m.to(DType::F64);
  randomize(m, 8);
  const int64_t B = 2, T = 6, H = 8, I = 16, rows = B * T;
  Generator g(9);
  Tensor u = rand({B, T, H}, DType::F64, &g, -1, 1);
  KVStore store(4);
  auto mamba = std::dynamic_pointer_cast<MambaMixer>(m.layers->at<DecoderLayer>(0)->mixer);
  ASSERT_TRUE(mamba);
  Vec P = testref::linear(vals(u), rows, H, vals(mamba->in_proj->weight), 2 * I);
  Vec y = ref_ssm(mamba->ssm, cols(P, rows, 2 * I, 0, I), cols(P, rows, 2 * I, I, I), B, T, cfg.norm_eps);
  expect_close(vals(mamba->forward(u, store)), testref::linear(y, rows, I, vals(mamba->out_proj->weight), H), 1e-10, "mamba");

  auto attn = std::dynamic_pointer_cast<AttentionMixer>(m.layers->at<DecoderLayer>(3)->mixer);
  ASSERT_TRUE(attn);
  const int64_t w = 8 + 4 + 8;
  Vec Q = testref::linear(vals(u), rows, H, vals(attn->in_proj->weight), w);
  double base = cfg.rope_base();
  Vec o = ref_attention(ref_rope(cols(Q, rows, w, 0, 8), B, T, 2, 4, base), ref_rope(cols(Q, rows, w, 8, 4), B, T, 1, 4, base),
                        cols(Q, rows, w, 12, 8), B, T, 2, 1, 4, 8, /*window=*/-1, 2);
  expect_close(vals(attn->forward(u, store)), testref::linear(o, rows, 16, vals(attn->out_proj->weight), H), 1e-10,
               "attention");
}

// Perturbing the producer's k rows changes the consumer's output; the consumer has no k, v.
TEST(Layers, KVConsumerReadsItsProducersKeys) {
  ModelConfig cfg = parse_model_config_string(kTiny);
  Model m(cfg, 2);
  m.to(DType::F64);
  randomize(m, 5);
  auto prod = std::dynamic_pointer_cast<HybridMixer>(m.layers->at<DecoderLayer>(1)->mixer);
  auto cons = std::dynamic_pointer_cast<HybridMixer>(m.layers->at<DecoderLayer>(2)->mixer);
  EXPECT_EQ(cons->in_proj->weight.size(0), 8 + 2 * 16);
  Generator g(6);
  Tensor u = rand({1, 6, 8}, DType::F64, &g, -1, 1);
  auto run = [&] {
    KVStore store(4);
    prod->forward(u, store);
    return vals(cons->forward(u, store));
  };
  Vec before = run();
  {
    NoGradGuard ng;
    Tensor krows = prod->in_proj->weight.detach().narrow(0, 8, 4);  // k rows follow q's 8 rows
    krows.copy_(krows * 1.5 + 0.1);
  }
  Vec after = run();
  double diff = 0;
  for (size_t i = 0; i < before.size(); ++i) diff = std::max(diff, std::abs(before[i] - after[i]));
  EXPECT_GT(diff, 1e-4);
  // A consumer without its producer in the store is an error, not a silent self-attention.
  KVStore empty(4);
  try {
    cons->forward(u, empty);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("KV consumer of layer 1"));
  }
}

// Every block kind is causal (meta prefix, SSM and SWA included), logits have the right shape,
// and loss(ids) is the mean next-token cross entropy of forward(ids).
TEST(Model, CausalShapesAndLossForEveryBlockKind) {
  std::string no_groups = kTiny;
  no_groups.replace(no_groups.find("kv_reuse_groups: [[1, 2]]"), 25, "");
  std::vector<std::string> configs = {
      kTiny,
      std::string(kTiny) + "layers:\n  - {index: all, block: attention}\n",
      no_groups + "layers:\n  - {index: all, block: ssm, mlp: false}\n",
      no_groups + "layers:\n  - {index: even, block: ssm}\n  - {index: odd, block: attention}\n",
      std::string(kTiny).replace(std::string(kTiny).find("num_meta_tokens: 2"), 18, "num_meta_tokens: 0") +
          "fusion: concat\ntie_embeddings: false\n",
  };
  for (const std::string& y : configs) {
    Model m(parse_model_config_string(y), 7);
    m.to(DType::F64);
    randomize(m, 1);
    const int64_t B = 2, L = 9, V = 11;
    std::vector<int64_t> a = {1, 4, 2, 9, 0, 3, 3, 7, 10, 5, 5, 6, 1, 8, 2, 0, 4, 9};
    Tensor ids = ids_tensor(a, B, L);
    Tensor logits = m.forward(ids);
    ASSERT_EQ(logits.shape(), (Shape{B, L, V}));
    Vec lg = vals(logits);
    // Changing the last token of each row changes nothing before it.
    std::vector<int64_t> b = a;
    b[L - 1] = 2;
    b[2 * L - 1] = 1;
    Vec lg2 = vals(m.forward(ids_tensor(b, B, L)));
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < L - 1; ++t)
        for (int64_t v = 0; v < V; ++v) {
          size_t i = size_t((r * L + t) * V + v);
          ASSERT_NEAR(lg[i], lg2[i], 1e-12) << y << " row " << r << " pos " << t;
        }
    double ce = 0;
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t + 1 < L; ++t) {
        size_t o = size_t((r * L + t) * V);
        double mx = -INFINITY, z = 0;
        for (int64_t v = 0; v < V; ++v) mx = std::max(mx, lg[o + size_t(v)]);
        for (int64_t v = 0; v < V; ++v) z += std::exp(lg[o + size_t(v)] - mx);
        ce += mx + std::log(z) - lg[o + size_t(a[size_t(r * L + t + 1)])];
      }
    EXPECT_NEAR(m.loss(ids).item(), ce / double(B * (L - 1)), 1e-10) << y;
    // Explicit targets: all ignored but one.
    std::vector<int64_t> tg(size_t(B * L), -100);
    tg[3] = 5;
    size_t o = size_t(3 * V);
    double mx = -INFINITY, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, lg[o + size_t(v)]);
    for (int64_t v = 0; v < V; ++v) z += std::exp(lg[o + size_t(v)] - mx);
    EXPECT_NEAR(m.loss(ids, ids_tensor(tg, B, L)).item(), mx + std::log(z) - lg[o + 5], 1e-10) << y;
  }
}

TEST(Model, F32ForwardAtInitIsNearUniform) {
  Model m(parse_model_config_string(kTiny), 11);
  Tensor ids = from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {1, 6});
  double l = m.loss(ids).item();
  EXPECT_NEAR(l, std::log(11.0), 0.2);  // N(0, 0.02) init: logits near 0
  EXPECT_EQ(m.forward(ids).dtype(), DType::F32);
}

// The loss of a tiny Hymba (KV sharing, SWA, meta tokens) differentiated in float64 with
// respect to parameters of every part of the model.
TEST(Model, GradcheckTinyHymbaLoss) {
  ModelConfig cfg = parse_model_config_string(R"(
vocab_size: 11
hidden_size: 8
num_layers: 2
block: hybrid
num_heads: 2
num_kv_heads: 1
head_dim: 4
v_head_dim: 8
ssm: {d_state: 2, d_conv: 3, expand: 2, dt_rank: 2, inner_layernorms: true}
mlp: {intermediate_size: 6}
num_meta_tokens: 2
sliding_window: 2
full_attention_layers: [0]
kv_reuse_groups: [[0, 1]]
)");
  Model m(cfg, 4);
  m.to(DType::F64);
  randomize(m, 12);
  Tensor ids = from_vector<int64_t>({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, {2, 5});
  std::vector<Tensor> params;
  for (const char* n : {"memory_tokens", "embed_tokens.weight", "layers.0.mixer.in_proj.weight", "layers.0.mixer.A_log",
                        "layers.0.mixer.dt_proj.bias", "layers.0.mixer.conv1d.weight", "layers.1.mixer.in_proj.weight",
                        "layers.1.mixer.B_layernorm.weight", "layers.1.mixer.pre_avg_layernorm1.weight",
                        "layers.1.mlp.down_proj.weight", "final_layernorm.weight"})
    params.push_back(m.find(n));
  auto r = autograd::gradcheck([&](const std::vector<Tensor>&) { return m.loss(ids); }, params);
  EXPECT_TRUE(r.ok) << r.message;
}
