// AdamW and sum-of-squares CUDA kernels against the CPU kernels (kernels/adamw.h).
//
// Tolerances: the CUDA update evaluates the CPU kernel's expression term for term with every
// operation rounded on its own (no FMA), so it is compared bit for bit with that expression
// evaluated on the host without contraction (volatile temporaries). The CPU kernel itself is
// compiled by GCC with -march=native, which fuses some multiply-adds, so against it f32 is
// held to 1e-6 norm-relative after several steps and f64 to 1e-14. The squared norms are
// double sums of exact squares in another order: 1e-12.
#include <cmath>

#include "kernels/adamw.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using cudatest::randn_cpu;

double rtol_for(DType dt) { return dt == DType::F64 ? 1e-14 : 1e-6; }

// Uniform [0, hi) values (second moments are non-negative), made on the CPU.
Tensor rand_cpu(const Shape& shape, uint64_t seed, DType dt, double hi) {
  Generator g(seed);
  return rand(shape, DType::F32, &g, 0.0, hi).to(dt);
}

struct State {
  std::vector<Tensor> p, g, m, v;
};

// Parameters of the given sizes with moments from a previous (fake) history, so that every
// term of the update matters from the first step.
State make_state(const std::vector<int64_t>& sizes, DType dt, uint64_t seed) {
  State s;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint64_t k = seed + 10 * i;
    s.p.push_back(randn_cpu({sizes[i]}, k, dt));
    s.g.push_back(randn_cpu({sizes[i]}, k + 1, dt, 0.5));
    s.m.push_back(randn_cpu({sizes[i]}, k + 2, dt, 0.1));
    s.v.push_back(rand_cpu({sizes[i]}, k + 3, dt, 0.01));
  }
  return s;
}

// Elements that differ (bitwise, as doubles) between a tensor and a reference; a count
// rather than EXPECT_EQ on the vectors, which would print a million elements.
int64_t mismatches(const Tensor& got, const std::vector<double>& want) {
  const std::vector<double> g = got.to(Device::cpu()).to_vector<double>();
  if (g.size() != want.size()) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < g.size(); ++i) n += g[i] != want[i] ? 1 : 0;
  return n;
}

std::vector<Tensor> to_cuda(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.to(Device::cuda()));
  return out;
}

// One AdamW step on host vectors, each operation rounded to T on its own: volatile
// temporaries keep the compiler from fusing any multiply-add. Coefficients as in
// kernels/cuda/adamw.cu (double, rounded once to T).
template <typename T>
void adamw_unfused(std::vector<T>& p, const std::vector<T>& g, std::vector<T>& m, std::vector<T>& v, double lr,
                   double beta1, double beta2, double eps, double wd, int64_t step) {
  const volatile double lr_wd = lr * wd;
  const volatile double bc1 = 1.0 - std::pow(beta1, double(step));
  const volatile double bc2 = 1.0 - std::pow(beta2, double(step));
  const T decay = T(1.0 - lr_wd), b1 = T(beta1), omb1 = T(1.0 - beta1), b2 = T(beta2), omb2 = T(1.0 - beta2);
  const T step_size = T(lr / bc1), inv_sqrt_bc2 = T(1.0 / std::sqrt(double(bc2))), e = T(eps);
  for (size_t i = 0; i < p.size(); ++i) {
    volatile T pi = p[i] * decay;
    volatile T t1 = b1 * m[i], t2 = omb1 * g[i];
    volatile T mi = t1 + t2;
    volatile T t3 = b2 * v[i], t4 = omb2 * g[i];
    volatile T t5 = t4 * g[i];
    volatile T vi = t3 + t5;
    volatile T s = std::sqrt(T(vi));
    volatile T t6 = s * inv_sqrt_bc2;
    volatile T den = t6 + e;
    volatile T t7 = step_size * mi;
    volatile T t8 = t7 / den;
    p[i] = pi - t8;
    m[i] = mi;
    v[i] = vi;
  }
}

