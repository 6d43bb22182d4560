// Module: dotted names in registration order, tied weights listed once, state_dict round
// trips and its errors, in-place dtype conversion, zero_grad, train/eval, registration
// errors, ModuleList.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "autograd/ops/elementwise.h"
#include "core/rng.h"
#include "layers/module.h"
#include "tests/test_util.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

// Test-only layers; the real ones belong to the Models issue.
struct TinyLinear : Module {
  Tensor weight, bias;
  TinyLinear(int64_t in, int64_t out, Generator* g) {
    weight = register_parameter("weight", randn({out, in}, {}, g));
    bias = register_parameter("bias", zeros({out}));
  }
  std::string type_name() const override { return "TinyLinear"; }
};

struct TinyMixer : Module {
  std::shared_ptr<TinyLinear> in_proj;
  Tensor A_log;
  TinyMixer(int64_t d, Generator* g) {
    in_proj = register_module("in_proj", std::make_shared<TinyLinear>(d, 2 * d, g));
    A_log = register_parameter("A_log", randn({d, 2}, {}, g));
    register_buffer("rope_cache", ones({4, d}), /*persistent=*/false);
  }
  std::string type_name() const override { return "TinyMixer"; }
};

struct TinyBlock : Module {
  Tensor norm_weight;
  std::shared_ptr<TinyMixer> mixer;
  TinyBlock(int64_t d, Generator* g) {
    norm_weight = register_parameter("norm_weight", ones({d}));
    mixer = register_module("mixer", std::make_shared<TinyMixer>(d, g));
  }
  std::string type_name() const override { return "TinyBlock"; }
};

struct TinyModel : Module {
  Tensor embed, positions;
  std::shared_ptr<ModuleList> layers;
  std::shared_ptr<TinyLinear> head;
  TinyModel(int64_t vocab, int64_t d, int64_t n_layers, uint64_t seed) {
    Generator g(seed);
    embed = register_parameter("embed", randn({vocab, d}, {}, &g));
    positions = register_buffer("positions", arange(4, DType::I64));
    layers = register_module("layers", std::make_shared<ModuleList>());
    for (int64_t i = 0; i < n_layers; ++i) layers->push_back(std::make_shared<TinyBlock>(d, &g));
    head = register_module("head", std::make_shared<TinyLinear>(d, vocab, &g));
  }
  std::string type_name() const override { return "TinyModel"; }
};

std::vector<std::string> names_of(const NamedTensors& nt) {
  std::vector<std::string> out;
  for (const auto& [n, _] : nt) out.push_back(n);
  return out;
}

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

using testutil::error_of;

// Deep copies, so that loading into another model cannot alias the source.
StateDict cloned(const StateDict& sd) {
  StateDict out;
  for (const auto& [n, t] : sd) out.emplace_back(n, t.clone());
  return out;
}

}  // namespace

