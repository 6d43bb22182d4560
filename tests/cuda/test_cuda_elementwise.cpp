// CUDA elementwise ops against the CPU kernels on the same inputs. Tolerances (norm-relative,
// tests/cuda/cuda_test_util.h): f32 1e-5 (both sides compute one correctly rounded op per
// element, except exp/log/pow which differ by an ulp or two); f64 1e-12; bf16/f16 inputs 2e-2
// against the CPU run in f32 on the same rounded values (the CUDA result is rounded to
// 16 bits once more).
#include <functional>
#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using kernels::BinaryOp;
using kernels::ScalarOp;
using kernels::UnaryOp;

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-5); }
using cudatest::ref_of;

const Device gpu = Device::cuda();

// |x| + 0.5: inputs for log, sqrt, rsqrt, division and pow.
Tensor positive(const Tensor& x) {
  const Tensor f = x.to(DType::F32);
  return kernels::scalar(ScalarOp::Add, kernels::unary(UnaryOp::Abs, f), 0.5).to(x.dtype());
}

std::string what(const std::string& op, DType dt, const Shape& s) {
  return op + " " + dtype_name(dt) + " " + shape_str(s);
}

const BinaryOp kBinary[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div};
const UnaryOp kUnary[] = {UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Abs};

// A view taken on each side after the copy (Tensor::to(Device) makes a contiguous copy, so
// views must be made on the GPU tensor itself).
using View = std::function<Tensor(const Tensor&)>;
const View kSame = [](const Tensor& t) { return t; };
const View kT = [](const Tensor& t) { return t.t(); };

// va(a) op vb(b), broadcast as the shapes say, against the CPU.
void check_binary(const Tensor& a, const Tensor& b, DType dt, const View& va = kSame, const View& vb = kSame) {
  for (BinaryOp op : kBinary) {
    const Tensor bb = op == BinaryOp::Div ? positive(b) : b;
    const Tensor want = kernels::binary(op, va(a.to(ref_of(dt))), vb(bb.to(ref_of(dt))));
    const Tensor got = kernels::binary(op, va(a.to(gpu)), vb(bb.to(gpu)));
    ASSERT_TRUE(got.is_cuda());
    EXPECT_EQ(got.dtype(), dt);
    EXPECT_CUDA_CLOSE(got, want, rtol_of(dt), what(kernels::binary_op_name(op), dt, a.shape()));
  }
}

TEST(CudaElementwise, BinaryDenseOddSizes) {
  HYMBA_REQUIRE_GPU();
  // 3 * 1000003 is no multiple of 4 or 8: the vector loop and its scalar tail both run.
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    check_binary(cudatest::randn_cpu({3, 1000003}, 1, dt), cudatest::randn_cpu({3, 1000003}, 2, dt), dt);
    check_binary(cudatest::randn_cpu({7, 13, 5}, 3, dt), cudatest::randn_cpu({7, 13, 5}, 4, dt), dt);
    check_binary(cudatest::randn_cpu({1}, 5, dt), cudatest::randn_cpu({1}, 6, dt), dt);
  }
}

TEST(CudaElementwise, BinaryBroadcastAndViews) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    // (3,1,5) with (1,4,5), a bias over rows, a 0-dim scalar, and a transposed view.
    check_binary(cudatest::randn_cpu({3, 1, 5}, 10, dt), cudatest::randn_cpu({1, 4, 5}, 11, dt), dt);
    check_binary(cudatest::randn_cpu({1001, 37}, 12, dt), cudatest::randn_cpu({37}, 13, dt), dt);
    check_binary(cudatest::randn_cpu({7, 13, 5}, 14, dt), cudatest::randn_cpu({}, 15, dt), dt);
    check_binary(cudatest::randn_cpu({9, 7}, 16, dt), cudatest::randn_cpu({7, 9}, 17, dt), dt, kT);
    check_binary(cudatest::randn_cpu({7, 9}, 18, dt), cudatest::randn_cpu({9, 7}, 19, dt), dt, kSame, kT);
    check_binary(cudatest::randn_cpu({9, 7}, 20, dt), cudatest::randn_cpu({9}, 21, dt), dt, kT);
  }
  // Dense but one element off 16-byte alignment: the scalar path of the dense kernel.
  check_binary(cudatest::randn_cpu({100004}, 22), cudatest::randn_cpu({100004}, 23), DType::F32,
               [](const Tensor& t) { return t.narrow(0, 1, 100003); },
               [](const Tensor& t) { return t.narrow(0, 0, 100003); });
}

TEST(CudaElementwise, BinaryOutInPlaceAndStridedOut) {
  HYMBA_REQUIRE_GPU();
  const Tensor a = cudatest::randn_cpu({3, 1000003}, 30), b = cudatest::randn_cpu({3, 1000003}, 31);
  // In place: out is a.
  Tensor ga = a.to(gpu).clone();
  kernels::binary_out(BinaryOp::Mul, ga, b.to(gpu), ga);
  EXPECT_CUDA_CLOSE(ga, kernels::binary(BinaryOp::Mul, a, b), 1e-6, "mul in place");
  // Into a transposed view.
  const Tensor x = cudatest::randn_cpu({11, 6}, 32), y = cudatest::randn_cpu({6}, 33);
  Tensor out_store = empty({6, 11}, TensorOptions(DType::F32, gpu));
  kernels::binary_out(BinaryOp::Sub, x.to(gpu), y.to(gpu), out_store.t());
  EXPECT_CUDA_CLOSE(out_store.t(), kernels::binary(BinaryOp::Sub, x, y), 1e-6, "sub into a transposed view");
}

