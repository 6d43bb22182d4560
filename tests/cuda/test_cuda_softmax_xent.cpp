// Softmax, log-softmax and cross-entropy CUDA kernels against the CPU kernels
// (kernels/softmax_xent.h).
//
// Tolerances (norm-relative): f32 1e-5 (fp32 row sums on the GPU, double on the CPU), f64
// 1e-12, bf16 2e-2 for outputs stored in bf16. For bf16 the reference is the CPU kernel on
// the same values widened to f32, so the f32 statistics and the loss (fp32 for every
// logits dtype but f64) are held to 1e-5 there too.
#include "autograd/ops/elementwise.h"
#include "autograd/ops/softmax_xent.h"
#include "kernels/softmax_xent.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using cudatest::randn_cpu;
using kernels::CrossEntropyForward;
using kernels::LossReduction;

double rtol_for(DType dt) { return dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-5 : 2e-2; }
double stat_rtol(DType dt) { return dt == DType::F64 ? 1e-12 : 1e-5; }
DType ref_dtype(DType dt) { return dt == DType::BF16 ? DType::F32 : dt; }
DType loss_dtype(DType dt) { return dt == DType::F64 ? DType::F64 : DType::F32; }

const std::vector<Shape> kShapes = {{1, 7}, {3, 1000}, {37, 3200}, {5, 32001}};

TEST(CudaSoftmax, ForwardAndBackwardMatchCpuAlongLastDim) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : kShapes) {
      const DType rd = ref_dtype(dt);
      Tensor x = randn_cpu(s, 1, dt, 3.0), dy = randn_cpu(s, 2, dt);
      Tensor xc = x.to(Device::cuda()), dyc = dy.to(Device::cuda());
      for (bool log : {false, true}) {
        const std::string what = str(log ? "log_softmax " : "softmax ", dtype_name(dt), shape_str(s));
        Tensor y = log ? kernels::log_softmax_forward(xc, -1) : kernels::softmax_forward(xc, -1);
        Tensor y_ref =
            log ? kernels::cpu::log_softmax_forward(x.to(rd), -1) : kernels::cpu::softmax_forward(x.to(rd), -1);
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_CUDA_CLOSE(y, y_ref, rtol_for(dt), what + " y");
        // Backward from the same saved output on both sides (the CUDA one, widened for bf16).
        Tensor y_cpu = y.to(Device::cpu()).to(rd);
        Tensor dx = log ? kernels::log_softmax_backward(dyc, y, -1) : kernels::softmax_backward(dyc, y, -1);
        Tensor dx_ref = log ? kernels::cpu::log_softmax_backward(dy.to(rd), y_cpu, -1)
                            : kernels::cpu::softmax_backward(dy.to(rd), y_cpu, -1);
        EXPECT_CUDA_CLOSE(dx, dx_ref, rtol_for(dt), what + " dx");
      }
    }
  }
}

TEST(CudaSoftmax, OtherDimsAndZeroDim) {
  HYMBA_REQUIRE_GPU();
  Tensor x = randn_cpu({4, 5, 33}, 3), dy = randn_cpu({4, 5, 33}, 4);
  Tensor xc = x.to(Device::cuda()), dyc = dy.to(Device::cuda());
  for (int64_t dim : {0, 1, -2}) {
    const std::string what = str("dim ", dim);
    Tensor y = kernels::softmax_forward(xc, dim);
    EXPECT_CUDA_CLOSE(y, kernels::cpu::softmax_forward(x, dim), 1e-5, "softmax " + what);
    Tensor ly = kernels::log_softmax_forward(xc, dim);
    EXPECT_CUDA_CLOSE(ly, kernels::cpu::log_softmax_forward(x, dim), 1e-5, "log_softmax " + what);
    EXPECT_CUDA_CLOSE(kernels::softmax_backward(dyc, y, dim),
                      kernels::cpu::softmax_backward(dy, y.to(Device::cpu()), dim), 1e-5, "softmax dx " + what);
    EXPECT_CUDA_CLOSE(kernels::log_softmax_backward(dyc, ly, dim),
                      kernels::cpu::log_softmax_backward(dy, ly.to(Device::cpu()), dim), 1e-5,
                      "log_softmax dx " + what);
  }
  Tensor s = scalar_tensor(2.5, TensorOptions(DType::F32, Device::cuda()));
  EXPECT_CUDA_CLOSE(kernels::softmax_forward(s, 0), scalar_tensor(1.0), 0.0, "0-dim softmax");
  // -inf entries (masked classes) get probability 0 and leave the rest intact.
  Tensor m = from_vector<float>({0.f, -INFINITY, 1.f, -INFINITY}, {1, 4});
  EXPECT_CUDA_CLOSE(kernels::softmax_forward(m.to(Device::cuda()), -1), kernels::cpu::softmax_forward(m, -1), 1e-6,
                    "-inf entries");
}

