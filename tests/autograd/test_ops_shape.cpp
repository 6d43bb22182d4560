// Shape ops: views share storage, values follow the index definition, gradients check out.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/shape.h"
#include "core/rng.h"

namespace hymba {
namespace {

using autograd::gradcheck;
using ::testing::HasSubstr;

Tensor leaf(const Shape& s, Generator& g) {
  Tensor t = randn(s, DType::F64, &g);
  t.set_requires_grad(true);
  return t;
}

// A (3, 4, 2) leaf that is a permuted view of a (2, 3, 4) buffer: not contiguous.
Tensor permuted_leaf(Generator& g) {
  Tensor base = randn({2, 3, 4}, DType::F64, &g);
  Tensor t = base.permute({1, 2, 0});
  t.set_requires_grad(true);
  return t;
}

std::vector<double> values(const Tensor& t) {
  NoGradGuard ng;
  return t.to_vector<double>();
}

using Fn = std::function<Tensor(const Tensor&)>;

void check_all(const std::vector<std::pair<const char*, Fn>>& fs, const Tensor& x) {
  for (const auto& [what, f] : fs) {
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return f(in[0]); }, {x});
    EXPECT_TRUE(r.ok) << what << " on " << x.meta_str() << (x.is_contiguous() ? "" : " (view)") << ": " << r.message;
  }
}

TEST(ShapeOp, ViewGradients) {
  Generator g(30);
  const std::vector<std::pair<const char*, Fn>> fs = {
      {"reshape", [](const Tensor& v) { return reshape(v, {4, -1}); }},
      {"flatten", [](const Tensor& v) { return flatten(v, 1); }},
      {"permute", [](const Tensor& v) { return permute(v, {2, 0, 1}); }},
      {"transpose", [](const Tensor& v) { return transpose(v, 0, -1); }},
      {"narrow", [](const Tensor& v) { return narrow(v, 1, 1, 2); }},
      {"slice step", [](const Tensor& v) { return slice(v, 1, 0, 4, 3); }},
      {"slice neg", [](const Tensor& v) { return slice(v, 0, -2, 3); }},
      {"select", [](const Tensor& v) { return select(v, 1, -1); }},
      {"unsqueeze", [](const Tensor& v) { return unsqueeze(v, 1); }},
      {"squeeze", [](const Tensor& v) { return squeeze(unsqueeze(v, 3), 3); }},
      {"squeeze no-op", [](const Tensor& v) { return squeeze(v, 0); }},
      {"contiguous", [](const Tensor& v) { return contiguous(transpose(v, 0, 1)); }},
      {"expand", [](const Tensor& v) { return expand(unsqueeze(v, 0), {2, -1, -1, -1}); }},
      {"expand size-1", [](const Tensor& v) { return expand(narrow(v, 1, 0, 1), {3, 5, 2}); }},
  };
  check_all(fs, leaf({3, 4, 2}, g));
  check_all(fs, permuted_leaf(g));
  // view needs compatible strides, so it is checked on a contiguous input only.
  check_all({{"view", [](const Tensor& v) { return view(v, {2, 12}); }}}, leaf({3, 4, 2}, g));
}

TEST(ShapeOp, ViewsShareStorageAndValues) {
  Generator g(31);
  Tensor x = leaf({3, 4}, g);
  Tensor n = narrow(x, 1, 1, 2);
  EXPECT_EQ(n.storage().get(), x.storage().get());
  EXPECT_TRUE(n.requires_grad());
  EXPECT_EQ(n.shape(), (Shape{3, 2}));
  auto xv = values(x), nv = values(n);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j) EXPECT_EQ(nv[size_t(i * 2 + j)], xv[size_t(i * 4 + 1 + j)]);
  Tensor t = transpose(x, 0, 1);
  EXPECT_EQ(t.storage().get(), x.storage().get());
  EXPECT_EQ(contiguous(x).impl(), x.impl());  // already contiguous: the same tensor
  Tensor s = select(x, 0, 2);
  EXPECT_EQ(values(s), std::vector<double>(xv.begin() + 8, xv.end()));
  // No graph when no input needs a gradient.
  Tensor c = randn({3, 4}, DType::F64, &g);
  EXPECT_FALSE(reshape(c, {12}).requires_grad());
  {
    NoGradGuard ng;
    EXPECT_FALSE(reshape(x, {12}).requires_grad());
  }
}

TEST(ShapeOp, SliceBackwardScattersIntoZeros) {
  Tensor x = from_vector<double>({0, 1, 2, 3, 4, 5}, {6}, DType::F64);
  x.set_requires_grad(true);
  Tensor y = slice(x, 0, 1, 6, 2);  // elements 1, 3, 5
  y.backward(from_vector<double>({10, 20, 30}, {3}, DType::F64));
  EXPECT_EQ(values(x.grad()), (std::vector<double>{0, 10, 0, 20, 0, 30}));
}

