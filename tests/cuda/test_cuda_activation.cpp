// CUDA activations (SiLU, sigmoid, softplus, SwiGLU split and packed; forwards and
// backwards) against the CPU kernels on the same inputs. Tolerances (norm-relative,
// tests/cuda/cuda_test_util.h): f32 1e-5 (the CPU's exp is within 2 ulp of expf, the GPU's
// within 2 ulp as well); f64 1e-12; bf16 inputs 2e-2 against the CPU run in f32 on the same
// rounded values.
#include <functional>
#include <string>
#include <tuple>

#include "kernels/activation.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

double rtol_of(DType dt) { return cudatest::rtol_by_dtype(dt, 1e-5); }
using cudatest::ref_of;

const Device gpu = Device::cuda();

std::string what(const std::string& op, DType dt, const Shape& s) {
  return op + " " + dtype_name(dt) + " " + shape_str(s);
}

// Scale 8 puts inputs past softplus's threshold (20) and into sigmoid's saturated tails.
Tensor input(const Shape& s, uint64_t seed, DType dt) { return cudatest::randn_cpu(s, seed, dt, 8.0); }

// Shapes: odd long rows (the vector loop's tail), a small 3-D one, one element.
const Shape kShapes[] = {{3, 1000003}, {7, 13, 5}, {1}};

using Fwd = Tensor (*)(const Tensor&);
using Bwd = Tensor (*)(const Tensor&, const Tensor&);
struct Unary {
  const char* name;
  Fwd cpu_f, any_f;
  Bwd cpu_b, any_b;
};
const Unary kUnary[] = {
    {"silu", kernels::cpu::silu_forward, kernels::silu_forward, kernels::cpu::silu_backward, kernels::silu_backward},
    {"sigmoid", kernels::cpu::sigmoid_forward, kernels::sigmoid_forward, kernels::cpu::sigmoid_backward,
     kernels::sigmoid_backward},
    {"softplus", kernels::cpu::softplus_forward, kernels::softplus_forward, kernels::cpu::softplus_backward,
     kernels::softplus_backward},
};

// A view taken on each side after the copy (Tensor::to(Device) makes a contiguous copy, so
// views must be made on the GPU tensor itself).
using View = std::function<Tensor(const Tensor&)>;
const View kSame = [](const Tensor& t) { return t; };
const View kT = [](const Tensor& t) { return t.t(); };

void check_unary(const Tensor& x_base, const Tensor& dy, DType dt, const std::string& tag, const View& vx = kSame) {
  const Tensor xg = vx(x_base.to(gpu)), xr = vx(x_base.to(ref_of(dt)));
  for (const Unary& u : kUnary) {
    const Tensor y = u.any_f(xg);
    ASSERT_TRUE(y.is_cuda());
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_CUDA_CLOSE(y, u.cpu_f(xr), rtol_of(dt), what(std::string(u.name) + tag, dt, xr.shape()));
    const Tensor dx = u.any_b(dy.to(gpu), xg);
    EXPECT_CUDA_CLOSE(dx, u.cpu_b(dy.to(ref_of(dt)), xr), rtol_of(dt),
                      what(std::string(u.name) + " backward" + tag, dt, xr.shape()));
  }
}

TEST(CudaActivation, UnaryForwardBackward) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : kShapes) check_unary(input(s, 1, dt), cudatest::randn_cpu(s, 2, dt), dt, "");
  }
  // Non-contiguous inputs: a transposed view, and every other column (a strided row form).
  check_unary(input({13, 7}, 3, DType::F32), cudatest::randn_cpu({7, 13}, 4), DType::F32, " (transposed)", kT);
  check_unary(input({9, 40}, 5, DType::F32), cudatest::randn_cpu({9, 20}, 6), DType::F32, " (strided)",
              [](const Tensor& t) { return t.slice(1, 0, 40, 2); });
  // Dense but off 16-byte alignment: the scalar path.
  check_unary(input({100004}, 7, DType::BF16), cudatest::randn_cpu({100003}, 8, DType::BF16), DType::BF16,
              " (unaligned)", [](const Tensor& t) { return t.narrow(0, 1, 100003); });
}

