// Embedding gather / scatter-add against plain loops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/parallel.h"
#include "kernels/embedding.h"
#include "tests/test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

using testutil::error_of;

TEST(EmbeddingKernel, ForwardGathersRows) {
  for (DType dt : {DType::F64, DType::F32}) {
    for (DType it : {DType::I64, DType::I32}) {
      Tensor w = randn({7, 5}, dt);
      std::vector<int64_t> ids = {3, 0, 6, 3, 1, 1};
      Tensor idt = from_vector(ids, {2, 3}, it);
      Tensor y = kernels::embedding_forward(w, idt);
      ASSERT_EQ(y.shape(), (Shape{2, 3, 5}));
      EXPECT_EQ(y.dtype(), dt);
      auto wv = w.to_vector<double>(), yv = y.to_vector<double>();
      for (size_t i = 0; i < ids.size(); ++i)
        for (size_t j = 0; j < 5; ++j) EXPECT_EQ(yv[i * 5 + j], wv[size_t(ids[i]) * 5 + j]);
    }
  }
}

TEST(EmbeddingKernel, ForwardStridedWeightAndIds) {
  Tensor base = randn({6, 8}, DType::F64);
  Tensor w = base.t();  // (8, 6), column stride 8: the strided row copy
  Tensor ids_base = from_vector<int64_t>({0, 7, 2, 5, 4, 1}, {2, 3}, DType::I64);
  Tensor ids = ids_base.t();  // non-contiguous ids (3, 2)
  Tensor y = kernels::embedding_forward(w, ids);
  ASSERT_EQ(y.shape(), (Shape{3, 2, 6}));
  auto iv = ids.to_vector<int64_t>();
  auto wv = w.to_vector<double>(), yv = y.to_vector<double>();
  for (size_t i = 0; i < iv.size(); ++i)
    for (size_t j = 0; j < 6; ++j) EXPECT_EQ(yv[i * 6 + j], wv[size_t(iv[i]) * 6 + j]);
  // 0-dim ids give a single row of shape (H).
  EXPECT_EQ(kernels::embedding_forward(w, scalar_tensor(3, DType::I64)).shape(), (Shape{6}));
}

TEST(EmbeddingKernel, BackwardScatterAddsWithPadding) {
  const int64_t V = 6, H = 4;
  std::vector<int64_t> ids = {2, 5, 2, 0, 2, 5, 3};
  Tensor g = randn({7, H}, DType::F64);
  for (int64_t pad : {int64_t(-1), int64_t(2), int64_t(4)}) {
    Tensor dw = kernels::embedding_backward(g, from_vector(ids, {7}, DType::I64), V, pad);
    ASSERT_EQ(dw.shape(), (Shape{V, H}));
    std::vector<double> want(size_t(V * H), 0.0);
    auto gv = g.to_vector<double>();
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] != pad)
        for (int64_t j = 0; j < H; ++j) want[size_t(ids[i] * H + j)] += gv[i * size_t(H) + size_t(j)];
    auto got = dw.to_vector<double>();
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-12) << "pad " << pad << " at " << k;
  }
}

// Many repeats of few ids: the result must not depend on the thread count, bit for bit.
TEST(EmbeddingKernel, BackwardIsDeterministicAcrossThreadCounts) {
  const int64_t V = 50, H = 96, n = 4096;
  Tensor ids = rand({n}, DType::F64, nullptr, 0, double(V)).to(DType::I64);
  Tensor g = randn({n, H}, DType::F32);
  int saved = num_threads();
  set_num_threads(1);
  auto a = kernels::embedding_backward(g, ids, V).to_vector<float>();
  set_num_threads(std::max(2, saved));
  auto b = kernels::embedding_backward(g, ids, V).to_vector<float>();
  set_num_threads(saved);
  EXPECT_EQ(a, b);
}

TEST(EmbeddingKernel, BadInputs) {
  Tensor w = randn({10, 3});
  std::string m = error_of([&] { kernels::embedding_forward(w, from_vector<int64_t>({1, 10}, {2}, DType::I64)); });
  EXPECT_THAT(m, HasSubstr("embedding"));
  EXPECT_THAT(m, HasSubstr("id 10"));
  EXPECT_THAT(m, HasSubstr("V = 10"));
  m = error_of([&] { kernels::embedding_forward(w, from_vector<int32_t>({-1}, {1}, DType::I32)); });
  EXPECT_THAT(m, HasSubstr("id -1"));
  m = error_of([&] { kernels::embedding_forward(w, zeros({2}, DType::F32)); });
  EXPECT_THAT(m, HasSubstr("embedding"));
  EXPECT_THAT(m, HasSubstr("f32"));
  m = error_of([&] { kernels::embedding_forward(randn({10}), zeros({2}, DType::I64)); });
  EXPECT_THAT(m, HasSubstr("2-D"));
  m = error_of([&] { kernels::embedding_backward(randn({2, 3}), zeros({3}, DType::I64), 10, -1); });
  EXPECT_THAT(m, HasSubstr("embedding_backward"));
  EXPECT_THAT(m, HasSubstr("[2, 3]"));
  m = error_of([&] { kernels::embedding_backward(randn({2, 3}), zeros({2}, DType::I64), 10, 10); });
  EXPECT_THAT(m, HasSubstr("padding_idx 10"));
  m = error_of([&] { kernels::embedding_backward(randn({1, 3}), from_vector<int64_t>({12}, {1}, DType::I64), 10, -1); });
  EXPECT_THAT(m, HasSubstr("id 12"));
}

}  // namespace
}  // namespace hymba
