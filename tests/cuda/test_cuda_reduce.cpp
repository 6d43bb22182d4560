// CUDA reductions (sum, mean, max with indices, and their backwards) against the CPU kernels
// on the same inputs. Tolerances (norm-relative, tests/cuda/cuda_test_util.h): f32 1e-5 (the
// CPU sums in double, the GPU in fp32 with a tree: a few ulp of the largest output); f64
// 1e-12; bf16 inputs 2e-2 against the CPU run in f32 on the same rounded values. max and the
// backwards move values without arithmetic (or scale once) and are compared exactly or at
// 1e-6.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/reduce.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-5); }
using cudatest::ref_of;

const Device gpu = Device::cuda();

using View = std::function<Tensor(const Tensor&)>;
const View kSame = [](const Tensor& t) { return t; };

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "{";
  for (int64_t d : dims) s += std::to_string(d) + ",";
  return s + "}";
}

// sum and mean of view(x) over dims, with and without keepdim.
void check_sum_mean(const Tensor& x_base, DType dt, const std::vector<int64_t>& dims, const View& view = kSame) {
  const Tensor xg = view(x_base.to(gpu)), xr = view(x_base.to(ref_of(dt)));
  for (bool keepdim : {false, true}) {
    const std::string what = std::string(dtype_name(dt)) + " " + shape_str(xr.shape()) + " dims " + dims_str(dims) +
                             (keepdim ? " keepdim" : "");
    const Tensor s = kernels::sum(xg, dims, keepdim);
    ASSERT_TRUE(s.is_cuda());
    EXPECT_EQ(s.dtype(), dt);
    EXPECT_CUDA_CLOSE(s, kernels::sum(xr, dims, keepdim), rtol_of(dt), "sum " + what);
    EXPECT_CUDA_CLOSE(kernels::mean(xg, dims, keepdim), kernels::mean(xr, dims, keepdim), rtol_of(dt),
                      "mean " + what);
  }
}

TEST(CudaReduce, SumMeanLongRows) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = cudatest::randn_cpu({3, 1000003}, 1, dt);
    check_sum_mean(x, dt, {1});   // few long rows: chunked, two passes
    check_sum_mean(x, dt, {0});   // many columns of 3
    check_sum_mean(x, dt, {});    // everything into one value
    check_sum_mean(x, dt, {-1, 0});
  }
}

TEST(CudaReduce, SumMeanSmallShapes) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const Tensor x = cudatest::randn_cpu({7, 13, 5}, 2, dt);
    for (const std::vector<int64_t>& dims :
         {std::vector<int64_t>{0}, {1}, {2}, {-1}, {0, 2}, {1, 2}, {0, 1}, {}, {0, 1, 2}})
      check_sum_mean(x, dt, dims);
  }
  // Columns with chunking (bias gradients): few outputs, many reduced rows; batch dims
  // reduced together with the rows.
  check_sum_mean(cudatest::randn_cpu({4099, 37}, 3), DType::F32, {0});
  check_sum_mean(cudatest::randn_cpu({2, 3, 1025, 64}, 4, DType::BF16), DType::BF16, {0, 1, 2});
  // Many short rows (a warp per row), and rows just past the warp/block switch.
  check_sum_mean(cudatest::randn_cpu({20001, 3}, 5), DType::F32, {1});
  check_sum_mean(cudatest::randn_cpu({5, 1025}, 6), DType::F32, {1});
  // A 0-dim tensor and a single element.
  check_sum_mean(cudatest::randn_cpu({}, 7), DType::F32, {});
  check_sum_mean(cudatest::randn_cpu({1, 1}, 8), DType::F32, {0});
}

