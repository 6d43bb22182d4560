// CUDA matmul (cuBLASLt) against the CPU kernel (OpenBLAS) on the same inputs.
// Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 1e-4 with TF32 off (fp32
// products, summation order differs); f64 1e-12; bf16/f16 inputs 2e-2 against the CPU's f32
// product of the same rounded values (fp32 accumulation, output rounded to 16 bits); f32 with
// TF32 on 5e-3 (inputs rounded to a 10-bit mantissa).
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-4); }
using cudatest::ref_of;

const Device gpu = Device::cuda();

// Views are taken after the copy to the GPU (Tensor::to(Device) makes a contiguous copy).
using View = std::function<Tensor(const Tensor&)>;
const View kSame = [](const Tensor& t) { return t; };
const View kT = [](const Tensor& t) { return t.transpose(-2, -1); };

// Sets a process-wide matmul setting for a scope, whatever the environment says, and restores it.
template <typename T, T (*Get)(), void (*Set)(T)> class SettingGuard {
 public:
  explicit SettingGuard(T value) : prev_(Get()) { Set(value); }
  ~SettingGuard() { Set(prev_); }
  SettingGuard(const SettingGuard&) = delete;
  SettingGuard& operator=(const SettingGuard&) = delete;

 private:
  T prev_;
};
// TF32 for f32 products; the padding threshold of 16-bit products (kernels/matmul.h).
using Tf32Guard = SettingGuard<bool, kernels::cuda::allow_tf32, kernels::cuda::set_allow_tf32>;
using PadGuard = SettingGuard<double, kernels::cuda::gemm_pad_min_mnk, kernels::cuda::set_gemm_pad_min_mnk>;

std::string what(const Tensor& a, const Tensor& b, bool ta, bool tb, DType dt) {
  return std::string("matmul ") + dtype_name(dt) + " " + shape_str(a.shape()) + (ta ? "^T" : "") + " @ " +
         shape_str(b.shape()) + (tb ? "^T" : "");
}

// va(a) op @ vb(b) op on the GPU against the CPU.
void check(const Tensor& a_base, const Tensor& b_base, bool ta, bool tb, DType dt, const View& va = kSame,
           const View& vb = kSame, double rtol = 0) {
  const Tensor ag = va(a_base.to(gpu)), bg = vb(b_base.to(gpu));
  const Tensor ar = va(a_base.to(ref_of(dt))), br = vb(b_base.to(ref_of(dt)));
  const Tensor got = kernels::matmul(ag, bg, ta, tb);
  ASSERT_TRUE(got.is_cuda());
  EXPECT_EQ(got.dtype(), dt);
  EXPECT_CUDA_CLOSE(got, kernels::matmul(ar, br, ta, tb), rtol > 0 ? rtol : rtol_of(dt), what(ar, br, ta, tb, dt));
}

Shape mat(int64_t rows, int64_t cols, bool trans) { return trans ? Shape{cols, rows} : Shape{rows, cols}; }

struct MNK {
  int64_t m, n, k;
};
// Sizes from {1, 17, 64, 129, 1000}, mixed so each appears as M, N and K.
const MNK kSizes[] = {{1, 1, 1},    {17, 64, 129}, {129, 17, 1000}, {1000, 129, 17}, {64, 1000, 1},
                      {1, 1000, 64}, {1000, 1, 129}, {129, 129, 64},  {17, 1, 17}};

TEST(CudaMatmul, AllTransposeCombos) {
  HYMBA_REQUIRE_GPU();
  Tf32Guard tf32(false);
  uint64_t seed = 1;
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    for (const MNK& s : kSizes) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          const Tensor a = cudatest::randn_cpu(mat(s.m, s.k, ta), seed++, dt);
          const Tensor b = cudatest::randn_cpu(mat(s.k, s.n, tb), seed++, dt);
          check(a, b, ta, tb, dt);
        }
      }
    }
  }
}