void check_swiglu(const Tensor& g_base, const Tensor& u_base, const Tensor& dy, DType dt, const std::string& tag,
                  const View& vg = kSame, const View& vu = kSame) {
  const DType r = ref_of(dt);
  const double rtol = rtol_of(dt);
  const Tensor gg = vg(g_base.to(gpu)), ug = vu(u_base.to(gpu)), gr = vg(g_base.to(r)), ur = vu(u_base.to(r));
  EXPECT_CUDA_CLOSE(kernels::swiglu_forward(gg, ug), kernels::cpu::swiglu_forward(gr, ur), rtol,
                    what("swiglu" + tag, dt, gr.shape()));
  auto [dg, du] = kernels::swiglu_backward(dy.to(gpu), gg, ug);
  auto [dg_ref, du_ref] = kernels::cpu::swiglu_backward(dy.to(r), gr, ur);
  EXPECT_CUDA_CLOSE(dg, dg_ref, rtol, what("swiglu dgate" + tag, dt, gr.shape()));
  EXPECT_CUDA_CLOSE(du, du_ref, rtol, what("swiglu dup" + tag, dt, gr.shape()));
}

TEST(CudaActivation, SwigluSplit) {
  HYMBA_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : kShapes)
      check_swiglu(input(s, 10, dt), cudatest::randn_cpu(s, 11, dt), cudatest::randn_cpu(s, 12, dt), dt, "");
  }
  // Gate and up as halves of one packed tensor (row stride 2H), and a transposed gate.
  const Tensor packed = input({33, 2 * 45}, 13, DType::F32);
  check_swiglu(packed, packed, cudatest::randn_cpu({33, 45}, 14), DType::F32, " (halves)",
               [](const Tensor& t) { return t.narrow(1, 0, 45); }, [](const Tensor& t) { return t.narrow(1, 45, 45); });
  check_swiglu(input({45, 33}, 15, DType::F32), cudatest::randn_cpu({33, 45}, 16), cudatest::randn_cpu({33, 45}, 17),
               DType::F32, " (transposed gate)", kT);
}

TEST(CudaActivation, SwigluPacked) {
  HYMBA_REQUIRE_GPU();
  // H = 1 (one-element rows), 8 (vectors fit exactly for bf16), 37 (no vector fits a row
  // start), 1000 (aligned rows with a tail for f32: 2H = 2000), and batch dims.
  const Shape shapes[] = {{5, 2}, {3, 16}, {4, 74}, {2, 3, 2000}, {1, 2 * 1001}};
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const DType r = ref_of(dt);
    for (const Shape& s : shapes) {
      const Tensor x = input(s, 20, dt);
      Shape ys = s;
      ys.back() /= 2;
      const Tensor dy = cudatest::randn_cpu(ys, 21, dt);
      EXPECT_CUDA_CLOSE(kernels::swiglu_packed_forward(x.to(gpu)), kernels::cpu::swiglu_packed_forward(x.to(r)),
                        rtol_of(dt), what("swiglu_packed", dt, s));
      EXPECT_CUDA_CLOSE(kernels::swiglu_packed_backward(dy.to(gpu), x.to(gpu)),
                        kernels::cpu::swiglu_packed_backward(dy.to(r), x.to(r)), rtol_of(dt),
                        what("swiglu_packed backward", dt, s));
    }
  }
  // A non-contiguous packed input (transposed storage).
  const Tensor xb = input({60, 7}, 22, DType::F32);
  const Tensor dyt = cudatest::randn_cpu({7, 30}, 23);
  EXPECT_CUDA_CLOSE(kernels::swiglu_packed_forward(xb.to(gpu).t()), kernels::cpu::swiglu_packed_forward(xb.t()), 1e-5,
                    "swiglu_packed transposed");
  EXPECT_CUDA_CLOSE(kernels::swiglu_packed_backward(dyt.to(gpu), xb.to(gpu).t()),
                    kernels::cpu::swiglu_packed_backward(dyt, xb.t()), 1e-5, "swiglu_packed backward transposed");
}

}  // namespace
}  // namespace hymba
