// CUDA RoPE (forward and backward) against the CPU kernel on the same inputs. Both build the
// same fp32 angle (fp32 position times fp32 inv_freq) and take cos/sin in double, so f32
// agrees to a few ulp: tolerance 1e-6 (norm-relative, tests/cuda/cuda_test_util.h); f64
// 1e-12; bf16 inputs 2e-2 against the CPU run in f32 on the same rounded values.
#include <array>
#include <string>

#include "kernels/rope.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

const Device gpu = Device::cuda();

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-6); }
using cudatest::ref_of;

// x_gpu may be a strided view; x_ref holds the same values on the CPU.
void check(const Tensor& x_gpu, const Tensor& x_ref, DType dt, double base, int64_t offset, const std::string& what) {
  const double rtol = rtol_of(dt);
  const Tensor y = kernels::rope_forward(x_gpu, base, offset);
  ASSERT_TRUE(y.is_cuda()) << what;
  EXPECT_EQ(y.dtype(), dt) << what;
  EXPECT_TRUE(y.is_contiguous()) << what;
  EXPECT_CUDA_CLOSE(y, kernels::cpu::rope(x_ref, base, offset, false), rtol, what + " forward");
  EXPECT_CUDA_CLOSE(kernels::rope_backward(x_gpu, base, offset), kernels::cpu::rope(x_ref, base, offset, true), rtol,
                    what + " backward");
}

TEST(CudaRope, ShapesOffsetsDtypes) {
  HYMBA_REQUIRE_GPU();
  const double ntk = kernels::rope_base(1e4, kernels::RopeType::NTK, 64, 8192, 2048);
  uint64_t seed = 1;
  for (DType dt : {DType::F32, DType::BF16, DType::F64})
    for (int64_t offset : {int64_t(0), int64_t(1000)})
      for (auto [B, H, T, dh] : {std::array<int64_t, 4>{1, 1, 1, 2}, std::array<int64_t, 4>{3, 5, 1, 64},
                                 std::array<int64_t, 4>{2, 25, 37, 64}, std::array<int64_t, 4>{1, 3, 130, 6}})
        for (double base : {1e4, ntk}) {
          const Tensor x = cudatest::randn_cpu({B, H, T, dh}, seed++, dt);
          check(x.to(gpu), x.to(ref_of(dt)), dt, base, offset,
                str(dtype_name(dt), " x ", shape_str(x.shape()), " offset ", offset, " base ", base));
        }
}

TEST(CudaRope, StridedInput) {
  HYMBA_REQUIRE_GPU();
  // q read straight out of a fused (B, T, 3 * H * dh) projection: (B, H, T, dh) with the last
  // dim dense and the others strided.
  const int64_t B = 2, T = 9, H = 3, dh = 8;
  const Tensor fused = cudatest::randn_cpu({B, T, 3 * H * dh}, 50);
  auto q_of = [&](const Tensor& f) { return f.narrow(2, H * dh, H * dh).view({B, T, H, dh}).permute({0, 2, 1, 3}); };
  const Tensor qg = q_of(fused.to(gpu)), qr = q_of(fused);
  ASSERT_FALSE(qg.is_contiguous());
  check(qg, qr, DType::F32, 1e4, 7, "strided q");
  // A last dim that is not dense is copied first.
  const Tensor xt = cudatest::randn_cpu({1, 2, 4, 6}, 51);
  check(xt.to(gpu).transpose(2, 3).contiguous().transpose(2, 3), xt, DType::F32, 1e4, 0, "transposed x");
}

TEST(CudaRope, BackwardUndoesForward) {
  HYMBA_REQUIRE_GPU();
  const Tensor x = cudatest::randn_cpu({2, 3, 50, 64}, 60).to(gpu);
  const Tensor back = kernels::rope_backward(kernels::rope_forward(x, 1e4, 1000), 1e4, 1000);
  EXPECT_CUDA_CLOSE(back, x, 1e-5, "rope_backward(rope_forward(x))");
}

}  // namespace
}  // namespace hymba