TEST(CudaMatmul, ViewsWithoutCopies) {
  HYMBA_REQUIRE_GPU();
  Tf32Guard tf32(false);
  for (DType dt : {DType::F32, DType::BF16}) {
    // Transposed storage read through a transpose flag, with and without the op's own flag.
    check(cudatest::randn_cpu({129, 17}, 10, dt), cudatest::randn_cpu({129, 64}, 11, dt), false, false, dt, kT);
    check(cudatest::randn_cpu({17, 129}, 12, dt), cudatest::randn_cpu({1000, 129}, 13, dt), false, false, dt, kSame,
          kT);
    check(cudatest::randn_cpu({17, 129}, 14, dt), cudatest::randn_cpu({129, 64}, 15, dt), true, true, dt, kT, kT);
    // Column slices: leading dimension larger than the row (and an odd element offset).
    const View cols = [](const Tensor& t) { return t.narrow(1, 3, 64); };
    check(cudatest::randn_cpu({17, 70}, 16, dt), cudatest::randn_cpu({64, 33}, 17, dt), false, false, dt, cols);
    check(cudatest::randn_cpu({17, 64}, 18, dt), cudatest::randn_cpu({33, 70}, 19, dt), false, true, dt, kSame, cols);
    // No unit stride at all (every other element): copied first.
    const View every_other = [](const Tensor& t) { return t.slice(0, 0, t.size(0), 2).slice(1, 0, t.size(1), 2); };
    check(cudatest::randn_cpu({34, 258}, 20, dt), cudatest::randn_cpu({129, 9}, 21, dt), false, false, dt,
          every_other);
  }
}

TEST(CudaMatmul, Batched) {
  HYMBA_REQUIRE_GPU();
  Tf32Guard tf32(false);
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        // Same batch dims: one strided-batched gemm.
        check(cudatest::randn_cpu(ta ? Shape{2, 3, 129, 17} : Shape{2, 3, 17, 129}, 30, dt),
              cudatest::randn_cpu(tb ? Shape{2, 3, 64, 129} : Shape{2, 3, 129, 64}, 31, dt), ta, tb, dt);
        // A 2-D weight shared by the batch: folded into one tall gemm (a untransposed), or batched.
        check(cudatest::randn_cpu(ta ? Shape{2, 3, 129, 17} : Shape{2, 3, 17, 129}, 32, dt),
              cudatest::randn_cpu(tb ? Shape{64, 129} : Shape{129, 64}, 33, dt), ta, tb, dt);
        // Broadcast batch dims on both sides (stride 0 in each): looped gemms.
        check(cudatest::randn_cpu(ta ? Shape{2, 1, 64, 17} : Shape{2, 1, 17, 64}, 34, dt),
              cudatest::randn_cpu(tb ? Shape{1, 3, 1, 64} : Shape{1, 3, 64, 1}, 35, dt), ta, tb, dt);
        // Batch 1 and a 3-D left operand with a 4-D right one.
        check(cudatest::randn_cpu(ta ? Shape{1, 129, 1} : Shape{1, 1, 129}, 36, dt),
              cudatest::randn_cpu(tb ? Shape{1000, 129} : Shape{129, 1000}, 37, dt), ta, tb, dt);
        check(cudatest::randn_cpu(ta ? Shape{3, 64, 17} : Shape{3, 17, 64}, 38, dt),
              cudatest::randn_cpu(tb ? Shape{2, 3, 129, 64} : Shape{2, 3, 64, 129}, 39, dt), ta, tb, dt);
      }
    }
  }
  // A batched transposed view (attention's k^T), and a permuted batch that does not coalesce.
  const View tr = [](const Tensor& t) { return t.transpose(1, 2); };
  check(cudatest::randn_cpu({3, 64, 17}, 40), cudatest::randn_cpu({3, 64, 33}, 41), false, false, DType::F32, tr);
  const View perm = [](const Tensor& t) { return t.permute({1, 0, 2, 3}); };
  check(cudatest::randn_cpu({3, 2, 17, 64}, 42), cudatest::randn_cpu({2, 3, 64, 5}, 43), false, false, DType::F32,
        perm);
}

