// AdamW over parameter groups against a plain float64 reference, the default weight-decay
// grouping, global gradient-norm clipping, and optimizer state export/import.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "core/rng.h"
#include "layers/module.h"
#include "train/optimizer.h"
#include "tests/test_util.h"

using namespace hymba;
using namespace hymba::train;
using ::testing::HasSubstr;

namespace {

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

using testutil::error_of;

// One parameter's float64 mirror: torch.optim.AdamW's update, written out.
struct Ref {
  std::vector<double> p, m, v;
  explicit Ref(const Tensor& t) : p(t.to_vector<double>()), m(p.size(), 0.0), v(p.size(), 0.0) {}
  void step(const std::vector<double>& g, double lr, double wd, int64_t t, double b1, double b2, double eps) {
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, double(t)));
      const double vhat = v[i] / (1 - std::pow(b2, double(t)));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

void expect_close(const std::vector<double>& got, const std::vector<double>& ref, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], ref[i], tol * (1 + std::fabs(ref[i]))) << what << " " << i;
}

struct Tiny : Module {
  Tensor embed_tokens, memory_tokens;
  Tiny() {
    Generator g(1);
    embed_tokens = register_parameter("embed_tokens", randn({5, 3}, {}, &g));
    memory_tokens = register_parameter("memory_tokens", randn({2, 3}, {}, &g));
    auto mixer = register_module("mixer", std::make_shared<Module>());
    mixer->register_parameter("in_proj_weight", randn({6, 3}, {}, &g));
    mixer->register_parameter("A_log", randn({3, 4}, {}, &g));
    mixer->register_parameter("D", ones({3}));
    mixer->register_parameter("conv_weight", randn({3, 1, 4}, {}, &g));
    auto norm = register_module("final_norm", std::make_shared<Module>());
    norm->register_parameter("weight", ones({3}));
    register_parameter("frozen", randn({3, 3}, {}, &g), /*requires_grad=*/false);
  }
};

}  // namespace

TEST(WeightDecayRules, PatternsMatchComponentsOrWholeNames) {
  EXPECT_TRUE(pattern_matches("D", "layers.0.mixer.D"));
  EXPECT_TRUE(pattern_matches("D", "model.layers.0.mamba.D.0"));
  EXPECT_FALSE(pattern_matches("D", "layers.0.mixer.dt_proj.weight"));
  EXPECT_TRUE(pattern_matches("A_log", "model.layers.3.mamba.A_log.0"));
  EXPECT_TRUE(pattern_matches("*embed*", "model.embed_tokens.weight"));
  EXPECT_TRUE(pattern_matches("*norm*", "layers.2.input_layernorm.weight"));
  EXPECT_FALSE(pattern_matches("*norm*", "layers.2.mixer.out_proj.weight"));
  EXPECT_TRUE(pattern_matches("lm_head.*", "lm_head.weight"));
  EXPECT_FALSE(pattern_matches("lm_head.*", "model.lm_head.weight"));
  EXPECT_TRUE(pattern_matches("*.bias", "a.b.bias"));
  EXPECT_TRUE(pattern_matches("a*b*c", "axxbyyc"));
  EXPECT_FALSE(pattern_matches("a*b*c", "axxbyy"));
  EXPECT_TRUE(pattern_matches("*", "anything.at.all"));

  const auto defaults = default_no_decay_patterns();
  auto m2 = zeros({4, 4}), v1 = zeros({4});
  EXPECT_TRUE(decays("layers.0.mixer.in_proj.weight", m2, defaults));
  EXPECT_FALSE(decays("layers.0.mixer.in_proj.bias", v1, defaults));  // 1-D
  EXPECT_FALSE(decays("layers.0.mixer.A_log", m2, defaults));         // 2-D but excluded by name
  EXPECT_FALSE(decays("memory_tokens", m2, defaults));
  EXPECT_FALSE(decays("model.embed_tokens.weight", m2, defaults));
  EXPECT_FALSE(decays("layers.1.attn_norm.weight", m2, defaults));
  EXPECT_TRUE(decays("memory_tokens", m2, {}));  // configurable: no patterns, only the dim rule
}

