// Activation recomputation (autograd/checkpoint.h) and the nested-backward entry point
// autograd::grad it relies on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/checkpoint.h"
#include "autograd/engine.h"
#include "autograd/ops/activation.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/matmul.h"
#include "autograd/ops/reduce.h"
#include "core/rng.h"
#include "tests/test_util.h"

using namespace hymba;
using ::testing::HasSubstr;

namespace {

Tensor param(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  Tensor t = randn(shape, {}, &g, 0.0, 0.5);
  t.set_requires_grad(true);
  return t;
}

using testutil::error_of;

// A small two-layer block: y = x + silu(x W1^T) W2^T, with W1 also used outside.
struct Net {
  Tensor w1 = param({8, 6}, 1), w2 = param({6, 8}, 2), w0 = param({6, 6}, 3);
  Tensor block(const Tensor& x) const { return x + linear(silu(linear(x, w1)), w2); }
};

void expect_bitwise(const Tensor& a, const Tensor& b, const char* what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>();
  ASSERT_EQ(va.size(), vb.size()) << what;
  for (size_t i = 0; i < va.size(); ++i) ASSERT_EQ(va[i], vb[i]) << what << " at " << i;
}

// loss = sum(block(block(x W0)) * c): two checkpointed blocks sharing parameters.
Tensor run(const Net& n, const Tensor& x, bool ckpt) {
  Tensor h = linear(x, n.w0);
  auto f = [&n](const std::vector<Tensor>& in) -> std::vector<Tensor> { return {n.block(in[0])}; };
  for (int rep = 0; rep < 2; ++rep)
    h = ckpt ? autograd::checkpoint(f, {h}, {n.w1, n.w2})[0] : n.block(h);
  Generator g(9);
  Tensor c = randn(h.shape(), {}, &g);
  return sum(h * c);
}

}  // namespace

TEST(Checkpoint, GradientsEqualTheUncheckpointedOnesBitwise) {
  Net a, b;
  Generator g(5);
  Tensor xa = randn({4, 6}, {}, &g);
  xa.set_requires_grad(true);
  Tensor xb = xa.detach().clone();
  xb.set_requires_grad(true);
  Tensor la = run(a, xa, false), lb = run(b, xb, true);
  expect_bitwise(la, lb, "loss");
  la.backward();
  lb.backward();
  expect_bitwise(a.w0.grad(), b.w0.grad(), "w0");
  expect_bitwise(a.w1.grad(), b.w1.grad(), "w1");
  expect_bitwise(a.w2.grad(), b.w2.grad(), "w2");
  expect_bitwise(xa.grad(), xb.grad(), "x");
}

TEST(Checkpoint, LeafHooksRunOncePerOuterBackwardWithTheFinalGradient) {
  // w1 and w2 are used by two checkpointed blocks: each hook must run once, after both
  // blocks' gradients arrived, and see the same gradient as without checkpointing.
  Net ref, n;
  Generator g(5);
  Tensor x = randn({4, 6}, {}, &g);
  run(ref, x, false).backward();
  std::vector<int> calls(3, 0);
  std::vector<Tensor> seen(3);
  const Tensor* ps[3] = {&n.w0, &n.w1, &n.w2};
  for (int i = 0; i < 3; ++i)
    ps[i]->register_grad_hook([&, i](const Tensor& t) {
      calls[size_t(i)]++;
      seen[size_t(i)] = t.grad().clone();
    });
  run(n, x, true).backward();
  EXPECT_EQ(calls, std::vector<int>({1, 1, 1}));
  expect_bitwise(seen[0], ref.w0.grad(), "w0 at its hook");
  expect_bitwise(seen[1], ref.w1.grad(), "w1 at its hook");
  expect_bitwise(seen[2], ref.w2.grad(), "w2 at its hook");
  // A second step accumulates, again one call each.
  run(n, x, true).backward();
  EXPECT_EQ(calls, std::vector<int>({2, 2, 2}));
}