TEST(CudaAdamW, MatchesUnfusedExpressionBitForBit) {
  HYMBA_REQUIRE_GPU();
  const std::vector<int64_t> sizes = {1, 7, 65537, 1000003};
  for (DType dt : {DType::F32, DType::F64}) {
    State s = make_state(sizes, dt, 60);
    std::vector<Tensor> p = to_cuda(s.p), m = to_cuda(s.m), v = to_cuda(s.v);
    std::vector<std::vector<double>> pr, mr, vr;  // the reference, stored as double
    for (size_t i = 0; i < sizes.size(); ++i) {
      pr.push_back(s.p[i].to_vector<double>());
      mr.push_back(s.m[i].to_vector<double>());
      vr.push_back(s.v[i].to_vector<double>());
    }
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<Tensor> g;
      for (size_t i = 0; i < sizes.size(); ++i) g.push_back(randn_cpu({sizes[i]}, 300 + 7 * i + uint64_t(step), dt));
      // Tensors 0 and 1 one call each (by-value kernel), 2 and 3 in one multi call (chunk table).
      for (size_t i = 0; i < 2; ++i)
        kernels::adamw_step(p[i], g[i].to(Device::cuda()), m[i], v[i], 2e-3, 0.9, 0.95, 1e-8, 0.1, step);
      kernels::adamw_step_multi({p[2], p[3]}, {g[2].to(Device::cuda()), g[3].to(Device::cuda())}, {m[2], m[3]},
                                {v[2], v[3]}, 2e-3, 0.9, 0.95, 1e-8, 0.1, step);
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (dt == DType::F32) {
          std::vector<float> pf(pr[i].begin(), pr[i].end()), mf(mr[i].begin(), mr[i].end()),
              vf(vr[i].begin(), vr[i].end()), gf = g[i].to_vector<float>();
          adamw_unfused(pf, gf, mf, vf, 2e-3, 0.9, 0.95, 1e-8, 0.1, step);
          pr[i].assign(pf.begin(), pf.end());
          mr[i].assign(mf.begin(), mf.end());
          vr[i].assign(vf.begin(), vf.end());
        } else {
          adamw_unfused(pr[i], g[i].to_vector<double>(), mr[i], vr[i], 2e-3, 0.9, 0.95, 1e-8, 0.1, step);
        }
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string what = str(dtype_name(dt), " tensor ", i, " n=", sizes[i]);
      EXPECT_EQ(mismatches(p[i], pr[i]), 0) << "param " << what;
      EXPECT_EQ(mismatches(m[i], mr[i]), 0) << "exp_avg " << what;
      EXPECT_EQ(mismatches(v[i], vr[i]), 0) << "exp_avg_sq " << what;
    }
  }
}

TEST(CudaAdamW, SingleTensorStepsMatchCpu) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::F64}) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(65537), int64_t(200003)}) {
      State s = make_state({n}, dt, 1);
      Tensor p = s.p[0].to(Device::cuda()), m = s.m[0].to(Device::cuda()), v = s.v[0].to(Device::cuda());
      for (int64_t step = 1; step <= 4; ++step) {
        Tensor g = randn_cpu({n}, 100 + uint64_t(step), dt, 0.5);
        kernels::adamw_step(p, g.to(Device::cuda()), m, v, 3e-3, 0.9, 0.95, 1e-8, 0.1, step);
        kernels::cpu::adamw_step(s.p[0], g, s.m[0], s.v[0], 3e-3, 0.9, 0.95, 1e-8, 0.1, step);
      }
      const std::string what = str(dtype_name(dt), " n=", n);
      EXPECT_CUDA_CLOSE(p, s.p[0], rtol_for(dt), "param " + what);
      EXPECT_CUDA_CLOSE(m, s.m[0], rtol_for(dt), "exp_avg " + what);
      EXPECT_CUDA_CLOSE(v, s.v[0], rtol_for(dt), "exp_avg_sq " + what);
    }
  }
}

TEST(CudaAdamW, StridedOperands) {
  HYMBA_REQUIRE_GPU();
  Tensor p = randn_cpu({6, 5}, 20), g_base = randn_cpu({5, 12}, 21), m = randn_cpu({6, 5}, 22, DType::F32, 0.1);
  Tensor v = rand_cpu({5, 6}, 23, DType::F32, 0.01);
  // Transposed param and exp_avg, a sliced grad, a contiguous exp_avg_sq: as views on CUDA.
  Tensor pc = p.to(Device::cuda()).t(), mc = m.to(Device::cuda()).t(), vc = v.to(Device::cuda());
  Tensor gc = g_base.to(Device::cuda()).slice(1, 0, 12, 2);
  Tensor pr = p.t(), mr = m.t(), vr = v.clone(), gr = g_base.slice(1, 0, 12, 2);
  ASSERT_FALSE(pc.is_contiguous());
  kernels::adamw_step(pc, gc, mc, vc, 1e-2, 0.9, 0.95, 1e-8, 0.1, 4);
  kernels::cpu::adamw_step(pr, gr, mr, vr, 1e-2, 0.9, 0.95, 1e-8, 0.1, 4);
  EXPECT_CUDA_CLOSE(pc, pr, 1e-6, "strided param");
  EXPECT_CUDA_CLOSE(mc, mr, 1e-6, "strided exp_avg");
  EXPECT_CUDA_CLOSE(vc, vr, 1e-6, "exp_avg_sq");
}