// targets with about a quarter of the rows ignored (-100) and, when `ignore_row0`, row 0
// ignored too; the rest random classes in [0, V).
Tensor make_targets(int64_t rows, int64_t V, uint64_t seed, DType dt, bool ignore_row0) {
  Generator g(seed);
  Tensor u = rand({rows, 2}, DType::F64, &g);
  auto uv = u.to_vector<double>();
  std::vector<int64_t> t(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    t[size_t(r)] =
        uv[size_t(2 * r)] < 0.25 ? -100 : std::min<int64_t>(V - 1, int64_t(uv[size_t(2 * r + 1)] * double(V)));
  }
  if (ignore_row0) t[0] = -100;
  return from_vector<int64_t>(t, {rows}).to(dt);
}

TEST(CudaCrossEntropy, ForwardAndBackwardMatchCpu) {
  HYMBA_REQUIRE_GPU();
  const std::vector<Shape> shapes = {{1, 7}, {3, 1000}, {37, 3200}, {5, 32001}, {2, 256003}};
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : shapes) {
      const DType rd = ref_dtype(dt);
      const int64_t rows = s[0], V = s[1];
      Tensor logits = randn_cpu(s, 5, dt, 4.0);
      Tensor targets = make_targets(rows, V, 6, rows % 2 ? DType::I64 : DType::I32, rows > 1);
      Tensor lc = logits.to(Device::cuda()), tc = targets.to(Device::cuda());
      for (LossReduction red : {LossReduction::None, LossReduction::Sum, LossReduction::Mean}) {
        const std::string what = str(dtype_name(dt), shape_str(s), " reduction ", int(red));
        CrossEntropyForward got = kernels::cross_entropy_forward(lc, tc, -100, red);
        CrossEntropyForward want = kernels::cpu::cross_entropy_forward(logits.to(rd), targets, -100, red);
        EXPECT_EQ(got.count, want.count) << what;
        EXPECT_EQ(got.loss.shape(), want.loss.shape()) << what;
        EXPECT_EQ(got.loss.dtype(), loss_dtype(dt)) << what;
        EXPECT_CUDA_CLOSE(got.loss, want.loss, stat_rtol(dt), what + " loss");
        EXPECT_CUDA_CLOSE(got.stats, want.stats, stat_rtol(dt), what + " stats");

        // Backward from each side's own stats; grad is 0-dim for Sum/Mean, per row for None,
        // in the loss's dtype, or (accepted too) the logits' dtype for the 0-dim one.
        const double scale = red == LossReduction::Mean && want.count > 0 ? 1.0 / double(want.count) : 1.0;
        Tensor grad = red == LossReduction::None ? randn_cpu({rows}, 7, loss_dtype(dt)) : scalar_tensor(0.75, dt);
        Tensor dl = kernels::cross_entropy_backward(grad.to(Device::cuda()), lc, tc, got.stats, -100, scale);
        Tensor dl_ref =
            kernels::cpu::cross_entropy_backward(grad.to(rd), logits.to(rd), targets, want.stats, -100, scale);
        EXPECT_EQ(dl.dtype(), dt) << what;
        EXPECT_CUDA_CLOSE(dl, dl_ref, rtol_for(dt), what + " dlogits");
      }
    }
  }
}

