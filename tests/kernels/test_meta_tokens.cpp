// Meta-token kernels against plain float64 loops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "core/rng.h"
#include "kernels/meta_tokens.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

TEST(MetaTokensKernel, PrependAndDropForwardBackward) {
  Generator g(1);
  for (auto [B, M, L, H] : std::vector<std::array<int64_t, 4>>{{1, 0, 3, 4}, {3, 2, 5, 70}, {2, 4, 1, 1}}) {
    Tensor meta = randn({M, H}, DType::F64, &g), x = randn({B, L, H}, DType::F64, &g);
    Tensor y = kernels::prepend_meta_forward(meta, x);
    ASSERT_EQ(y.shape(), Shape({B, M + L, H}));
    auto mv = meta.to_vector<double>(), xv = x.to_vector<double>(), yv = y.to_vector<double>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < M + L; ++t)
        for (int64_t h = 0; h < H; ++h)
          ASSERT_EQ(yv[size_t((b * (M + L) + t) * H + h)],
                    t < M ? mv[size_t(t * H + h)] : xv[size_t((b * L + t - M) * H + h)]);
    EXPECT_EQ(kernels::drop_meta_forward(y, M).to_vector<double>(), xv);

    Tensor dy = randn({B, M + L, H}, DType::F64, &g);
    auto dyv = dy.to_vector<double>();
    auto [dmeta, dx] = kernels::prepend_meta_backward(dy, M);
    std::vector<double> want_meta(size_t(M * H), 0.0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < M; ++t)
        for (int64_t h = 0; h < H; ++h) want_meta[size_t(t * H + h)] += dyv[size_t((b * (M + L) + t) * H + h)];
    auto dmv = dmeta.to_vector<double>();
    for (size_t i = 0; i < want_meta.size(); ++i) EXPECT_NEAR(dmv[i], want_meta[i], 1e-12);
    EXPECT_EQ(dx.to_vector<double>(), kernels::drop_meta_forward(dy, M).to_vector<double>());
    Tensor padded = kernels::drop_meta_backward(x, M);
    auto pv = padded.to_vector<double>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < M + L; ++t)
        for (int64_t h = 0; h < H; ++h)
          ASSERT_EQ(pv[size_t((b * (M + L) + t) * H + h)], t < M ? 0.0 : xv[size_t((b * L + t - M) * H + h)]);
  }
}

TEST(MetaTokensKernel, EmbedWithMetaForwardBackward) {
  Generator g(2);
  const int64_t V = 7, H = 130, M = 3, B = 2, L = 6, pad = 0;
  Tensor w = randn({V, H}, DType::F64, &g), meta = randn({M, H}, DType::F64, &g);
  std::vector<int64_t> ids = {1, 3, 3, 0, 6, 1, 2, 2, 2, 0, 5, 1};
  Tensor idt = from_vector<int64_t>(ids, {B, L});
  Tensor y = kernels::embed_with_meta_forward(w, idt.to(DType::I32), meta);
  auto wv = w.to_vector<double>(), mv = meta.to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < M + L; ++t)
      for (int64_t h = 0; h < H; ++h)
        ASSERT_EQ(yv[size_t((b * (M + L) + t) * H + h)],
                  t < M ? mv[size_t(t * H + h)] : wv[size_t(ids[size_t(b * L + t - M)] * H + h)]);
  Tensor dy = randn({B, M + L, H}, DType::F64, &g);
  auto dyv = dy.to_vector<double>();
  auto [dw, dmeta] = kernels::embed_with_meta_backward(dy, idt, V, M, pad);
  std::vector<double> want_w(size_t(V * H), 0.0), want_m(size_t(M * H), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < M + L; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const double d = dyv[size_t((b * (M + L) + t) * H + h)];
        if (t < M) {
          want_m[size_t(t * H + h)] += d;
        } else if (ids[size_t(b * L + t - M)] != pad) {
          want_w[size_t(ids[size_t(b * L + t - M)] * H + h)] += d;
        }
      }
  auto dwv = dw.to_vector<double>(), dmv = dmeta.to_vector<double>();
  for (size_t i = 0; i < want_w.size(); ++i) ASSERT_NEAR(dwv[i], want_w[i], 1e-12) << i;
  for (size_t i = 0; i < want_m.size(); ++i) ASSERT_NEAR(dmv[i], want_m[i], 1e-12) << i;
}

TEST(MetaTokensKernel, BadInputs) {
  auto msg_of = [](auto f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  std::string m = msg_of([] { kernels::prepend_meta_forward(zeros({2, 5}), zeros({1, 3, 4})); });
  EXPECT_THAT(m, HasSubstr("prepend_meta"));
  EXPECT_THAT(m, HasSubstr("[2, 5]"));
  EXPECT_THAT(m, HasSubstr("[1, 3, 4]"));
  m = msg_of([] {
    kernels::embed_with_meta_forward(zeros({4, 3}), from_vector<int64_t>({1, 4}, {1, 2}), zeros({1, 3}));
  });
  EXPECT_THAT(m, HasSubstr("embed_with_meta"));
  EXPECT_THAT(m, HasSubstr("token id 4"));
  EXPECT_THAT(m, HasSubstr("[4, 3]"));
  m = msg_of([] { kernels::drop_meta_forward(zeros({1, 3, 4}), 5); });
  EXPECT_THAT(m, HasSubstr("drop_meta"));
  EXPECT_THAT(m, HasSubstr("[1, 3, 4]"));
}

}  // namespace
}  // namespace hymba
