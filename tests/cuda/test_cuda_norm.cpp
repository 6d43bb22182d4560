// RMSNorm CUDA kernels against the CPU kernels (kernels/norm.h).
//
// Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 1e-5 (the GPU sums rows in
// fp32 where the CPU uses double), f64 1e-12, bf16 2e-2 for tensors stored in bf16 (one bf16
// rounding of the output, relative 2^-9, on top of fp32 math). For bf16 the reference is the
// CPU kernel on the same values widened to f32, so the f32 statistic rstd is held to 1e-5.
#include <tuple>

#include "kernels/norm.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using cudatest::randn_cpu;

constexpr double kEps = 1e-6;

double rtol_for(DType dt) { return dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-5 : 2e-2; }
DType ref_dtype(DType dt) { return dt == DType::BF16 ? DType::F32 : dt; }

const std::vector<Shape> kShapes = {{1, 7}, {3, 1000}, {37, 3200}, {5, 32001}, {2, 3, 65}};

TEST(CudaNorm, ForwardMatchesCpu) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : kShapes) {
      const std::string what = str(dtype_name(dt), shape_str(s));
      Tensor x = randn_cpu(s, 1, dt, 2.0);
      Tensor w = randn_cpu({s.back()}, 2, dt);
      auto [y, rstd] = kernels::rms_norm_forward(x.to(Device::cuda()), w.to(Device::cuda()), kEps);
      auto [y_ref, rstd_ref] = kernels::cpu::rms_norm_forward(x.to(ref_dtype(dt)), w.to(ref_dtype(dt)), kEps);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(rstd.dtype(), rstd_ref.dtype());
      EXPECT_CUDA_CLOSE(y, y_ref, rtol_for(dt), "rms_norm y " + what);
      EXPECT_CUDA_CLOSE(rstd, rstd_ref, dt == DType::F64 ? 1e-12 : 1e-5, "rms_norm rstd " + what);
    }
  }
}

TEST(CudaNorm, BackwardMatchesCpuForEachOutputSubset) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : kShapes) {
      const DType rd = ref_dtype(dt);
      Tensor x = randn_cpu(s, 3, dt), w = randn_cpu({s.back()}, 4, dt), dy = randn_cpu(s, 5, dt);
      auto [y_ref, rstd_ref] = kernels::cpu::rms_norm_forward(x.to(rd), w.to(rd), kEps);
      // The CUDA backward gets its own forward's rstd, as in training.
      Tensor xc = x.to(Device::cuda()), wc = w.to(Device::cuda()), dyc = dy.to(Device::cuda());
      Tensor rstd = std::get<1>(kernels::rms_norm_forward(xc, wc, kEps));
      for (auto [need_dx, need_dw] : {std::pair{true, true}, std::pair{true, false}, std::pair{false, true}}) {
        const std::string what = str(dtype_name(dt), shape_str(s), " dx=", need_dx, " dw=", need_dw);
        auto [dx, dw] = kernels::rms_norm_backward(dyc, xc, wc, rstd, need_dx, need_dw);
        auto [dx_ref, dw_ref] = kernels::cpu::rms_norm_backward(dy.to(rd), x.to(rd), w.to(rd), rstd_ref, true, true);
        EXPECT_EQ(dx.defined(), need_dx) << what;
        EXPECT_EQ(dw.defined(), need_dw) << what;
        if (need_dx) EXPECT_CUDA_CLOSE(dx, dx_ref, rtol_for(dt), "rms_norm dx " + what);
        if (need_dw) EXPECT_CUDA_CLOSE(dw, dw_ref, rtol_for(dt), "rms_norm dw " + what);
      }
    }
  }
}