TEST(Checkpoint, KeepsNoIntermediateActivations) {
  // The forward records one node whose only saved tensors are its inputs: the output's
  // grad_fn is the checkpoint node and its edges are the input and the parameters.
  Net n;
  Tensor x = param({4, 6}, 7);
  Tensor y = autograd::checkpoint([&n](const std::vector<Tensor>& in) -> std::vector<Tensor> { return {n.block(in[0])}; },
                                  {x}, {n.w1, n.w2})[0];
  ASSERT_TRUE(y.grad_fn());
  EXPECT_STREQ(y.grad_fn()->name(), "CheckpointBackward");
  EXPECT_EQ(y.grad_fn()->next_edges.size(), 3u);
}

TEST(Checkpoint, AParameterNotDeclaredIsAnErrorInBackward) {
  Net n;
  Tensor x = param({4, 6}, 7);
  Tensor y = autograd::checkpoint([&n](const std::vector<Tensor>& in) -> std::vector<Tensor> { return {n.block(in[0])}; },
                                  {x}, {n.w1})[0];  // w2 missing
  EXPECT_THAT(error_of([&] { sum(y).backward(); }), HasSubstr("not among the requested inputs"));
}

TEST(Checkpoint, RetainGraphAllowsASecondBackwardAndNoGradJustRuns) {
  Net n;
  Tensor x = param({4, 6}, 7);
  auto f = [&n](const std::vector<Tensor>& in) -> std::vector<Tensor> { return {n.block(in[0])}; };
  Tensor l = sum(autograd::checkpoint(f, {x}, {n.w1, n.w2})[0]);
  l.backward(Tensor(), /*retain_graph=*/true);
  Tensor g1 = n.w2.grad().clone();
  l.backward();
  std::vector<float> a = g1.to_vector<float>(), b = n.w2.grad().to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(b[i], 2 * a[i]);
  EXPECT_THAT(error_of([&] { l.backward(); }), HasSubstr("freed"));

  NoGradGuard ng;
  Tensor y = autograd::checkpoint(f, {x}, {n.w1, n.w2})[0];
  EXPECT_FALSE(y.requires_grad());
}

TEST(EngineGrad, ReturnsGradientsWithoutTouchingLeavesOrHooks) {
  Tensor w = param({3}, 1), v = param({3}, 2);
  int calls = 0;
  w.register_grad_hook([&](const Tensor&) { ++calls; });
  Tensor l = sum(w * v * w);
  auto g = autograd::grad({l}, {Tensor()}, {w, v});
  ASSERT_EQ(g.size(), 2u);
  std::vector<float> wv = w.to_vector<float>(), vv = v.to_vector<float>(), gw = g[0].to_vector<float>(),
                     gv = g[1].to_vector<float>();
  for (int i = 0; i < 3; ++i) {
    EXPECT_FLOAT_EQ(gw[size_t(i)], 2 * wv[size_t(i)] * vv[size_t(i)]);
    EXPECT_FLOAT_EQ(gv[size_t(i)], wv[size_t(i)] * wv[size_t(i)]);
  }
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(v.grad().defined());
  EXPECT_EQ(calls, 0);
}

TEST(EngineGrad, NestedInsideANodesBackward) {
  // A leaf reached only through a nested grad() still accumulates exactly once in the outer
  // pass: checked by running the outer backward from two roots that share the block.
  Net n;
  Tensor x = param({4, 6}, 7);
  auto f = [&n](const std::vector<Tensor>& in) -> std::vector<Tensor> { return {n.block(in[0])}; };
  int calls = 0;
  n.w1.register_grad_hook([&](const Tensor&) { ++calls; });
  Tensor y = autograd::checkpoint(f, {x}, {n.w1, n.w2})[0];
  autograd::backward({sum(y), sum(y * y)}, {Tensor(), Tensor()});
  EXPECT_EQ(calls, 1);

  Net r;
  Tensor xr = x.detach().clone();
  xr.set_requires_grad(true);
  Tensor yr = r.block(xr);
  autograd::backward({sum(yr), sum(yr * yr)}, {Tensor(), Tensor()});
  std::vector<float> a = n.w1.grad().to_vector<float>(), b = r.w1.grad().to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::abs(b[i])));
}

TEST(EngineGrad, RejectsNonLeafInputs) {
  Tensor w = param({3}, 1);
  Tensor h = w * 2.0;
  EXPECT_THAT(error_of([&] { autograd::grad({sum(h)}, {Tensor()}, {h}); }), HasSubstr("must be a leaf"));
}
