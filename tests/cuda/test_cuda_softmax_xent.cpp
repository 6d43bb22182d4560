// Softmax, log-softmax and cross-entropy CUDA kernels against the CPU kernels
// (kernels/softmax_xent.h).
//
// Tolerances (norm-relative): f32 1e-5 (fp32 row sums on the GPU, double on the CPU), f64
// 1e-12, bf16 2e-2 for outputs stored in bf16. For bf16 the reference is the CPU kernel on
// the same values widened to f32, so the f32 statistics are held to 1e-5 there too.
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
        EXPECT_EQ(got.loss.dtype(), dt) << what;
        EXPECT_CUDA_CLOSE(got.loss, want.loss, rtol_for(dt), what + " loss");
        EXPECT_CUDA_CLOSE(got.stats, want.stats, stat_rtol(dt), what + " stats");

        // Backward from each side's own stats; grad is 0-dim for Sum/Mean, per row for None.
        const double scale = red == LossReduction::Mean && want.count > 0 ? 1.0 / double(want.count) : 1.0;
        Tensor grad = red == LossReduction::None ? randn_cpu({rows}, 7, dt) : scalar_tensor(0.75, dt);
        Tensor dl = kernels::cross_entropy_backward(grad.to(Device::cuda()), lc, tc, got.stats, -100, scale);
        Tensor dl_ref =
            kernels::cpu::cross_entropy_backward(grad.to(rd), logits.to(rd), targets, want.stats, -100, scale);
        EXPECT_EQ(dl.dtype(), dt) << what;
        EXPECT_CUDA_CLOSE(dl, dl_ref, rtol_for(dt), what + " dlogits");
      }
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