TEST(Module, DottedNamesInRegistrationOrder) {
  TinyModel m(10, 4, 2, 1);
  // A module's own parameters come before its children's (as in PyTorch): the mixer's A_log,
  // registered after in_proj, is listed before in_proj's.
  const std::vector<std::string> params = {
      "embed",
      "layers.0.norm_weight", "layers.0.mixer.A_log", "layers.0.mixer.in_proj.weight", "layers.0.mixer.in_proj.bias",
      "layers.1.norm_weight", "layers.1.mixer.A_log", "layers.1.mixer.in_proj.weight", "layers.1.mixer.in_proj.bias",
      "head.weight", "head.bias"};
  EXPECT_EQ(names_of(m.named_parameters()), params);
  EXPECT_EQ(m.parameters().size(), params.size());
  EXPECT_EQ(names_of(m.named_buffers()),
            (std::vector<std::string>{"positions", "layers.0.mixer.rope_cache", "layers.1.mixer.rope_cache"}));
  EXPECT_EQ(names_of(m.named_buffers("", /*persistent_only=*/true)), (std::vector<std::string>{"positions"}));
  EXPECT_EQ(names_of(m.named_parameters("model")).front(), "model.embed");
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.requires_grad());

  // Handles: the layer's member and the registry are the same tensor.
  EXPECT_TRUE(m.find("layers.1.mixer.in_proj.weight").is_same(m.layers->at<TinyBlock>(1)->mixer->in_proj->weight));
  EXPECT_THAT(error_of([&] { m.find("layers.2.mixer.A_log"); }), HasSubstr("layers.2.mixer.A_log"));

  std::vector<std::string> mods;
  for (const auto& [n, _] : m.named_modules()) mods.push_back(n);
  EXPECT_EQ(mods, (std::vector<std::string>{"layers", "layers.0", "layers.0.mixer", "layers.0.mixer.in_proj",
                                            "layers.1", "layers.1.mixer", "layers.1.mixer.in_proj", "head"}));
  EXPECT_EQ(m.children().size(), 2u);
  EXPECT_EQ(m.named_children()[1].first, "head");

  // 10*4 + 2 * (4 + 8*4 + 8 + 4*2) + 10*4 + 10
  EXPECT_EQ(m.num_parameters(), 40 + 2 * (4 + 32 + 8 + 8) + 40 + 10);
}

TEST(Module, TiedWeightIsOneParameter) {
  TinyModel m(10, 4, 1, 2);
  // A tied head reuses the embedding matrix under a second name.
  struct Tied : Module {
    explicit Tied(const Tensor& w) { register_parameter("weight", w); }
  };
  const int64_t before = m.num_parameters();
  m.register_module("tied_head", std::make_shared<Tied>(m.embed));
  EXPECT_EQ(m.num_parameters(), before);
  auto names = names_of(m.named_parameters());
  EXPECT_EQ(std::count(names.begin(), names.end(), "tied_head.weight"), 0);
  auto sd_names = names_of(m.state_dict());
  EXPECT_EQ(std::count(sd_names.begin(), sd_names.end(), "embed"), 1);
  EXPECT_EQ(std::count(sd_names.begin(), sd_names.end(), "tied_head.weight"), 0);
  // A state that names the tensor only by its alias still loads it.
  TinyModel src(10, 4, 1, 3);
  StateDict sd;
  for (auto& [n, t] : cloned(src.state_dict())) sd.emplace_back(n == "embed" ? "tied_head.weight" : n, t);
  auto r = m.load_state_dict(sd);
  EXPECT_TRUE(r.missing.empty());
  EXPECT_TRUE(r.unexpected.empty());
  EXPECT_EQ(m.embed.to_vector<float>(), src.embed.to_vector<float>());
}

TEST(Module, StateDictRoundTrip) {
  TinyModel a(10, 4, 2, 1), b(10, 4, 2, 2);
  StateDict sd = a.state_dict();
  // Parameters then persistent buffers per module, depth first; no non-persistent buffers.
  auto names = names_of(sd);
  EXPECT_EQ(names.size(), 12u);
  EXPECT_EQ(names[0], "embed");
  EXPECT_EQ(names[1], "positions");
  EXPECT_EQ(names[2], "layers.0.norm_weight");
  EXPECT_EQ(std::count(names.begin(), names.end(), "layers.0.mixer.rope_cache"), 0);
  // state_dict aliases the module's tensors.
  EXPECT_EQ(sd[0].second.data_ptr(), a.embed.data_ptr());

  ASSERT_NE(a.embed.to_vector<float>(), b.embed.to_vector<float>());
  b.positions.fill_(0);
  auto r = b.load_state_dict(cloned(sd));
  EXPECT_TRUE(r.missing.empty() && r.unexpected.empty());
  auto sa = a.state_dict(), sb = b.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(sa[i].second.to_vector<double>(), sb[i].second.to_vector<double>()) << sa[i].first;
  }
  // Loaded in place: b's member handles see the values.
  EXPECT_EQ(b.layers->at<TinyBlock>(1)->mixer->A_log.to_vector<float>(),
            a.layers->at<TinyBlock>(1)->mixer->A_log.to_vector<float>());
  EXPECT_TRUE(b.embed.requires_grad());

  // A map works too, and an f64 state is cast into the f32 module.
  std::map<std::string, Tensor> m64;
  for (auto& [n, t] : sd) m64[n] = is_floating(t.dtype()) ? t.to(DType::F64) : t;
  TinyModel c(10, 4, 2, 5);
  c.load_state_dict(m64);
  EXPECT_EQ(c.embed.dtype(), DType::F32);
  EXPECT_EQ(c.embed.to_vector<float>(), a.embed.to_vector<float>());
}