TEST(CudaElementwise, Unary) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : {Shape{3, 1000003}, Shape{7, 13, 5}}) {
      const Tensor x = cudatest::randn_cpu(s, 40, dt);
      for (UnaryOp op : kUnary) {
        const bool pos = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt;
        const Tensor in = pos ? positive(x) : x;
        const Tensor want = kernels::unary(op, in.to(ref_of(dt)));
        const Tensor got = kernels::unary(op, in.to(gpu));
        EXPECT_CUDA_CLOSE(got, want, rtol_of(dt), what(kernels::unary_op_name(op), dt, s));
      }
    }
  }
  // A transposed input.
  const Tensor xt = cudatest::randn_cpu({13, 7}, 41);
  EXPECT_CUDA_CLOSE(kernels::unary(UnaryOp::Exp, xt.to(gpu).t()), kernels::unary(UnaryOp::Exp, xt.t()), 1e-5,
                    "exp of a transposed view");
}

TEST(CudaElementwise, ScalarOps) {
  HYMBA_REQUIRE_GPU();
  struct Case {
    ScalarOp op;
    double s;
    bool pos;
    const char* name;
  };
  const Case cases[] = {{ScalarOp::Add, 0.75, false, "add"},   {ScalarOp::Mul, -1.5, false, "mul"},
                        {ScalarOp::RSub, 2.0, false, "rsub"},  {ScalarOp::RDiv, 3.0, true, "rdiv"},
                        {ScalarOp::Pow, 2.0, false, "square"}, {ScalarOp::Pow, 1.5, true, "pow 1.5"}};
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : {Shape{3, 1000003}, Shape{7, 13, 5}}) {
      const Tensor x = cudatest::randn_cpu(s, 50, dt);
      for (const Case& c : cases) {
        const Tensor in = c.pos ? positive(x) : x;
        const Tensor want = kernels::scalar(c.op, in.to(ref_of(dt)), c.s);
        EXPECT_CUDA_CLOSE(kernels::scalar(c.op, in.to(gpu), c.s), want, rtol_of(dt), what(c.name, dt, s));
      }
    }
  }
  // In place on a strided view: only the view's elements change.
  const Tensor base = cudatest::randn_cpu({8, 10}, 51);
  Tensor g = base.to(gpu).clone();
  Tensor cpu = base.clone();
  kernels::scalar_out(ScalarOp::Mul, g.slice(1, 0, 10, 3), 4.0, g.slice(1, 0, 10, 3));
  kernels::scalar_out(ScalarOp::Mul, cpu.slice(1, 0, 10, 3), 4.0, cpu.slice(1, 0, 10, 3));
  EXPECT_CUDA_CLOSE(g, cpu, 0.0, "mul in place on every third column");
}

TEST(CudaElementwise, Axpy) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (double alpha : {1.0, -0.3}) {
      const Tensor out0 = cudatest::randn_cpu({7, 13, 5}, 60, dt);
      for (const Shape& xs : {Shape{7, 13, 5}, Shape{13, 5}, Shape{7, 1, 5}}) {
        const Tensor x = cudatest::randn_cpu(xs, 61, dt);
        Tensor want = out0.to(ref_of(dt)).clone();
        kernels::axpy_(want, x.to(ref_of(dt)), alpha);
        Tensor got = out0.to(gpu).clone();
        kernels::axpy_(got, x.to(gpu), alpha);
        EXPECT_CUDA_CLOSE(got, want, rtol_of(dt), what("axpy_ alpha " + std::to_string(alpha), dt, xs));
      }
    }
  }
  // Long and odd: the vector path with a tail.
  const Tensor o = cudatest::randn_cpu({3, 1000003}, 62), x = cudatest::randn_cpu({3, 1000003}, 63);
  Tensor want = o.clone(), got = o.to(gpu).clone();
  kernels::axpy_(want, x, 0.5);
  kernels::axpy_(got, x.to(gpu), 0.5);
  EXPECT_CUDA_CLOSE(got, want, 1e-6, "axpy_ (3, 1000003)");
}

TEST(CudaElementwise, UnaryBackward) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : {Shape{3, 1000003}, Shape{7, 13, 5}}) {
      const Tensor x0 = cudatest::randn_cpu(s, 70, dt), g = cudatest::randn_cpu(s, 71, dt);
      for (UnaryOp op : kUnary) {
        const bool pos = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt;
        const Tensor x = pos ? positive(x0) : x0;
        // y from the CPU in the test dtype, so both sides see the same saved output.
        const Tensor y = kernels::unary(op, x.to(ref_of(dt))).to(dt);
        const Tensor want = kernels::unary_backward(op, g.to(ref_of(dt)), x.to(ref_of(dt)), y.to(ref_of(dt)));
        const Tensor got = kernels::unary_backward(op, g.to(gpu), x.to(gpu), y.to(gpu));
        EXPECT_CUDA_CLOSE(got, want, rtol_of(dt), what(std::string(kernels::unary_op_name(op)) + " backward", dt, s));
      }
    }
  }
}

}  // namespace
}  // namespace hymba