// The fused forward-backward against the CPU one, with the tolerances above. The sizes run
// both CUDA paths: the row staged in shared memory (V 32001 in bf16 and f32, bf16 70000:
// at most 164 KiB, within the opt-in limit of an A100 and an H100) and the two-read fallback
// for rows over 227 KiB, the H100's limit (f32 70000, f64 32001, bf16 140001). Odd V puts
// most rows off a 16-byte boundary (scalar head and tail around the vectors). Every output is
// checked (allocations are poisoned), dlogits also against the CUDA two-pass backward.
TEST(CudaCrossEntropy, FusedForwardBackwardMatchesCpu) {
  HYMBA_REQUIRE_GPU();
  const std::vector<Shape> shapes = {{1, 1}, {3, 7}, {4, 8}, {37, 1000}, {5, 32001}, {3, 70000}, {2, 140001}};
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : shapes) {
      const DType rd = ref_dtype(dt);
      const int64_t rows = s[0], V = s[1];
      Tensor logits = randn_cpu(s, 11, dt, 4.0);
      Tensor targets = make_targets(rows, V, 12, rows % 2 ? DType::I64 : DType::I32, rows > 1);
      Tensor lc = logits.to(Device::cuda()), tc = targets.to(Device::cuda());
      for (LossReduction red : {LossReduction::None, LossReduction::Sum, LossReduction::Mean}) {
        const std::string what = str("fused ", dtype_name(dt), shape_str(s), " reduction ", int(red));
        kernels::CrossEntropyForwardBackward got = kernels::cross_entropy_forward_backward(lc, tc, -100, red);
        kernels::CrossEntropyForwardBackward want =
            kernels::cpu::cross_entropy_forward_backward(logits.to(rd), targets, -100, red, 1.0);
        EXPECT_EQ(got.count, want.count) << what;
        EXPECT_EQ(got.loss.shape(), want.loss.shape()) << what;
        EXPECT_EQ(got.loss.dtype(), loss_dtype(dt)) << what;
        EXPECT_EQ(got.dlogits.dtype(), dt) << what;
        EXPECT_EQ(got.dlogits.shape(), s) << what;
        EXPECT_CUDA_CLOSE(got.loss, want.loss, stat_rtol(dt), what + " loss");
        EXPECT_CUDA_CLOSE(got.stats, want.stats, stat_rtol(dt), what + " stats");
        EXPECT_CUDA_CLOSE(got.dlogits, want.dlogits, rtol_for(dt), what + " dlogits");
        const double scale = red == LossReduction::Mean && got.count > 0 ? 1.0 / double(got.count) : 1.0;
        Tensor one = red == LossReduction::None ? ones({rows}, TensorOptions(loss_dtype(dt), Device::cuda()))
                                                : ones({}, TensorOptions(loss_dtype(dt), Device::cuda()));
        EXPECT_CUDA_CLOSE(got.dlogits, kernels::cross_entropy_backward(one, lc, tc, got.stats, -100, scale),
                          rtol_for(dt), what + " dlogits vs two-pass");
        if (V == 1000) {  // grad_scale (the trainer's micro-batch weight) on one size
          EXPECT_CUDA_CLOSE(kernels::cross_entropy_forward_backward(lc, tc, -100, red, 0.3).dlogits,
                            kernels::cpu::cross_entropy_forward_backward(logits.to(rd), targets, -100, red, 0.3).dlogits,
                            rtol_for(dt), what + " dlogits with grad_scale 0.3");
        }
      }
    }
  }
}

