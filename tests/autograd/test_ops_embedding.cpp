// embedding: forward against a plain gather, gradient by finite differences and the
// padding row by a direct backward.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops/embedding.h"
#include "core/rng.h"

namespace hymba {
namespace {

using autograd::gradcheck;
using ::testing::HasSubstr;

std::vector<double> values(const Tensor& t) {
  NoGradGuard ng;
  return t.to_vector<double>();
}

TEST(EmbeddingOp, ForwardGathers) {
  Generator g(40);
  Tensor w = randn({6, 3}, DType::F64, &g);
  w.set_requires_grad(true);
  std::vector<int64_t> ids = {5, 0, 2, 2};
  Tensor y = embedding(w, from_vector(ids, {2, 2}, DType::I64));
  ASSERT_EQ(y.shape(), (Shape{2, 2, 3}));
  EXPECT_TRUE(y.requires_grad());
  auto wv = values(w), yv = values(y);
  for (size_t i = 0; i < ids.size(); ++i)
    for (size_t j = 0; j < 3; ++j) EXPECT_EQ(yv[i * 3 + j], wv[size_t(ids[i]) * 3 + j]);
}

TEST(EmbeddingOp, GradientWithRepeatedIds) {
  Generator g(41);
  for (DType it : {DType::I64, DType::I32}) {
    Tensor ids = from_vector<int64_t>({1, 3, 1, 0, 1, 3}, {3, 2}, it);
    Tensor w = randn({5, 4}, DType::F64, &g);
    w.set_requires_grad(true);
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, {w});
    EXPECT_TRUE(r.ok) << r.message;
    // A non-contiguous weight (transposed buffer).
    Tensor wt = randn({4, 5}, DType::F64, &g).t();
    wt.set_requires_grad(true);
    r = gradcheck([&](const std::vector<Tensor>& in) { return embedding(in[0], ids.t()); }, {wt});
    EXPECT_TRUE(r.ok) << "transposed: " << r.message;
  }
}

TEST(EmbeddingOp, PaddingRowGetsNoGradient) {
  Tensor w = ones({4, 2}, DType::F64);
  w.set_requires_grad(true);
  Tensor ids = from_vector<int64_t>({0, 2, 2, 3, 0}, {5}, DType::I64);
  Tensor y = embedding(w, ids, 2);
  EXPECT_EQ(values(y), std::vector<double>(10, 1.0));  // the forward still reads the padding row
  y.backward(ones({5, 2}, DType::F64));
  EXPECT_EQ(values(w.grad()), (std::vector<double>{2, 2, 0, 0, 0, 0, 1, 1}));
}

TEST(EmbeddingOp, BadInputs) {
  Tensor w = randn({4, 2});
  try {
    embedding(w, from_vector<int64_t>({0, 4}, {2}, DType::I64));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("embedding"));
    EXPECT_THAT(e.what(), HasSubstr("id 4"));
    EXPECT_THAT(e.what(), HasSubstr("V = 4"));
  }
  try {
    embedding(w, zeros({2}, DType::I64), 7);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("padding_idx 7"));
    EXPECT_THAT(e.what(), HasSubstr("[4, 2]"));
  }
}

}  // namespace
}  // namespace hymba