TEST(CudaAdamW, MultiTensorMatchesCpuAndSingleCalls) {
  HYMBA_REQUIRE_GPU();
  const std::vector<int64_t> sizes = {1, 3, 1000003, 0, 65536};
  for (DType dt : {DType::F32, DType::F64}) {
    State ref = make_state(sizes, dt, 30);
    State one = make_state(sizes, dt, 30);
    std::vector<Tensor> p = to_cuda(ref.p), m = to_cuda(ref.m), v = to_cuda(ref.v);
    std::vector<Tensor> p1 = to_cuda(one.p), m1 = to_cuda(one.m), v1 = to_cuda(one.v);
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<Tensor> g;
      for (size_t i = 0; i < sizes.size(); ++i) g.push_back(randn_cpu({sizes[i]}, 200 + 7 * i + uint64_t(step), dt));
      std::vector<Tensor> gc = to_cuda(g);
      kernels::adamw_step_multi(p, gc, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
      kernels::cpu::adamw_step_multi(ref.p, g, ref.m, ref.v, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
      for (size_t i = 0; i < sizes.size(); ++i)
        kernels::adamw_step(p1[i], gc[i], m1[i], v1[i], 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string what = str(dtype_name(dt), " tensor ", i, " n=", sizes[i]);
      EXPECT_CUDA_CLOSE(p[i], ref.p[i], rtol_for(dt), "param " + what);
      EXPECT_CUDA_CLOSE(m[i], ref.m[i], rtol_for(dt), "exp_avg " + what);
      EXPECT_CUDA_CLOSE(v[i], ref.v[i], rtol_for(dt), "exp_avg_sq " + what);
      // Both kernels inline the same unfused update: same bits.
      EXPECT_EQ(mismatches(p[i], p1[i].to(Device::cpu()).to_vector<double>()), 0) << what;
      EXPECT_EQ(mismatches(v[i], v1[i].to(Device::cpu()).to_vector<double>()), 0) << what;
    }
  }
}

TEST(CudaAdamW, BadInputsThrow) {
  HYMBA_REQUIRE_GPU();
  const TensorOptions o(DType::F32, Device::cuda());
  Tensor p = zeros({3, 4}, o), g = zeros({3, 4}, o), m = zeros({3, 4}, o), v = zeros({3, 4}, o);
  EXPECT_THROW(kernels::adamw_step(p, zeros({4, 3}, o), m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1), Error);
  EXPECT_THROW(kernels::adamw_step(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 0), Error);
  EXPECT_THROW(kernels::adamw_step(p, g, zeros({3, 4}, TensorOptions(DType::F64, Device::cuda())), v, 1e-3, 0.9, 0.95,
                                   1e-8, 0.0, 1),
               Error);
  EXPECT_THROW(kernels::adamw_step_multi({p, p}, {g}, {m, m}, {v, v}, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1), Error);
}

TEST(CudaSumOfSquares, MatchesCpuAndIsDeterministic) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(70001), int64_t(1000003)}) {
      Tensor x = randn_cpu({n}, 40 + uint64_t(n), dt);
      Tensor xc = x.to(Device::cuda());
      const double want = kernels::cpu::sum_of_squares(x.to(dt == DType::BF16 ? DType::F32 : dt));
      const double got = kernels::sum_of_squares(xc);
      EXPECT_NEAR(got, want, 1e-12 * want) << dtype_name(dt) << " n=" << n;
      EXPECT_EQ(got, kernels::sum_of_squares(xc)) << "not deterministic: " << dtype_name(dt) << " n=" << n;
    }
  }
  // Strided input.
  Tensor base = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).to(Device::cuda());
  EXPECT_DOUBLE_EQ(kernels::sum_of_squares(base.t().slice(0, 0, 3, 2)), 1 + 16 + 9 + 36.0);
}

TEST(CudaSumOfSquares, MultiTensorIsTheGlobalSum) {
  HYMBA_REQUIRE_GPU();
  // Mixed dtypes, an empty and an undefined tensor (skipped), a non-contiguous view.
  std::vector<Tensor> xs = {randn_cpu({1}, 50), randn_cpu({3}, 51, DType::F64), randn_cpu({1000003}, 52),
                            randn_cpu({0}, 53), Tensor(), randn_cpu({300, 7}, 54, DType::BF16).t()};
  double want = 0;
  std::vector<Tensor> xc;
  for (const Tensor& x : xs) {
    if (x.defined()) want += kernels::cpu::sum_of_squares(x.dtype() == DType::BF16 ? x.to(DType::F32) : x);
    xc.push_back(x.defined() ? x.to(Device::cuda()) : Tensor());
  }
  const double got = kernels::sum_of_squares_multi(xc);
  EXPECT_NEAR(got, want, 1e-12 * want);
  EXPECT_EQ(got, kernels::sum_of_squares_multi(xc));
  EXPECT_EQ(kernels::sum_of_squares_multi({Tensor()}), 0.0);
}

}  // namespace
}  // namespace hymba