// More rows than dw partial blocks (the row ranges are uneven), and a strided x.
TEST(CudaNorm, ManyRowsAndStridedInput) {
  HYMBA_REQUIRE_GPU();
  Tensor base = randn_cpu({96, 1201}, 6);
  Tensor x = base.slice(1, 0, 1200, 2).t();  // (600, 96), non-contiguous
  Tensor w = randn_cpu({96}, 7), dy = randn_cpu({600, 96}, 8);
  auto [y_ref, rstd_ref] = kernels::cpu::rms_norm_forward(x, w, kEps);
  auto [dx_ref, dw_ref] = kernels::cpu::rms_norm_backward(dy, x, w, rstd_ref, true, true);
  Tensor xc = base.to(Device::cuda()).slice(1, 0, 1200, 2).t(), wc = w.to(Device::cuda());
  ASSERT_FALSE(xc.is_contiguous());
  auto [y, rstd] = kernels::rms_norm_forward(xc, wc, kEps);
  auto [dx, dw] = kernels::rms_norm_backward(dy.to(Device::cuda()), xc, wc, rstd, true, true);
  EXPECT_CUDA_CLOSE(y, y_ref, 1e-5, "y");
  EXPECT_CUDA_CLOSE(rstd, rstd_ref, 1e-5, "rstd");
  EXPECT_CUDA_CLOSE(dx, dx_ref, 1e-5, "dx");
  EXPECT_CUDA_CLOSE(dw, dw_ref, 1e-5, "dw");
  // 2000 rows over 512 partial blocks: the same bits on every run.
  Tensor x2 = randn_cpu({2000, 64}, 9).to(Device::cuda()), w2 = randn_cpu({64}, 10).to(Device::cuda());
  Tensor dy2 = randn_cpu({2000, 64}, 11).to(Device::cuda());
  Tensor r2 = std::get<1>(kernels::rms_norm_forward(x2, w2, kEps));
  Tensor dw_a = std::get<1>(kernels::rms_norm_backward(dy2, x2, w2, r2, false, true));
  Tensor dw_b = std::get<1>(kernels::rms_norm_backward(dy2, x2, w2, r2, true, true));
  EXPECT_EQ(dw_a.to(Device::cpu()).to_vector<float>(), dw_b.to(Device::cpu()).to_vector<float>());
}

// Backward rows held in registers with several items per thread (f32 D 6000: 1500 vectors
// over 512 threads; bf16 D 8192: 1024 vectors, the most it holds) and more rows than dw
// blocks (each block sums several rows' dw in registers), and rows just past that limit (bf16
// D 8200, f32 D 8196) on the two-read kernel; every output subset against the CPU.
TEST(CudaNorm, BackwardRowsInRegistersAndPastTheirLimit) {
  HYMBA_REQUIRE_GPU();
  const std::vector<std::pair<DType, Shape>> cases = {{DType::F32, {600, 6000}}, {DType::BF16, {530, 8192}},
                                                      {DType::BF16, {3, 8200}},  {DType::F32, {3, 8196}},
                                                      {DType::F64, {520, 1000}}, {DType::BF16, {515, 136}}};
  for (const auto& [dt, s] : cases) {
    const DType rd = ref_dtype(dt);
    Tensor x = randn_cpu(s, 12, dt), w = randn_cpu({s.back()}, 13, dt), dy = randn_cpu(s, 14, dt);
    auto [y_ref, rstd_ref] = kernels::cpu::rms_norm_forward(x.to(rd), w.to(rd), kEps);
    auto [dx_ref, dw_ref] = kernels::cpu::rms_norm_backward(dy.to(rd), x.to(rd), w.to(rd), rstd_ref, true, true);
    Tensor xc = x.to(Device::cuda()), wc = w.to(Device::cuda()), dyc = dy.to(Device::cuda());
    Tensor rstd = std::get<1>(kernels::rms_norm_forward(xc, wc, kEps));
    for (auto [need_dx, need_dw] : {std::pair{true, true}, std::pair{true, false}, std::pair{false, true}}) {
      const std::string what = str(dtype_name(dt), shape_str(s), " dx=", need_dx, " dw=", need_dw);
      auto [dx, dw] = kernels::rms_norm_backward(dyc, xc, wc, rstd, need_dx, need_dw);
      if (need_dx) EXPECT_CUDA_CLOSE(dx, dx_ref, rtol_for(dt), "rms_norm dx " + what);
      if (need_dw) EXPECT_CUDA_CLOSE(dw, dw_ref, rtol_for(dt), "rms_norm dw " + what);
    }
  }
}

TEST(CudaNorm, EmptyRowsAndBadInputs) {
  HYMBA_REQUIRE_GPU();
  Tensor x = zeros({0, 8}, TensorOptions(DType::F32, Device::cuda()));
  Tensor w = ones({8}, TensorOptions(DType::F32, Device::cuda()));
  auto [y, rstd] = kernels::rms_norm_forward(x, w, kEps);
  EXPECT_EQ(y.shape(), (Shape{0, 8}));
  auto [dx, dw] = kernels::rms_norm_backward(x, x, w, rstd, true, true);
  EXPECT_EQ(dw.to(Device::cpu()).to_vector<float>(), std::vector<float>(8, 0.f));
  EXPECT_THROW(kernels::rms_norm_forward(ones({2, 8}, TensorOptions(DType::F32, Device::cuda())),
                                         ones({7}, TensorOptions(DType::F32, Device::cuda())), kEps),
               Error);
  EXPECT_THROW(kernels::rms_norm_forward(ones({2, 8}, TensorOptions(DType::I32, Device::cuda())),
                                         ones({8}, TensorOptions(DType::I32, Device::cuda())), kEps),
               Error);
}

}  // namespace
}  // namespace hymba
