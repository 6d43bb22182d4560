// Gradients of the selective scan op by finite differences in float64, through the autograd
// node (chunked recompute included: chunk < L in most cases).
#include <gtest/gtest.h>

#include <string>

#include "autograd/gradcheck.h"
#include "autograd/ops/selective_scan.h"
#include "core/rng.h"

using namespace hymba;
using autograd::gradcheck;

namespace {

struct Case {
  int64_t B, D, N, L, chunk;
  bool use_z, softplus;
  int bias;  // 0 absent, 1 zeros, 2 random
};

std::string name(const Case& c) {
  return hymba::str("B", c.B, " D", c.D, " N", c.N, " L", c.L, " chunk", c.chunk, c.use_z ? " z" : "",
                    c.softplus ? " softplus" : "", " bias", c.bias);
}

Tensor param(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

void check(const Case& c, uint64_t seed) {
  Generator g(seed);
  const DType f = DType::F64;
  Tensor u = param(randn({c.B, c.D, c.L}, f, &g));
  // Away from 0 without softplus, so the finite differences never see a sign flip of delta.
  Tensor delta = param(c.softplus ? rand({c.B, c.D, c.L}, f, &g, -2.0, 1.0) : rand({c.B, c.D, c.L}, f, &g, 0.1, 0.9));
  Tensor A = param(rand({c.D, c.N}, f, &g, -1.5, -0.2));
  Tensor B = param(randn({c.B, c.N, c.L}, f, &g));
  Tensor C = param(randn({c.B, c.N, c.L}, f, &g));
  Tensor D = param(randn({c.D}, f, &g));
  Tensor z = c.use_z ? param(randn({c.B, c.D, c.L}, f, &g)) : Tensor();
  Tensor bias = c.bias == 0 ? Tensor() : param(c.bias == 1 ? zeros({c.D}, f) : rand({c.D}, f, &g, -0.3, 0.3));
  std::vector<Tensor> inputs = {u, delta, A, B, C, D};
  if (z.defined()) inputs.push_back(z);
  if (bias.defined()) inputs.push_back(bias);
  auto r = gradcheck(
      [&](const std::vector<Tensor>& in) {
        size_t k = 6;
        Tensor zz = c.use_z ? in[k++] : Tensor();
        Tensor bb = c.bias ? in[k++] : Tensor();
        return selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], zz, bb, c.softplus, c.chunk);
      },
      inputs);
  EXPECT_TRUE(r.ok) << name(c) << ": " << r.message;
}

}  // namespace

TEST(SelectiveScanGrad, SmallShapesAllOptionCombinations) {
  uint64_t seed = 1;
  for (bool use_z : {false, true})
    for (bool softplus : {false, true})
      for (int bias : {0, 1, 2}) check({2, 3, 4, 9, 4, use_z, softplus, bias}, seed++);
}

TEST(SelectiveScanGrad, ChunkEdgeCasesAndBatchSizes) {
  check({1, 2, 3, 5, 8, true, true, 2}, 20);  // L < chunk, batch 1
  check({3, 2, 2, 8, 4, true, true, 2}, 21);  // L a multiple of chunk, batch 3
  check({2, 1, 1, 7, 1, false, true, 2}, 22); // chunk 1, size-1 D and N
  check({1, 1, 5, 1, 4, true, true, 1}, 23);  // L = 1
}

TEST(SelectiveScanGrad, NonContiguousInputsAndPartialRequiresGrad) {
  Generator g(30);
  const DType f = DType::F64;
  // u as a transposed view, B as a strided slice, A transposed; only some inputs need grad.
  Tensor u = randn({2, 7, 3}, f, &g).permute({0, 2, 1});  // (2, 3, 7)
  Tensor delta = rand({2, 3, 7}, f, &g, -1.0, 0.5);
  Tensor A = rand({4, 3}, f, &g, -1.0, -0.3).t();         // (3, 4)
  Tensor B = randn({2, 4, 14}, f, &g).slice(2, 0, 14, 2);  // (2, 4, 7)
  Tensor C = randn({2, 4, 7}, f, &g);
  Tensor D = randn({3}, f, &g);
  Tensor z = randn({2, 3, 7}, f, &g);
  Tensor bias = rand({3}, f, &g, -0.3, 0.3);
  ASSERT_FALSE(u.is_contiguous());
  ASSERT_FALSE(B.is_contiguous());
  u.set_requires_grad(true);
  A.set_requires_grad(true);
  B.set_requires_grad(true);
  bias.set_requires_grad(true);
  auto r = gradcheck(
      [&](const std::vector<Tensor>& in) { return selective_scan(in[0], delta, in[1], in[2], C, D, z, in[3], true, 3); },
      {u, A, B, bias});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(SelectiveScanGrad, FinalStateCarriesNoGradientAndMatchesTheStepKernel) {
  Generator g(40);
  const DType f = DType::F64;
  Tensor u = param(randn({1, 2, 6}, f, &g)), delta = rand({1, 2, 6}, f, &g, -1, 0.5);
  Tensor A = rand({2, 3}, f, &g, -1, -0.2), B = randn({1, 3, 6}, f, &g), C = randn({1, 3, 6}, f, &g);
  auto [out, last] = selective_scan_with_state(u, delta, A, B, C, Tensor(), Tensor(), Tensor(), true, 4);
  EXPECT_TRUE(out.requires_grad());
  EXPECT_FALSE(last.requires_grad());
  Tensor state = zeros({1, 2, 3}, f);
  for (int64_t t = 0; t < 6; ++t) {
    NoGradGuard ng;
    selective_scan_step(state, u.select(2, t), delta.select(2, t), A, B.select(2, t), C.select(2, t), Tensor(),
                        Tensor(), Tensor(), true);
  }
  auto a = state.to_vector<double>(), b = last.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-13);
}