// Logits whose base is not 16-byte aligned (a view starting one row in, V odd) take the
// scalar path; -inf (masked) classes add nothing and get a zero gradient.
TEST(CudaCrossEntropy, FusedUnalignedViewAndMaskedClasses) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor all = randn_cpu({6, 1001}, 13, dt, 3.0);
    Tensor view = all.to(Device::cuda()).narrow(0, 1, 5);
    Tensor targets = make_targets(5, 1001, 14, DType::I64, false);
    kernels::CrossEntropyForwardBackward got =
        kernels::cross_entropy_forward_backward(view, targets.to(Device::cuda()), -100, LossReduction::Mean);
    kernels::CrossEntropyForwardBackward want = kernels::cpu::cross_entropy_forward_backward(
        all.narrow(0, 1, 5).to(DType::F32), targets, -100, LossReduction::Mean, 1.0);
    const std::string what = str("unaligned ", dtype_name(dt));
    EXPECT_EQ(got.count, want.count) << what;
    EXPECT_CUDA_CLOSE(got.loss, want.loss, 1e-5, what + " loss");
    EXPECT_CUDA_CLOSE(got.dlogits, want.dlogits, rtol_for(dt), what + " dlogits");
  }
  std::vector<float> x(2 * 3001, -INFINITY);
  for (int j = 100; j < 140; ++j) x[size_t(j)] = float(j % 9) - 4.f;
  for (int j = 2990; j < 3001; ++j) x[size_t(3001 + j)] = float(j % 4);
  Tensor masked = from_vector<float>(x, {2, 3001});
  Tensor tm = from_vector<int64_t>({120, 2995}, {2});
  kernels::CrossEntropyForwardBackward got = kernels::cross_entropy_forward_backward(
      masked.to(Device::cuda()), tm.to(Device::cuda()), -100, LossReduction::Sum);
  kernels::CrossEntropyForwardBackward want =
      kernels::cpu::cross_entropy_forward_backward(masked, tm, -100, LossReduction::Sum, 1.0);
  EXPECT_CUDA_CLOSE(got.loss, want.loss, 1e-5, "masked loss");
  EXPECT_CUDA_CLOSE(got.dlogits, want.dlogits, 1e-5, "masked dlogits");
}

TEST(CudaCrossEntropy, FusedAllIgnoredAndBadTargets) {
  HYMBA_REQUIRE_GPU();
  Tensor logits = randn_cpu({3, 11}, 15).to(Device::cuda());
  Tensor all_ignored = from_vector<int64_t>({-100, -100, -100}, {3}).to(Device::cuda());
  kernels::CrossEntropyForwardBackward f = kernels::cross_entropy_forward_backward(logits, all_ignored);
  EXPECT_EQ(f.count, 0);
  EXPECT_EQ(f.loss.item(), 0.0);  // Mean over no rows
  EXPECT_EQ(f.dlogits.to(Device::cpu()).to_vector<float>(), std::vector<float>(33, 0.f));
  EXPECT_EQ(f.stats.to(Device::cpu()).to_vector<float>(), std::vector<float>(6, 0.f));
  for (int64_t bad : {int64_t(11), int64_t(-1)}) {
    Tensor t = from_vector<int64_t>({1, -100, bad}, {3}).to(Device::cuda());
    try {
      kernels::cross_entropy_forward_backward(logits, t);
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(str("target ", bad, " at row 2")), std::string::npos) << e.what();
    }
  }
}

