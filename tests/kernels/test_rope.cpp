// RoPE against the rotate-half definition written plainly in float64.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "kernels/rope.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

std::vector<double> rope_ref(const Tensor& x, double base, int64_t offset) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), dh = x.size(3), half = dh / 2;
  std::vector<double> in = x.to_vector<double>(), out(in.size());
  for (int64_t r = 0; r < B * H * T; ++r) {
    const int64_t t = r % T;
    for (int64_t j = 0; j < half; ++j) {
      const double ang = double(offset + t) * std::pow(base, -2.0 * double(j) / double(dh));
      const double x1 = in[size_t(r * dh + j)], x2 = in[size_t(r * dh + j + half)];
      out[size_t(r * dh + j)] = x1 * std::cos(ang) - x2 * std::sin(ang);
      out[size_t(r * dh + j + half)] = x2 * std::cos(ang) + x1 * std::sin(ang);
    }
  }
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - b[i]));
  return e;
}

TEST(RopeKernel, HymbaNtkBase) {
  const double want = 1e4 * std::pow(2.0 * 8192 / 2048 - 1, 64.0 / 62.0);
  const double got = kernels::rope_base(1e4, kernels::RopeType::NTK, 64, 8192, 2048);
  EXPECT_NEAR(got, want, 1e-9 * want);
  EXPECT_NEAR(got, 74535, 1.0);  // the figure in HYMBA_SPEC
  EXPECT_EQ(kernels::rope_base(1e4, kernels::RopeType::Default, 64), 1e4);
  EXPECT_EQ(kernels::rope_type_from_string("ntk"), kernels::RopeType::NTK);
  try {
    kernels::rope_type_from_string("yarn");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("yarn"));
  }
}

TEST(RopeKernel, ForwardMatchesDefinitionF64AndF32) {
  Generator g(1);
  for (int64_t offset : {0, 7, 1000}) {
    for (Shape s : {Shape{1, 1, 1, 2}, Shape{2, 3, 37, 8}, Shape{3, 2, 5, 64}}) {
      Tensor x = randn(s, DType::F64, &g);
      const double base = 74535.0;
      EXPECT_LT(max_abs_diff(kernels::rope_forward(x, base, offset).to_vector<double>(), rope_ref(x, base, offset)),
                1e-12);
      // fp32 angles: error grows with the position (|pos| * 2^-24 per angle), below 2e-4 at 1040.
      Tensor xf = x.to(DType::F32);
      EXPECT_LT(max_abs_diff(kernels::rope_forward(xf, base, offset).to_vector<double>(),
                             rope_ref(xf.to(DType::F64), base, offset)),
                offset < 1000 ? 2e-5 : 2e-4);
    }
  }
}

TEST(RopeKernel, OffsetEqualsLaterRowsOfFullSequence) {
  Generator g(2);
  Tensor x = randn({2, 2, 20, 16}, DType::F64, &g);
  Tensor full = kernels::rope_forward(x, 1e4, 0);
  Tensor tail = kernels::rope_forward(x.narrow(2, 12, 8), 1e4, 12);
  EXPECT_LT(max_abs_diff(tail.to_vector<double>(), full.narrow(2, 12, 8).to_vector<double>()), 1e-12);
}

TEST(RopeKernel, StridedInputAndBackwardIsInverse) {
  Generator g(3);
  // (B, T, H, dh) permuted to (B, H, T, dh), and a last dim that is not contiguous.
  Tensor x = randn({2, 9, 3, 8}, DType::F64, &g).permute({0, 2, 1, 3});
  Tensor y = kernels::rope_forward(x, 500.0, 3);
  EXPECT_LT(max_abs_diff(y.to_vector<double>(), rope_ref(x, 500.0, 3)), 1e-12);
  Tensor xt = randn({2, 3, 8, 9}, DType::F64, &g).transpose(2, 3);
  EXPECT_LT(max_abs_diff(kernels::rope_forward(xt, 500.0, 3).to_vector<double>(), rope_ref(xt, 500.0, 3)), 1e-12);
  EXPECT_LT(max_abs_diff(kernels::rope_backward(y, 500.0, 3).to_vector<double>(), x.to_vector<double>()), 1e-12);
}

TEST(RopeKernel, BadInputs) {
  try {
    kernels::rope_forward(zeros({2, 3, 5}), 1e4);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("rope"));
    EXPECT_THAT(std::string(e.what()), HasSubstr("[2, 3, 5]"));
  }
  try {
    kernels::rope_forward(zeros({1, 1, 2, 5}), 1e4);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("[1, 1, 2, 5]"));
  }
  EXPECT_THROW(kernels::rope_forward(zeros({1, 1, 2, 4}), 1e4, -1), Error);
}

}  // namespace
}  // namespace hymba
