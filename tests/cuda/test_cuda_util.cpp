// The comparison rule every CUDA test relies on must itself catch what it is for: an error
// above the tolerance, and an element left unwritten (NaN from the poisoned allocation).
#include <gtest/gtest-spi.h>

#include <limits>

#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

TEST(CudaTestUtil, CompareMeasuresNormRelativeError) {
  Tensor want = from_vector(std::vector<float>{1.f, -4.f, 2.f}, {3}, DType::F32);
  Tensor got = from_vector(std::vector<float>{1.f, -4.f, 2.04f}, {3}, DType::F32);
  cudatest::Diff d = cudatest::compare(got, want);
  EXPECT_NEAR(d.rel, 0.04 / 4.0, 1e-6);
  EXPECT_EQ(d.nans, 0);
  EXPECT_NONFATAL_FAILURE(EXPECT_CUDA_CLOSE(got, want, 1e-3, "off by 1%"), "max abs err");
  EXPECT_CUDA_CLOSE(got, want, 2e-2, "within 2%");
}

TEST(CudaTestUtil, CompareFlagsUnwrittenElements) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor want = from_vector(std::vector<float>{1.f, 2.f, 3.f}, {3}, DType::F32);
  Tensor got = from_vector(std::vector<float>{1.f, nan, 3.f}, {3}, DType::F32);
  EXPECT_EQ(cudatest::compare(got, want).nans, 1);
  EXPECT_NONFATAL_FAILURE(EXPECT_CUDA_CLOSE(got, want, 1.0, "poisoned"), "NaN");
}

}  // namespace
}  // namespace hymba
