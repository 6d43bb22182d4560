// CUDA meta tokens (prepend, drop, the fused embedding + prepend, and their backwards) against
// the CPU kernel on the same inputs. Copies are compared exactly; the batch sum for dmeta and
// the table gradient add in the CPU's order, so f32 and f64 are compared exactly too. bf16
// inputs: 2e-2 against the CPU run in f32 on the same rounded values (the sums round once).
#include <gmock/gmock.h>

#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/meta_tokens.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using ::testing::HasSubstr;

const Device gpu = Device::cuda();

double sum_rtol(DType dt) { return dt == DType::BF16 ? 2e-2 : 0.0; }
using cudatest::ref_of;

void check_prepend_drop(int64_t B, int64_t M, int64_t L, int64_t H, DType dt, uint64_t seed) {
  const std::string what = str(dtype_name(dt), " B", B, " M", M, " L", L, " H", H);
  const Tensor meta = cudatest::randn_cpu({M, H}, seed, dt), x = cudatest::randn_cpu({B, L, H}, seed + 1, dt);
  const Tensor mr = meta.to(ref_of(dt)), xr = x.to(ref_of(dt));
  const Tensor y = kernels::prepend_meta_forward(meta.to(gpu), x.to(gpu));
  ASSERT_TRUE(y.is_cuda()) << what;
  EXPECT_EQ(y.dtype(), dt) << what;
  EXPECT_CUDA_CLOSE(y, kernels::cpu::prepend_meta_forward(mr, xr), 0.0, what + " prepend");

  const Tensor dy = cudatest::randn_cpu({B, M + L, H}, seed + 2, dt);
  for (bool need_meta : {true, false})
    for (bool need_x : {true, false}) {
      auto [dm_g, dx_g] = kernels::prepend_meta_backward(dy.to(gpu), M, need_meta, need_x);
      auto [dm_r, dx_r] = kernels::cpu::prepend_meta_backward(dy.to(ref_of(dt)), M, true, true);
      ASSERT_EQ(dm_g.defined(), need_meta) << what;
      ASSERT_EQ(dx_g.defined(), need_x) << what;
      if (need_meta) EXPECT_CUDA_CLOSE(dm_g, dm_r, sum_rtol(dt), what + " dmeta");
      if (need_x) EXPECT_CUDA_CLOSE(dx_g, dx_r, 0.0, what + " dx");
    }

  EXPECT_CUDA_CLOSE(kernels::drop_meta_forward(dy.to(gpu), M), kernels::cpu::drop_meta_forward(dy.to(ref_of(dt)), M),
                    0.0, what + " drop");
  EXPECT_CUDA_CLOSE(kernels::drop_meta_backward(x.to(gpu), M), kernels::cpu::drop_meta_backward(xr, M), 0.0,
                    what + " drop backward");
}

TEST(CudaMetaTokens, PrependAndDrop) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1;
  for (DType dt : {DType::F32, DType::BF16, DType::F64})
    for (int64_t M : {0, 1, 128}) {
      check_prepend_drop(1, M, 5, 33, dt, seed += 10);
      check_prepend_drop(3, M, 1, 130, dt, seed += 10);
    }
}

void check_embed(int64_t B, int64_t M, int64_t L, int64_t V, int64_t H, int64_t pad, DType dt, bool ids_i32,
                 uint64_t seed) {
  const std::string what = str(dtype_name(dt), " B", B, " M", M, " L", L, " V", V, " H", H, " pad", pad,
                                ids_i32 ? " i32" : " i64");
  const Tensor w = cudatest::randn_cpu({V, H}, seed, dt), meta = cudatest::randn_cpu({M, H}, seed + 1, dt);
  // Ids with repeats (a small vocabulary) and the padding id among them.
  Generator g(seed + 2);
  Tensor ids = rand({B, L}, DType::F64, &g, 0.0, double(V) - 0.5).to(DType::I64);
  if (ids_i32) ids = ids.to(DType::I32);
  const Tensor y = kernels::embed_with_meta_forward(w.to(gpu), ids.to(gpu), meta.to(gpu));
  ASSERT_TRUE(y.is_cuda()) << what;
  EXPECT_EQ(y.dtype(), dt) << what;
  EXPECT_CUDA_CLOSE(y, kernels::cpu::embed_with_meta_forward(w.to(ref_of(dt)), ids, meta.to(ref_of(dt))), 0.0,
                    what + " forward");

  const Tensor dy = cudatest::randn_cpu({B, M + L, H}, seed + 3, dt);
  for (bool need_w : {true, false})
    for (bool need_m : {true, false}) {
      auto [dw_g, dm_g] = kernels::embed_with_meta_backward(dy.to(gpu), ids.to(gpu), V, M, pad, need_w, need_m);
      auto [dw_r, dm_r] = kernels::cpu::embed_with_meta_backward(dy.to(ref_of(dt)), ids, V, M, pad, true, true);
      ASSERT_EQ(dw_g.defined(), need_w) << what;
      ASSERT_EQ(dm_g.defined(), need_m) << what;
      if (need_w) EXPECT_CUDA_CLOSE(dw_g, dw_r, sum_rtol(dt), what + " dweight");
      if (need_m) EXPECT_CUDA_CLOSE(dm_g, dm_r, sum_rtol(dt), what + " dmeta");
    }
}

TEST(CudaMetaTokens, EmbedWithMeta) {
  HYMBA_REQUIRE_GPU();
  uint64_t seed = 1000;
  for (DType dt : {DType::F32, DType::BF16, DType::F64})
    for (int64_t M : {0, 1, 128}) {
      check_embed(3, M, 50, 7, 130, 0, dt, false, seed += 10);   // many repeats, padding id 0
      check_embed(1, M, 1, 5, 33, -1, dt, true, seed += 10);     // one token, no padding id
      check_embed(2, M, 300, 1000, 300, 3, dt, true, seed += 10);  // rows wider than a block
    }
}

TEST(CudaMetaTokens, RejectsOutOfRangeIds) {
  HYMBA_REQUIRE_GPU();
  const Tensor w = zeros({4, 3}, TensorOptions(DType::F32, gpu)), meta = zeros({1, 3}, TensorOptions(DType::F32, gpu));
  const Tensor ids = from_vector<int64_t>({1, 2, 0, 4, 3, -1}, {2, 3}).to(gpu);
  try {
    kernels::embed_with_meta_forward(w, ids, meta);
    ADD_FAILURE() << "id 4 accepted";
  } catch (const Error& e) {
    // The first bad id in token order is reported, with its position.
    EXPECT_THAT(e.what(), HasSubstr("token id 4 at (1, 0)"));
  }
  EXPECT_THROW(kernels::embed_with_meta_backward(zeros({2, 4, 3}, TensorOptions(DType::F32, gpu)), ids, 4, 1),
               Error);
}

}  // namespace
}  // namespace hymba