TEST(WeightDecayRules, DefaultGroupsFromModuleNames) {
  Tiny m;
  auto groups = default_param_groups(m.named_parameters(), 0.1);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "decay");
  EXPECT_EQ(groups[0].weight_decay, 0.1);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  std::vector<std::string> decay, no_decay;
  for (auto& [n, _] : groups[0].params) decay.push_back(n);
  for (auto& [n, _] : groups[1].params) no_decay.push_back(n);
  EXPECT_EQ(decay, (std::vector<std::string>{"mixer.in_proj_weight", "mixer.conv_weight"}));
  EXPECT_EQ(no_decay, (std::vector<std::string>{"embed_tokens", "memory_tokens", "mixer.A_log", "mixer.D",
                                                "final_norm.weight"}));  // "frozen" is left out

  // Custom patterns: only the dim rule and "A_log".
  groups = default_param_groups(m.named_parameters(), 0.1, {"A_log"});
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 4u);  // embed_tokens, memory_tokens, in_proj, conv
}

TEST(AdamWOptimizer, GroupsMatchReferenceOverSeveralSteps) {
  Generator gen(7);
  const AdamWOptions opts{0.9, 0.95, 1e-8};
  // Two groups with different lr scales and weight decay; one parameter never gets a gradient.
  Tensor a = randn({4, 3}, DType::F64, &gen).set_requires_grad(true);
  Tensor b = randn({5}, DType::F64, &gen).set_requires_grad(true);
  Tensor c = randn({2, 2}, DType::F64, &gen).set_requires_grad(true);
  Tensor idle = randn({3}, DType::F64, &gen).set_requires_grad(true);
  const std::vector<double> idle_before = idle.to_vector<double>();
  AdamW opt({{"decay", {{"a", a}}, 1.0, 0.1}, {"no_decay", {{"b", b}, {"idle", idle}}, 0.5, 0.0},
             {"other", {{"c", c}}, 2.0, 0.01}},
            opts);
  Ref ra(a), rb(b), rc(c);
  const double lrs[] = {1e-3, 3e-3, 2e-3, 5e-4};
  for (int64_t t = 1; t <= 4; ++t) {
    for (Tensor* p : {&a, &b, &c}) p->set_grad(randn(p->shape(), DType::F64, &gen));
    const double lr = lrs[t - 1];
    ra.step(a.grad().to_vector<double>(), lr * 1.0, 0.1, t, 0.9, 0.95, 1e-8);
    rb.step(b.grad().to_vector<double>(), lr * 0.5, 0.0, t, 0.9, 0.95, 1e-8);
    rc.step(c.grad().to_vector<double>(), lr * 2.0, 0.01, t, 0.9, 0.95, 1e-8);
    opt.step(lr);
    opt.zero_grad();
    EXPECT_FALSE(a.grad().defined());
  }
  EXPECT_EQ(opt.step_count(), 4);
  expect_close(a.to_vector<double>(), ra.p, 1e-12, "a");
  expect_close(b.to_vector<double>(), rb.p, 1e-12, "b");
  expect_close(c.to_vector<double>(), rc.p, 1e-12, "c");
  EXPECT_EQ(idle.to_vector<double>(), idle_before) << "a parameter without a gradient must not move";
}

TEST(AdamWOptimizer, NoDecayGroupIsNotDecayed) {
  // Zero gradients leave only the decoupled decay: p * (1 - lr * wd) in the decay group,
  // exactly p in the no-decay group.
  Tiny m;
  auto groups = default_param_groups(m.named_parameters(), 0.5);
  AdamW opt(groups);
  std::map<std::string, std::vector<float>> before;
  for (auto& [n, p] : m.named_parameters()) {
    before[n] = p.to_vector<float>();
    if (p.requires_grad()) p.set_grad(zeros(p.shape()));
  }
  const double lr = 0.1;
  opt.step(lr);
  for (auto& [n, p] : m.named_parameters()) {
    auto now = p.to_vector<float>();
    const bool decayed = n == "mixer.in_proj_weight" || n == "mixer.conv_weight";
    for (size_t i = 0; i < now.size(); ++i) {
      const float expect = decayed ? before[n][i] * float(1.0 - lr * 0.5) : before[n][i];
      ASSERT_EQ(now[i], expect) << n << " " << i;
    }
  }
}