// The differentiable cross_entropy on CUDA goes through the fused kernel: bf16 logits give an
// fp32 loss and bf16 gradients, equal to the CPU op on the widened values, for an upstream
// gradient of exactly 1 (dlogits handed back as they are) and of 0.5 (one multiply).
TEST(CudaCrossEntropy, AutogradCrossEntropyMatchesCpu) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (double upstream : {1.0, 0.5}) {
      const std::string what = str("autograd ", dtype_name(dt), " upstream ", upstream);
      Tensor lcpu = randn_cpu({9, 1003}, 16, dt, 3.0);
      Tensor targets = make_targets(9, 1003, 17, DType::I64, true);
      Tensor lc = lcpu.to(Device::cuda());
      lc.set_requires_grad(true);
      Tensor loss = cross_entropy(lc, targets.to(Device::cuda()));
      EXPECT_EQ(loss.dtype(), DType::F32) << what;
      (upstream == 1.0 ? loss : loss * upstream).backward();
      Tensor lr = lcpu.to(DType::F32);
      lr.set_requires_grad(true);
      Tensor loss_ref = cross_entropy(lr, targets);
      (upstream == 1.0 ? loss_ref : loss_ref * upstream).backward();
      EXPECT_CUDA_CLOSE(loss.detach(), loss_ref.detach(), 1e-5, what + " loss");
      ASSERT_TRUE(lc.grad().defined()) << what;
      EXPECT_EQ(lc.grad().dtype(), dt) << what;
      EXPECT_CUDA_CLOSE(lc.grad(), lr.grad(), rtol_for(dt), what + " grad");
    }
  }
}

TEST(CudaCrossEntropy, AllRowsIgnoredAndOtherIgnoreIndex) {
  HYMBA_REQUIRE_GPU();
  Tensor logits = randn_cpu({3, 11}, 8);
  Tensor all_ignored = from_vector<int64_t>({-100, -100, -100}, {3});
  CrossEntropyForward f = kernels::cross_entropy_forward(logits.to(Device::cuda()), all_ignored.to(Device::cuda()));
  EXPECT_EQ(f.count, 0);
  EXPECT_EQ(f.loss.item(), 0.0);  // a mean over no rows is 0, as on the CPU
  Tensor dl = kernels::cross_entropy_backward(scalar_tensor(1.0, TensorOptions(DType::F32, Device::cuda())),
                                              logits.to(Device::cuda()), all_ignored.to(Device::cuda()), f.stats, -100,
                                              1.0);
  EXPECT_EQ(dl.to(Device::cpu()).to_vector<float>(), std::vector<float>(33, 0.f));
  // ignore_index 2 is a valid class: rows with target 2 are skipped, -100 is now an error.
  Tensor t2 = from_vector<int64_t>({2, 0, 2}, {3});
  CrossEntropyForward g = kernels::cross_entropy_forward(logits.to(Device::cuda()), t2.to(Device::cuda()), 2,
                                                         LossReduction::Sum);
  CrossEntropyForward gr = kernels::cpu::cross_entropy_forward(logits, t2, 2, LossReduction::Sum);
  EXPECT_EQ(g.count, 1);
  EXPECT_CUDA_CLOSE(g.loss, gr.loss, 1e-5, "ignore_index 2");
  EXPECT_THROW(kernels::cross_entropy_forward(logits.to(Device::cuda()), all_ignored.to(Device::cuda()), 2), Error);
}

TEST(CudaCrossEntropy, OutOfRangeTargetsThrow) {
  HYMBA_REQUIRE_GPU();
  Tensor logits = randn_cpu({4, 10}, 9).to(Device::cuda());
  Tensor stats = kernels::cross_entropy_forward(logits, zeros({4}, TensorOptions(DType::I64, Device::cuda()))).stats;
  for (int64_t bad : {int64_t(10), int64_t(-1), int64_t(-101)}) {
    Tensor t = from_vector<int64_t>({1, -100, bad, 3}, {4}).to(Device::cuda());
    try {
      kernels::cross_entropy_forward(logits, t);
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(str("target ", bad, " at row 2")), std::string::npos) << e.what();
    }
    EXPECT_THROW(kernels::cross_entropy_backward(scalar_tensor(1.0, TensorOptions(DType::F32, Device::cuda())), logits,
                                                 t, stats, -100, 1.0),
                 Error)
        << bad;
  }
}

}  // namespace
}  // namespace hymba