TEST(CudaReduce, SumMeanViews) {
  HYMBA_REQUIRE_GPU();
  const View t = [](const Tensor& x) { return x.t(); };
  const Tensor x = cudatest::randn_cpu({301, 77}, 10);
  for (const std::vector<int64_t>& dims : {std::vector<int64_t>{0}, {1}, {}}) check_sum_mean(x, DType::F32, dims, t);
  // Every other column of a wider tensor (strided inner dim).
  const Tensor w = cudatest::randn_cpu({40, 50}, 11);
  for (const std::vector<int64_t>& dims : {std::vector<int64_t>{0}, {1}})
    check_sum_mean(w, DType::F32, dims, [](const Tensor& v) { return v.slice(1, 1, 50, 2); });
  // A broadcast (stride-0) input.
  const Tensor b = cudatest::randn_cpu({1, 9}, 12);
  check_sum_mean(b, DType::F32, {0}, [](const Tensor& v) { return v.expand({33, 9}); });
}

// The header promises the same bits on every run (fixed chunking, no atomics): chunked rows,
// chunked columns and a full reduction, each run twice.
TEST(CudaReduce, SumIsBitwiseRepeatable) {
  HYMBA_REQUIRE_GPU();
  const Tensor x = cudatest::randn_cpu({3, 1000003}, 80).to(gpu);
  const Tensor c = cudatest::randn_cpu({4099, 37}, 81).to(gpu);
  for (const auto& [t, dims] : {std::pair{x, std::vector<int64_t>{1}}, std::pair{c, std::vector<int64_t>{0}},
                                std::pair{x, std::vector<int64_t>{}}}) {
    const std::vector<float> a = kernels::sum(t, dims).to_vector<float>();
    const std::vector<float> b = kernels::sum(t, dims).to_vector<float>();
    EXPECT_EQ(a, b) << "sum of " << shape_str(t.shape()) << " over " << dims_str(dims);
  }
}

TEST(CudaReduce, SumOfEmptyDimIsZero) {
  HYMBA_REQUIRE_GPU();
  const Tensor x = empty({3, 0}, TensorOptions(DType::F32, gpu));
  EXPECT_CUDA_CLOSE(kernels::sum(x, {1}), zeros({3}), 0.0, "sum over an empty dim");
  const std::vector<double> m = kernels::mean(x, {1}).to_vector<double>();
  for (double v : m) EXPECT_TRUE(std::isnan(v));
}

// max of view(x) along dim: values and indices exactly as the CPU's.
void check_max(const Tensor& x_base, DType dt, int64_t dim, const View& view = kSame) {
  const Tensor xg = view(x_base.to(gpu)), xr = view(x_base.to(ref_of(dt)));
  for (bool keepdim : {false, true}) {
    const std::string what = std::string(dtype_name(dt)) + " " + shape_str(xr.shape()) + " dim " +
                             std::to_string(dim) + (keepdim ? " keepdim" : "");
    auto [v, i] = kernels::max(xg, dim, keepdim);
    auto [v_ref, i_ref] = kernels::max(xr, dim, keepdim);
    EXPECT_EQ(i.dtype(), DType::I64);
    EXPECT_CUDA_CLOSE(v, v_ref, 0.0, "max values " + what);
    EXPECT_CUDA_CLOSE(i, i_ref, 0.0, "max indices " + what);
  }
}

TEST(CudaReduce, Max) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const Tensor x = cudatest::randn_cpu({7, 13, 5}, 20, dt);
    for (int64_t dim : {0, 1, 2, -1}) check_max(x, dt, dim);
  }
  const Tensor big = cudatest::randn_cpu({3, 1000003}, 21);
  check_max(big, DType::F32, 1);
  check_max(big, DType::F32, 0);
  check_max(cudatest::randn_cpu({50, 31}, 22), DType::F32, 1, [](const Tensor& v) { return v.t(); });
  check_max(cudatest::randn_cpu({}, 23), DType::F32, 0);
}

