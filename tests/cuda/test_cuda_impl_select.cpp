// The process-wide choice of CUDA scan and attention implementation (kernels/cuda_impl.h):
// set, read back, restored by a scope guard, named. Needs no GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kernels/cuda_impl.h"

namespace hymba::kernels::cuda {
namespace {

TEST(CudaImplSelect, GuardSetsAndRestores) {
  const ScanImpl scan0 = scan_impl();
  const AttentionImpl attn0 = attention_impl();
  {
    const ImplGuard<ScanImpl> s(ScanImpl::Blocked);
    const ImplGuard<AttentionImpl> a(AttentionImpl::Mma);
    EXPECT_EQ(scan_impl(), ScanImpl::Blocked);
    EXPECT_EQ(attention_impl(), AttentionImpl::Mma);
    {
      const ImplGuard<ScanImpl> inner(ScanImpl::Sequential);
      EXPECT_EQ(scan_impl(), ScanImpl::Sequential);
      EXPECT_EQ(attention_impl(), AttentionImpl::Mma);  // the other family is untouched
    }
    EXPECT_EQ(scan_impl(), ScanImpl::Blocked);
  }
  EXPECT_EQ(scan_impl(), scan0);
  EXPECT_EQ(attention_impl(), attn0);
  set_attention_impl(AttentionImpl::Mma);
  EXPECT_EQ(attention_impl(), AttentionImpl::Mma);
  set_attention_impl(attn0);
}

TEST(CudaImplSelect, DefaultsAreTheFastKernels) {
  // What a run gets with no environment: the kernels that passed on a GPU (kernels/cuda_impl.h).
  if (std::getenv("HYMBA_CUDA_SCAN") == nullptr) {
    EXPECT_EQ(scan_impl(), ScanImpl::Blocked);
  }
  if (std::getenv("HYMBA_CUDA_ATTENTION") == nullptr) {
    EXPECT_EQ(attention_impl(), AttentionImpl::Mma);
  }
  if (std::getenv("HYMBA_CUDA_SCAN_FORWARD") == nullptr) {
    EXPECT_EQ(scan_forward(), ScanForward::Steps16Half);
  }
  if (std::getenv("HYMBA_CUDA_SCAN_BACKWARD") == nullptr) {
    EXPECT_EQ(scan_backward(), ScanBackward::Steps8Half);
  }
  const ImplGuard<ScanForward> shape(ScanForward::Steps8Blocks4);
  EXPECT_EQ(scan_forward(), ScanForward::Steps8Blocks4);
  const ImplGuard<ScanBackward> bwd_shape(ScanBackward::Steps8);
  EXPECT_EQ(scan_backward(), ScanBackward::Steps8);
}

TEST(CudaImplSelect, NamesAreTheEnvironmentValues) {
  EXPECT_EQ(std::string(impl_name(ScanImpl::Sequential)), "sequential");
  EXPECT_EQ(std::string(impl_name(ScanImpl::Blocked)), "blocked");
  EXPECT_EQ(std::string(impl_name(AttentionImpl::Wmma)), "wmma");
  EXPECT_EQ(std::string(impl_name(AttentionImpl::Mma)), "mma");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps16)), "steps16");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps8States2)), "steps8x2");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps8Blocks4)), "steps8b4");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps16Half)), "steps16h");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps16Quarter)), "steps16q");
  EXPECT_EQ(std::string(impl_name(ScanForward::Steps16HalfGroup8)), "steps16hg");
  EXPECT_EQ(std::string(impl_name(ScanBackward::Steps8Half)), "steps8h");
  EXPECT_EQ(std::string(impl_name(ScanBackward::Steps8)), "steps8");
  EXPECT_EQ(std::string(impl_name(ScanBackward::Steps8Quarter)), "steps8q");
}

}  // namespace
}  // namespace hymba::kernels::cuda
