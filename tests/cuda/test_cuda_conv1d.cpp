// CUDA causal depthwise conv1d (forward, backward, step) against the CPU kernel on the same
// inputs. Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 1e-5 for y and dx (at
// most 4 taps, same order), 1e-4 for dweight/dbias (sums of B*L terms in another order: fp32
// per thread and a tree on the GPU, fp32 per row and double across rows on the CPU); f64
// 1e-12; bf16 inputs 2e-2 against the CPU run in f32 on the same rounded values.
#include <gmock/gmock.h>

#include <string>

#include "kernels/conv1d.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

const Device gpu = Device::cuda();

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-5); }
using cudatest::ref_of;

Tensor to_ref(const Tensor& t, DType dt) { return t.defined() ? t.to(ref_of(dt)) : Tensor(); }
Tensor to_gpu(const Tensor& t) { return t.defined() ? t.to(gpu) : Tensor(); }

void check_case(int64_t B, int64_t C, int64_t L, int64_t W, bool bias, bool silu, DType dt, uint64_t seed) {
  const std::string what = str(dtype_name(dt), " B", B, " C", C, " L", L, " W", W, bias ? " bias" : "",
                                silu ? " silu" : "");
  const double rtol = rtol_of(dt), rtol_param = dt == DType::F32 ? 1e-4 : rtol;
  const Tensor x = cudatest::randn_cpu({B, C, L}, seed, dt);
  const Tensor w = cudatest::randn_cpu({C, W}, seed + 1, dt, 0.5);
  const Tensor b = bias ? cudatest::randn_cpu({C}, seed + 2, dt) : Tensor();
  const Tensor dy = cudatest::randn_cpu({B, C, L}, seed + 3, dt);

  const Tensor y_r = kernels::cpu::causal_conv1d_forward(to_ref(x, dt), to_ref(w, dt), to_ref(b, dt), silu);
  const Tensor y_g = kernels::causal_conv1d_forward(x.to(gpu), w.to(gpu), to_gpu(b), silu);
  ASSERT_TRUE(y_g.is_cuda()) << what;
  EXPECT_EQ(y_g.dtype(), dt) << what;
  EXPECT_CUDA_CLOSE(y_g, y_r, rtol, what + " y");

  for (bool need_dx : {true, false}) {
    auto [dx_r, dw_r, db_r] =
        kernels::cpu::causal_conv1d_backward(to_ref(dy, dt), to_ref(x, dt), to_ref(w, dt), to_ref(b, dt), silu, true);
    auto [dx_g, dw_g, db_g] =
        kernels::causal_conv1d_backward(dy.to(gpu), x.to(gpu), w.to(gpu), to_gpu(b), silu, need_dx);
    ASSERT_EQ(dx_g.defined(), need_dx) << what;
    if (need_dx) EXPECT_CUDA_CLOSE(dx_g, dx_r, rtol, what + " dx");
    EXPECT_CUDA_CLOSE(dw_g, dw_r, rtol_param, what + " dweight");
    ASSERT_EQ(db_g.defined(), bias) << what;
    if (bias) EXPECT_CUDA_CLOSE(db_g, db_r, rtol_param, what + " dbias");
  }

  // Steps from a zero state reproduce the forward, and leave the last W-1 inputs as state.
  const Tensor state = zeros({B, C, W - 1}, TensorOptions(dt, gpu));
  const Tensor xg = x.to(gpu);
  for (int64_t t = 0; t < L; ++t) {
    const Tensor yt = kernels::causal_conv1d_step(state, xg.select(2, t), w.to(gpu), to_gpu(b), silu);
    EXPECT_CUDA_CLOSE(yt, y_r.select(2, t), rtol, what + " step " + std::to_string(t));
  }
  if (L >= W - 1) EXPECT_CUDA_CLOSE(state, x.narrow(2, L - (W - 1), W - 1), 0.0, what + " final conv state");
}

TEST(CudaConv1d, WidthsBiasSiluLengths) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1;
  for (int64_t W : {2, 3, 4})
    for (bool silu : {false, true})
      for (int64_t L : {1, 3, 257}) {
        check_case(1, 5, L, W, true, silu, DType::F32, seed += 10);
        check_case(3, 33, L, W, false, silu, DType::F32, seed += 10);
      }
}

TEST(CudaConv1d, OtherDtypes) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1000;
  for (int64_t W : {2, 4})
    for (bool silu : {false, true}) {
      check_case(3, 33, 257, W, true, silu, DType::BF16, seed += 10);
      check_case(2, 7, 65, W, true, silu, DType::F64, seed += 10);
    }
}

TEST(CudaConv1d, ManyRowsPerChannel) {
  HYMBA_REQUIRE_GPU();
  // B * L well above the block size: each thread sums several (b, t) into dweight.
  check_case(3, 6, 1000, 4, true, true, DType::F32, 2000);
}

// layers/ssm_mixer.cpp passes x as a transposed (B, L, C) activation: not contiguous.
TEST(CudaConv1d, TransposedInput) {
  HYMBA_REQUIRE_GPU();
  const Tensor x = cudatest::randn_cpu({2, 40, 7}, 2500), dy = cudatest::randn_cpu({2, 40, 7}, 2501);
  const Tensor w = cudatest::randn_cpu({7, 4}, 2502, DType::F32, 0.5), b = cudatest::randn_cpu({7}, 2503);
  const Tensor xr = x.transpose(1, 2), dyr = dy.transpose(1, 2);
  const Tensor xg = x.to(gpu).transpose(1, 2), dyg = dy.to(gpu).transpose(1, 2);
  ASSERT_FALSE(xg.is_contiguous());
  EXPECT_CUDA_CLOSE(kernels::causal_conv1d_forward(xg, w.to(gpu), b.to(gpu), true),
                    kernels::cpu::causal_conv1d_forward(xr, w, b, true), 1e-5, "transposed x: y");
  auto [dx_r, dw_r, db_r] = kernels::cpu::causal_conv1d_backward(dyr, xr, w, b, true, true);
  auto [dx_g, dw_g, db_g] = kernels::causal_conv1d_backward(dyg, xg, w.to(gpu), b.to(gpu), true, true);
  EXPECT_CUDA_CLOSE(dx_g, dx_r, 1e-5, "transposed x: dx");
  EXPECT_CUDA_CLOSE(dw_g, dw_r, 1e-4, "transposed x: dweight");
  EXPECT_CUDA_CLOSE(db_g, db_r, 1e-4, "transposed x: dbias");
}

TEST(CudaConv1d, BackwardIsDeterministic) {
  HYMBA_REQUIRE_GPU();
  const Tensor x = cudatest::randn_cpu({4, 16, 3000}, 3000).to(gpu);
  const Tensor w = cudatest::randn_cpu({16, 4}, 3001).to(gpu), b = cudatest::randn_cpu({16}, 3002).to(gpu);
  const Tensor dy = cudatest::randn_cpu({4, 16, 3000}, 3003).to(gpu);
  auto [dx1, dw1, db1] = kernels::causal_conv1d_backward(dy, x, w, b, true);
  auto [dx2, dw2, db2] = kernels::causal_conv1d_backward(dy, x, w, b, true);
  EXPECT_EQ(dw1.to_vector<float>(), dw2.to_vector<float>());
  EXPECT_EQ(db1.to_vector<float>(), db2.to_vector<float>());
}

}  // namespace
}  // namespace hymba