TEST(CudaReduce, MaxTiesAndNaN) {
  HYMBA_REQUIRE_GPU();
  // Values from {0..4}: every row has repeated maxima, the first must win; some rows hold
  // NaNs, the first NaN must win.
  const int64_t R = 37, C = 301;
  std::vector<float> v(size_t(R * C));
  for (size_t k = 0; k < v.size(); ++k) v[k] = float((k * 7919) % 5);
  for (int64_t r = 0; r < R; r += 4) {
    v[size_t(r * C + (r * 13) % C)] = std::numeric_limits<float>::quiet_NaN();
    v[size_t(r * C + (r * 29 + 100) % C)] = std::numeric_limits<float>::quiet_NaN();
  }
  const Tensor x = from_vector(v, {R, C});
  for (int64_t dim : {0, 1}) {
    auto [val, idx] = kernels::max(x.to(gpu), dim);
    auto [val_ref, idx_ref] = kernels::max(x, dim);
    EXPECT_CUDA_CLOSE(idx, idx_ref, 0.0, "max indices with ties and NaN, dim " + std::to_string(dim));
    const std::vector<double> a = val.to_vector<double>(), b = val_ref.to_vector<double>();
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k) {
      if (std::isnan(b[k]))
        EXPECT_TRUE(std::isnan(a[k])) << "dim " << dim << " output " << k;
      else
        EXPECT_EQ(a[k], b[k]) << "dim " << dim << " output " << k;
    }
  }
}

TEST(CudaReduce, SumBackward) {
  HYMBA_REQUIRE_GPU();
  const Shape in = {7, 13, 5};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const std::vector<int64_t>& dims : {std::vector<int64_t>{0}, {1}, {-1}, {0, 2}, {}}) {
      for (bool keepdim : {false, true}) {
        const Shape out_shape = kernels::cpu::sum(zeros(in), dims, keepdim).shape();
        const Tensor g = cudatest::randn_cpu(out_shape, 30, dt);
        for (double scale : {1.0, 1.0 / 7.0}) {
          const Tensor got = kernels::sum_backward(g.to(gpu), in, dims, keepdim, scale);
          const Tensor want = kernels::sum_backward(g.to(ref_of(dt)), in, dims, keepdim, scale);
          EXPECT_CUDA_CLOSE(got, want, dt == DType::F32 ? 1e-6 : 2e-2,
                            std::string("sum_backward ") + dtype_name(dt) + " dims " + dims_str(dims));
        }
      }
    }
  }
  // Long rows.
  const Tensor g = cudatest::randn_cpu({3}, 31);
  EXPECT_CUDA_CLOSE(kernels::sum_backward(g.to(gpu), {3, 1000003}, {1}, false, 1.0),
                    kernels::sum_backward(g, {3, 1000003}, {1}, false, 1.0), 0.0, "sum_backward (3, 1000003)");
}

TEST(CudaReduce, MaxBackward) {
  HYMBA_REQUIRE_GPU();
  const Shape in = {7, 13, 5};
  const Tensor x = cudatest::randn_cpu(in, 40);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t dim : {0, 1, 2}) {
      for (bool keepdim : {false, true}) {
        auto [v, idx] = kernels::max(x, dim, keepdim);
        const Tensor g = cudatest::randn_cpu(v.shape(), 41, dt);
        const Tensor got = kernels::max_backward(g.to(gpu), idx.to(gpu), in, dim, keepdim);
        const Tensor want = kernels::max_backward(g.to(ref_of(dt)), idx, in, dim, keepdim);
        EXPECT_CUDA_CLOSE(got, want, 0.0, std::string("max_backward ") + dtype_name(dt) + " dim " + std::to_string(dim));
      }
    }
  }
  // An index out of range fails as on the CPU.
  const Tensor g = cudatest::randn_cpu({7, 5}, 42);
  const Tensor bad = from_vector(std::vector<int64_t>(35, 13), {7, 5});
  EXPECT_THROW(kernels::max_backward(g.to(gpu), bad.to(gpu), in, 1, false), Error);
}

}  // namespace
}  // namespace hymba