TEST(AdamWOptimizer, GradNormAndClippingAreExact) {
  Tensor a = from_vector<double>({3.0, 4.0}, {2}).set_requires_grad(true);
  Tensor b = from_vector<double>({1.0, 2.0, 2.0, 0.0}, {2, 2}).set_requires_grad(true);
  Tensor none = zeros({3}, DType::F64).set_requires_grad(true);  // no grad: ignored
  AdamW opt({{"all", {{"a", a}, {"b", b}, {"none", none}}, 1.0, 0.0}});
  a.set_grad(from_vector<double>({3.0, 4.0}, {2}));
  b.set_grad(from_vector<double>({1.0, 2.0, 2.0, 0.0}, {2, 2}).t());  // a strided gradient
  // sqrt(9 + 16 + 1 + 4 + 4) = sqrt(34)
  const double norm = std::sqrt(34.0);
  EXPECT_DOUBLE_EQ(opt.grad_norm(), norm);

  // Below the threshold: untouched.
  EXPECT_DOUBLE_EQ(opt.clip_grad_norm_(10.0), norm);
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{3.0, 4.0}));

  // Above: every gradient scaled by max_norm / (norm + 1e-6).
  EXPECT_DOUBLE_EQ(opt.clip_grad_norm_(2.0), norm);
  const double coef = 2.0 / (norm + 1e-6);
  auto ga = a.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
  EXPECT_DOUBLE_EQ(ga[0], 3.0 * coef);
  EXPECT_DOUBLE_EQ(ga[1], 4.0 * coef);
  EXPECT_DOUBLE_EQ(gb[0], 1.0 * coef);
  EXPECT_DOUBLE_EQ(gb[1], 2.0 * coef);  // transposed: [[1, 2], [2, 0]]^T
  EXPECT_NEAR(opt.grad_norm(), 2.0, 1e-6);

  // A non-finite norm is reported and the gradients are left alone.
  a.set_grad(from_vector<double>({std::numeric_limits<double>::quiet_NaN(), 1.0}, {2}));
  const std::vector<double> gb_before = b.grad().to_vector<double>();
  EXPECT_TRUE(std::isnan(opt.clip_grad_norm_(1.0)));
  EXPECT_EQ(b.grad().to_vector<double>(), gb_before);
  EXPECT_THAT(error_of([&] { opt.clip_grad_norm_(0.0); }), HasSubstr("max_norm"));

  // The free functions agree, and f32 gradients accumulate in double.
  Tensor f = ones({1000}).set_requires_grad(true);
  f.set_grad(full({1000}, 0.1));
  EXPECT_NEAR(global_grad_norm({f}), std::sqrt(1000 * double(0.1f) * double(0.1f)), 1e-12);
}

TEST(AdamWOptimizer, StateExportImportResumesBitIdentically) {
  Generator gen(3);
  auto make_params = [&](uint64_t seed) {
    Generator g(seed);
    return std::vector<Tensor>{randn({3, 4}, {}, &g).set_requires_grad(true), randn({4}, {}, &g).set_requires_grad(true)};
  };
  auto groups_of = [](const std::vector<Tensor>& p) {
    return std::vector<ParamGroup>{{"decay", {{"w", p[0]}}, 1.0, 0.1}, {"no_decay", {{"b", p[1]}}, 1.0, 0.0}};
  };
  std::vector<std::vector<Tensor>> grads;
  for (int i = 0; i < 5; ++i) grads.push_back({randn({3, 4}, {}, &gen), randn({4}, {}, &gen)});
  auto run = [&](AdamW& opt, std::vector<Tensor>& p, int from, int to) {
    for (int i = from; i < to; ++i) {
      p[0].set_grad(grads[size_t(i)][0].clone());
      p[1].set_grad(grads[size_t(i)][1].clone());
      opt.step(1e-2);
    }
  };

  // Straight: 5 steps.
  auto p1 = make_params(1);
  AdamW straight(groups_of(p1));
  run(straight, p1, 0, 5);

  // 3 steps, export (parameters and moments cloned as a checkpoint would), import into a
  // fresh optimizer over fresh tensors, 2 more steps.
  auto p2 = make_params(1);
  AdamW first(groups_of(p2));
  run(first, p2, 0, 3);
  NamedTensors saved;
  for (auto& [n, t] : first.state_dict()) saved.emplace_back(n, t.clone());
  EXPECT_EQ(saved.back().first, "step");
  EXPECT_EQ(saved.back().second.item(), 3.0);
  EXPECT_EQ(saved[0].first, "exp_avg/w");
  EXPECT_EQ(saved[2].first, "exp_avg_sq/w");
  auto p3 = make_params(99);
  {
    NoGradGuard ng;
    p3[0].copy_(p2[0]);
    p3[1].copy_(p2[1]);
  }
  AdamW resumed(groups_of(p3));
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.step_count(), 3);
  run(resumed, p3, 3, 5);
  EXPECT_EQ(p3[0].to_vector<float>(), p1[0].to_vector<float>());
  EXPECT_EQ(p3[1].to_vector<float>(), p1[1].to_vector<float>());
  auto s1 = straight.state_dict(), s3 = resumed.state_dict();
  for (size_t i = 0; i < s1.size(); ++i)
    EXPECT_EQ(s1[i].second.to_vector<double>(), s3[i].second.to_vector<double>()) << s1[i].first;
}