TEST(Module, LoadErrorsNameKeysAndShapes) {
  TinyModel a(10, 4, 2, 1);
  const std::vector<float> before = a.embed.to_vector<float>();
  TinyModel src(10, 4, 2, 9);

  // Missing key.
  StateDict missing;
  for (auto& [n, t] : cloned(src.state_dict()))
    if (n != "layers.1.mixer.A_log") missing.emplace_back(n, t);
  auto msg = user_error_of([&] { a.load_state_dict(missing); });
  EXPECT_THAT(msg, HasSubstr("missing key 'layers.1.mixer.A_log'"));
  EXPECT_EQ(a.embed.to_vector<float>(), before) << "a failed load must change nothing";
  // ...which non-strict loading reports instead, loading the rest.
  auto r = a.load_state_dict(missing, /*strict=*/false);
  EXPECT_EQ(r.missing, std::vector<std::string>{"layers.1.mixer.A_log"});
  EXPECT_EQ(a.embed.to_vector<float>(), src.embed.to_vector<float>());

  // Unexpected key.
  StateDict extra = cloned(src.state_dict());
  extra.emplace_back("layers.7.mixer.D", zeros({4}));
  msg = user_error_of([&] { a.load_state_dict(extra); });
  EXPECT_THAT(msg, HasSubstr("unexpected key 'layers.7.mixer.D'"));
  r = a.load_state_dict(extra, false);
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"layers.7.mixer.D"});

  // Shape mismatch: always an error, naming the key and both shapes.
  StateDict bad = cloned(src.state_dict());
  for (auto& [n, t] : bad)
    if (n == "layers.0.mixer.in_proj.weight") t = zeros({4, 8});
  msg = user_error_of([&] { a.load_state_dict(bad, false); });
  EXPECT_THAT(msg, HasSubstr("layers.0.mixer.in_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("[4, 8]"));
  EXPECT_THAT(msg, HasSubstr("[8, 4]"));

  // Duplicate keys in an ordered state.
  StateDict dup = cloned(src.state_dict());
  dup.push_back(dup.front());
  EXPECT_THAT(user_error_of([&] { a.load_state_dict(dup); }), HasSubstr("'embed' appears twice"));
}

TEST(Module, ToDtypeConvertsInPlace) {
  TinyModel m(10, 4, 2, 1);
  const std::vector<float> w32 = m.head->weight.to_vector<float>();
  Tensor handle = m.head->weight;  // e.g. held by an optimizer
  handle.set_grad(full({10, 4}, 0.25));
  m.head->bias.set_requires_grad(false);  // a frozen parameter stays frozen

  m.to(DType::F64);
  EXPECT_EQ(handle.dtype(), DType::F64);
  EXPECT_TRUE(handle.is_same(m.head->weight));
  EXPECT_TRUE(handle.requires_grad());
  EXPECT_FALSE(m.head->bias.requires_grad());
  EXPECT_EQ(m.head->bias.dtype(), DType::F64);
  std::vector<double> w64 = handle.to_vector<double>();
  ASSERT_EQ(w64.size(), w32.size());
  for (size_t i = 0; i < w32.size(); ++i) EXPECT_EQ(w64[i], double(w32[i]));
  ASSERT_TRUE(handle.grad().defined());
  EXPECT_EQ(handle.grad().dtype(), DType::F64);
  EXPECT_EQ(handle.grad().to_vector<double>(), std::vector<double>(40, 0.25));
  for (const auto& [n, t] : m.named_parameters()) EXPECT_EQ(t.dtype(), DType::F64) << n;
  // Floating buffers convert; integer buffers keep their dtype.
  EXPECT_EQ(m.find("layers.0.mixer.rope_cache").dtype(), DType::F64);
  EXPECT_EQ(m.positions.dtype(), DType::I64);

  m.to(DType::F32);
  EXPECT_EQ(m.head->weight.to_vector<float>(), w32);
  EXPECT_THAT(error_of([&] { m.to(DType::I32); }), HasSubstr("i32"));

  // The converted parameter is still a working leaf: a backward reaches it.
  Tensor y = m.embed * 2.0;
  y.backward(ones({10, 4}));
  ASSERT_TRUE(m.embed.grad().defined());
  EXPECT_EQ(m.embed.grad().to_vector<float>(), std::vector<float>(40, 2.0f));
}

TEST(Module, ZeroGradAndTrainEval) {
  TinyModel m(10, 4, 2, 1);
  for (const auto& p : m.parameters()) p.set_grad(ones(p.shape()));
  m.zero_grad();
  for (const auto& [n, p] : m.named_parameters()) EXPECT_FALSE(p.grad().defined()) << n;

  EXPECT_TRUE(m.is_training());
  m.eval();
  EXPECT_FALSE(m.is_training());
  for (const auto& [n, c] : m.named_modules()) EXPECT_FALSE(c->is_training()) << n;
  m.train();
  for (const auto& [n, c] : m.named_modules()) EXPECT_TRUE(c->is_training()) << n;
}

TEST(Module, RegistrationErrors) {
  Module m;
  m.register_parameter("w", zeros({2}));
  EXPECT_THAT(error_of([&] { m.register_parameter("w", zeros({2})); }), HasSubstr("'w' is already a parameter"));
  EXPECT_THAT(error_of([&] { m.register_buffer("w", zeros({2})); }), HasSubstr("'w' is already a parameter"));
  EXPECT_THAT(error_of([&] { m.register_parameter("a.b", zeros({2})); }), HasSubstr("contains '.'"));
  EXPECT_THAT(error_of([&] { m.register_parameter("", zeros({2})); }), HasSubstr("empty"));
  EXPECT_THAT(error_of([&] { m.register_parameter("i", zeros({2}, DType::I64)); }), HasSubstr("floating"));
  Tensor x = ones({2}).set_requires_grad(true);
  Tensor y = x * 3.0;
  EXPECT_THAT(error_of([&] { m.register_parameter("y", y); }), HasSubstr("not a leaf"));
  EXPECT_THAT(error_of([&] { m.register_buffer("b", x); }), HasSubstr("requires grad"));
  m.register_module("sub", std::make_shared<Module>());
  EXPECT_THAT(error_of([&] { m.register_module("sub", std::make_shared<Module>()); }),
              HasSubstr("'sub' is already a submodule"));
  EXPECT_THAT(error_of([&] { m.register_module("null", std::shared_ptr<Module>()); }), HasSubstr("null"));
}

TEST(Module, ModuleListIndexingAndTypes) {
  Generator g(4);
  ModuleList list;
  list.push_back(std::make_shared<TinyLinear>(2, 3, &g));
  list.push_back(std::make_shared<TinyBlock>(2, &g));
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(list.at<TinyLinear>(0)->weight.shape(), (Shape{3, 2}));
  EXPECT_THAT(error_of([&] { list.at<TinyLinear>(1); }), HasSubstr("TinyBlock"));
  EXPECT_THAT(error_of([&] { (void)list[2]; }), HasSubstr("out of range"));
  EXPECT_EQ(names_of(list.named_parameters())[0], "0.weight");
  int count = 0;
  for (const auto& mod : list) count += mod != nullptr;
  EXPECT_EQ(count, 2);
}