TEST(CudaMatmul, OutAccumulatesAndIgnoresOldContentsAtBetaZero) {
  HYMBA_REQUIRE_GPU();
  Tf32Guard tf32(false);
  for (DType dt : {DType::F32, DType::BF16}) {
    const DType r = ref_of(dt);
    const Tensor a = cudatest::randn_cpu({2, 129, 64}, 50, dt), b = cudatest::randn_cpu({17, 64}, 51, dt);
    const Tensor c0 = cudatest::randn_cpu({2, 129, 17}, 52, dt);
    // c = 0.5 a b^T + 1.5 c, into a contiguous c.
    Tensor cg = c0.to(gpu).clone(), cr = c0.to(r).clone();
    kernels::matmul_out(cg, a.to(gpu), b.to(gpu), false, true, 0.5, 1.5);
    kernels::matmul_out(cr, a.to(r), b.to(r), false, true, 0.5, 1.5);
    EXPECT_CUDA_CLOSE(cg, cr, rtol_of(dt), std::string("matmul_out beta 1.5 ") + dtype_name(dt));
    // Into a column-major c (a transposed view): computed as c^T = b a^T.
    Tensor store_g = c0.to(gpu).transpose(1, 2).contiguous(), store_r = c0.to(r).transpose(1, 2).contiguous();
    kernels::matmul_out(store_g.transpose(1, 2), a.to(gpu), b.to(gpu), false, true, 1.0, 1.0);
    kernels::matmul_out(store_r.transpose(1, 2), a.to(r), b.to(r), false, true, 1.0, 1.0);
    EXPECT_CUDA_CLOSE(store_g, store_r, rtol_of(dt), std::string("matmul_out column-major c ") + dtype_name(dt));
    // beta 0: NaN in c must not leak into the result.
    Tensor nan_c = full({2, 129, 17}, std::nan(""), TensorOptions(dt, gpu));
    kernels::matmul_out(nan_c, a.to(gpu), b.to(gpu), false, true, 1.0, 0.0);
    EXPECT_CUDA_CLOSE(nan_c, kernels::matmul(a.to(r), b.to(r), false, true), rtol_of(dt),
                      std::string("matmul_out beta 0 over NaN ") + dtype_name(dt));
    // Batched operands (no shared weight) into column-major c: one strided-batched gemm whose
    // operands and batch strides are swapped for C^T = B^T A^T.
    const Tensor bb = cudatest::randn_cpu({2, 64, 17}, 55, dt);
    Tensor bst_g = c0.to(gpu).transpose(1, 2).contiguous(), bst_r = c0.to(r).transpose(1, 2).contiguous();
    kernels::matmul_out(bst_g.transpose(1, 2), a.to(gpu), bb.to(gpu), false, false, 1.0, 0.5);
    kernels::matmul_out(bst_r.transpose(1, 2), a.to(r), bb.to(r), false, false, 1.0, 0.5);
    EXPECT_CUDA_CLOSE(bst_g, bst_r, rtol_of(dt), std::string("batched matmul_out column-major c ") + dtype_name(dt));
    // A column slice of a wider c (leading dimension 40, c at an odd element offset): written
    // in place, so cuBLASLt sees a C pointer aligned to only one element.
    Tensor wide_g = zeros({2, 129, 40}, TensorOptions(dt, gpu)), wide_r = zeros({2, 129, 40}, TensorOptions(r));
    kernels::matmul_out(wide_g.narrow(2, 3, 17), a.to(gpu), b.to(gpu), false, true, 1.0, 0.0);
    kernels::matmul_out(wide_r.narrow(2, 3, 17), a.to(r), b.to(r), false, true, 1.0, 0.0);
    EXPECT_CUDA_CLOSE(wide_g, wide_r, rtol_of(dt), std::string("matmul_out into a column slice ") + dtype_name(dt));
  }
  // An output whose batch entries cannot be written by cuBLAS (every other column): through a
  // temporary.
  const Tensor a = cudatest::randn_cpu({17, 64}, 53), b = cudatest::randn_cpu({64, 9}, 54);
  Tensor wide_g = zeros({17, 18}, TensorOptions(DType::F32, gpu)), wide_r = zeros({17, 18});
  kernels::matmul_out(wide_g.slice(1, 0, 18, 2), a.to(gpu), b.to(gpu), false, false, 1.0, 0.0);
  kernels::matmul_out(wide_r.slice(1, 0, 18, 2), a, b, false, false, 1.0, 0.0);
  EXPECT_CUDA_CLOSE(wide_g, wide_r, 1e-4, "matmul_out into every other column");
}