TEST(AdamWOptimizer, StateImportErrorsNameTheEntry) {
  Tensor w = zeros({3, 4}).set_requires_grad(true), b = zeros({4}).set_requires_grad(true);
  AdamW opt({{"g", {{"w", w}, {"b", b}}, 1.0, 0.0}});
  auto good = [&] {
    NamedTensors s;
    for (auto& [n, t] : opt.state_dict()) s.emplace_back(n, t.clone());
    return s;
  };
  auto without = [&](const std::string& key) {
    NamedTensors s;
    for (auto& [n, t] : good())
      if (n != key) s.emplace_back(n, t);
    return s;
  };
  EXPECT_THAT(user_error_of([&] { opt.load_state_dict(without("exp_avg_sq/b")); }),
              HasSubstr("missing key 'exp_avg_sq/b'"));
  EXPECT_THAT(user_error_of([&] { opt.load_state_dict(without("step")); }), HasSubstr("missing key 'step'"));
  auto extra = good();
  extra.emplace_back("exp_avg/ghost", zeros({2}));
  EXPECT_THAT(user_error_of([&] { opt.load_state_dict(extra); }), HasSubstr("unexpected key 'exp_avg/ghost'"));
  auto shaped = good();
  shaped[0].second = zeros({4, 3});
  auto msg = user_error_of([&] { opt.load_state_dict(shaped); });
  EXPECT_THAT(msg, HasSubstr("exp_avg/w"));
  EXPECT_THAT(msg, HasSubstr("[4, 3]"));
  EXPECT_THAT(msg, HasSubstr("[3, 4]"));
  auto bad_step = good();
  bad_step.back().second = scalar_tensor(-1.0, DType::F64);
  EXPECT_THAT(user_error_of([&] { opt.load_state_dict(bad_step); }), HasSubstr("'step'"));
  // A failed import changed nothing.
  EXPECT_EQ(opt.step_count(), 0);
}

TEST(AdamWOptimizer, BadConfigurationIsReported) {
  Tensor w = zeros({2, 2}).set_requires_grad(true);
  EXPECT_THAT(user_error_of([&] { AdamW({{"g", {{"w", w}}, 1.0, 0.0}}, {1.0, 0.95, 1e-8}); }),
              HasSubstr("optim.beta1"));
  EXPECT_THAT(user_error_of([&] { AdamW({{"g", {{"w", w}}, 1.0, 0.0}}, {0.9, -0.1, 1e-8}); }),
              HasSubstr("optim.beta2"));
  EXPECT_THAT(user_error_of([&] { AdamW({{"g", {{"w", w}}, 1.0, -1.0}}); }), HasSubstr("optim.weight_decay"));
  EXPECT_THAT(error_of([&] { AdamW({{"g", {{"w", w}, {"w2", w}}, 1.0, 0.0}}); }), HasSubstr("same tensor"));
  Tensor other = zeros({2}).set_requires_grad(true);
  EXPECT_THAT(error_of([&] { AdamW({{"g", {{"w", w}}, 1.0, 0.0}, {"h", {{"w", other}}, 1.0, 0.0}}); }),
              HasSubstr("'w' appears twice"));
  AdamW ok({{"g", {{"w", w}}, 1.0, 0.0}});
  EXPECT_THAT(error_of([&] { ok.step(std::nan("")); }), HasSubstr("lr"));
}