TEST(ShapeOp, CatSplitChunk) {
  Generator g(32);
  Tensor a = leaf({2, 3}, g), b = leaf({2, 1}, g), c = permuted_leaf(g);  // c: (3, 4, 2)
  Tensor y = cat({a, b}, 1);
  ASSERT_EQ(y.shape(), (Shape{2, 4}));
  auto av = values(a), bv = values(b), yv = values(y);
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(yv[size_t(i * 4 + j)], av[size_t(i * 3 + j)]);
    EXPECT_EQ(yv[size_t(i * 4 + 3)], bv[size_t(i)]);
  }
  auto r = gradcheck([](const std::vector<Tensor>& in) { return cat({in[0], in[1], in[0]}, -1); }, {a, b});
  EXPECT_TRUE(r.ok) << "cat: " << r.message;
  r = gradcheck([](const std::vector<Tensor>& in) { return cat({in[0], transpose(in[0], 0, 1)}, 0); },
                {leaf({3, 3}, g)});
  EXPECT_TRUE(r.ok) << "cat of a view: " << r.message;

  auto parts = split(c, {1, 0, 3}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].shape(), (Shape{3, 1, 2}));
  EXPECT_EQ(parts[1].shape(), (Shape{3, 0, 2}));
  EXPECT_EQ(parts[2].shape(), (Shape{3, 3, 2}));
  EXPECT_EQ(parts[2].storage().get(), c.storage().get());
  // Pieces used unevenly, one unused: the backward fills zeros for it.
  r = gradcheck(
      [](const std::vector<Tensor>& in) {
        auto p = split(in[0], {1, 2, 1}, 1);
        return cat({p[2], p[0], p[2]}, 1);
      },
      {c});
  EXPECT_TRUE(r.ok) << "split: " << r.message;
  auto ch = chunk(leaf({7, 2}, g), 3, 0);
  ASSERT_EQ(ch.size(), 3u);
  EXPECT_EQ(ch[0].size(0), 3);
  EXPECT_EQ(ch[1].size(0), 3);
  EXPECT_EQ(ch[2].size(0), 1);
  EXPECT_EQ(chunk(randn({2, 2}), 5, 0).size(), 2u);
  r = gradcheck([](const std::vector<Tensor>& in) { return chunk(in[0], 2, -1)[1]; }, {c});
  EXPECT_TRUE(r.ok) << "chunk: " << r.message;
}

TEST(ShapeOp, CastAndDevice) {
  Tensor x = from_vector<double>({1.5, -2.25, 3}, {3}, DType::F32);
  x.set_requires_grad(true);
  Tensor y = cast(x, DType::F64);
  EXPECT_EQ(y.dtype(), DType::F64);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_EQ(values(y), (std::vector<double>{1.5, -2.25, 3}));
  y.backward(from_vector<double>({1, 2, 3}, {3}, DType::F64));
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::F32);  // the gradient comes back in the input's dtype
  EXPECT_EQ(values(x.grad()), (std::vector<double>{1, 2, 3}));
  EXPECT_TRUE(cast(x, DType::F32).is_same(x));
  Tensor i = cast(x, DType::I64);
  EXPECT_EQ(i.dtype(), DType::I64);
  EXPECT_FALSE(i.requires_grad());
  EXPECT_TRUE(to_device(x, Device::cpu()).is_same(x));
  // f64 -> f32 -> f64: identity up to f32 rounding, so a wide step keeps the finite
  // difference above the rounding noise (|error| ~ 6e-8 / 1e-2).
  autograd::GradcheckOptions opts;
  opts.eps = 1e-2;
  opts.atol = 1e-4;
  auto r = gradcheck([](const std::vector<Tensor>& in) { return cast(cast(in[0], DType::F32), DType::F64); },
                     {from_vector<double>({1, 2}, {2}, DType::F64).set_requires_grad(true)}, opts);
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(ShapeOp, BadInputs) {
  Tensor x = randn({2, 3});
  try {
    cat({x, randn({3, 3})}, 1);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cat"));
    EXPECT_THAT(e.what(), HasSubstr("[3, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
  }
  try {
    cat({x, randn({2, 3}, DType::F64)}, 0);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cat"));
    EXPECT_THAT(e.what(), HasSubstr("f64"));
  }
  try {
    split(x, {1, 1}, 1);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("split"));
    EXPECT_THAT(e.what(), HasSubstr("[1, 1]"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
  }
  try {
    narrow(x, 1, 2, 2);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("narrow"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
  }
  try {
    view(transpose(x, 0, 1), {6});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("view"));
  }
  try {
    reshape(x, {4, 2});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("reshape"));
    EXPECT_THAT(e.what(), HasSubstr("[4, 2]"));
  }
  try {
    expand(x, {2, 4});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("expand"));
  }
}

}  // namespace
}  // namespace hymba