// Products with dimensions that are not multiples of 8, run on zero-padded copies (threshold
// 0: every such bf16/f16 product) in every transpose combination, with beta 0 over a
// NaN-filled c and beta 1.5, into a contiguous c and into a column slice of a wider one:
// against the CPU, and against the same product unpadded on the GPU.
TEST(CudaMatmul, ZeroPaddedProductsAreTheSameProduct) {
  HYMBA_REQUIRE_GPU();
  const MNK sizes[] = {{129, 1001, 64}, {64, 64, 1001}, {1001, 72, 64}, {17, 129, 1000}, {1, 9, 3}};
  uint64_t seed = 900;
  for (DType dt : {DType::BF16, DType::F16}) {
    const DType r = ref_of(dt);
    for (const MNK& s : sizes)
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const Tensor a = cudatest::randn_cpu(mat(s.m, s.k, ta), seed++, dt);
          const Tensor b = cudatest::randn_cpu(mat(s.k, s.n, tb), seed++, dt);
          const Tensor c0 = cudatest::randn_cpu({s.m, s.n}, seed++, dt);
          const std::string w = what(a, b, ta, tb, dt);
          Tensor plain;
          {
            PadGuard never(std::numeric_limits<double>::infinity());
            plain = kernels::matmul(a.to(gpu), b.to(gpu), ta, tb);
          }
          PadGuard always(0.0);
          const Tensor got = kernels::matmul(a.to(gpu), b.to(gpu), ta, tb);
          EXPECT_CUDA_CLOSE(got, kernels::matmul(a.to(r), b.to(r), ta, tb), rtol_of(dt), "padded " + w);
          EXPECT_CUDA_CLOSE(got, plain, rtol_of(dt), "padded against unpadded " + w);
          Tensor nan_c = full({s.m, s.n}, std::nan(""), TensorOptions(dt, gpu));
          kernels::matmul_out(nan_c, a.to(gpu), b.to(gpu), ta, tb, 1.0, 0.0);
          EXPECT_CUDA_CLOSE(nan_c, got, 0.0, "padded matmul_out beta 0 over NaN " + w);
          Tensor cg = c0.to(gpu).clone(), cr = c0.to(r).clone();
          kernels::matmul_out(cg, a.to(gpu), b.to(gpu), ta, tb, 0.5, 1.5);
          kernels::matmul_out(cr, a.to(r), b.to(r), ta, tb, 0.5, 1.5);
          EXPECT_CUDA_CLOSE(cg, cr, rtol_of(dt), "padded matmul_out beta 1.5 " + w);
          Tensor wide_g = zeros({s.m, s.n + 7}, TensorOptions(dt, gpu)), wide_r = zeros({s.m, s.n + 7}, TensorOptions(r));
          kernels::matmul_out(wide_g.narrow(1, 3, s.n), a.to(gpu), b.to(gpu), ta, tb, 1.0, 0.0);
          kernels::matmul_out(wide_r.narrow(1, 3, s.n), a.to(r), b.to(r), ta, tb, 1.0, 0.0);
          EXPECT_CUDA_CLOSE(wide_g, wide_r, rtol_of(dt), "padded matmul_out into a column slice " + w);
        }
  }
}

TEST(CudaMatmul, EmptyInnerDim) {
  HYMBA_REQUIRE_GPU();
  const Tensor a = zeros({5, 0}, TensorOptions(DType::F32, gpu)), b = zeros({0, 7}, TensorOptions(DType::F32, gpu));
  EXPECT_CUDA_CLOSE(kernels::matmul(a, b), zeros({5, 7}), 0.0, "K = 0 gives zeros");
  const Tensor c0 = cudatest::randn_cpu({5, 7}, 60);
  Tensor c = c0.to(gpu).clone();
  kernels::matmul_out(c, a, b, false, false, 1.0, 2.0);
  Tensor want = c0.clone();
  kernels::matmul_out(want, zeros({5, 0}), zeros({0, 7}), false, false, 1.0, 2.0);
  EXPECT_CUDA_CLOSE(c, want, 1e-6, "K = 0 with beta 2 scales c");
}

TEST(CudaMatmul, Tf32OptIn) {
  HYMBA_REQUIRE_GPU();
  const Tensor a = cudatest::randn_cpu({1000, 1000}, 70), b = cudatest::randn_cpu({1000, 129}, 71);
  const Tensor want = kernels::matmul(a, b);
  {
    Tf32Guard tf32(true);
    EXPECT_TRUE(kernels::cuda::allow_tf32());
    check(a, b, false, false, DType::F32, kSame, kSame, 5e-3);
    check(cudatest::randn_cpu({3, 129, 64}, 72), cudatest::randn_cpu({17, 64}, 73), false, true, DType::F32, kSame,
          kSame, 5e-3);
  }
  Tf32Guard tf32(false);
  EXPECT_CUDA_CLOSE(kernels::matmul(a.to(gpu), b.to(gpu)), want, 1e-4, "same product with TF32 off");
}

}  // namespace
}  // namespace hymba
