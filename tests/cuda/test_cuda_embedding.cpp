// Embedding CUDA kernels against the CPU kernels (kernels/embedding.h).
//
// Tolerances: the forward is a copy (exact: rtol 0). The backward adds each row's gradients
// in position order from zero, in fp32 for f32 - the CPU's order and precision - so f32 and
// f64 are held to 1e-6 / 1e-12 (bit equality is expected; the margin only guards against a
// compiler contracting differently). bf16 gradients: 2e-2 against the CPU on the widened
// values (fp32 sums, one bf16 rounding).
#include "kernels/embedding.h"
#include "tests/cuda/cuda_test_util.h"

namespace hymba {
namespace {

using cudatest::randn_cpu;

// n ids in [0, V) with many repeats, the padding row among them, from a fixed seed.
Tensor make_ids(const Shape& shape, int64_t V, uint64_t seed, DType dt) {
  Generator g(seed);
  Tensor u = rand(shape, DType::F64, &g, 0.0, 1.0);
  std::vector<int64_t> ids;
  for (double x : u.to_vector<double>()) {
    // Squared uniforms crowd the low ids: a few rows get many hits, most get none or one.
    ids.push_back(std::min<int64_t>(V - 1, int64_t(x * x * double(V))));
  }
  return from_vector<int64_t>(ids, shape).to(dt);
}

double bwd_rtol(DType dt) { return dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-6 : 2e-2; }
DType ref_dtype(DType dt) { return dt == DType::BF16 ? DType::F32 : dt; }

TEST(CudaEmbedding, ForwardGathersExactly) {
  HYMBA_REQUIRE_GPU();
  struct Case {
    int64_t V, H;
    Shape ids;
  };
  // H = 7: scalar path; H = 64 / 136: 16-byte vectors for every dtype.
  for (const Case& c : {Case{1003, 7, {3, 17}}, Case{1003, 64, {1, 1}}, Case{32001, 136, {4, 257}}}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      for (DType it : {DType::I64, DType::I32}) {
        const std::string what = str(dtype_name(dt), " V=", c.V, " H=", c.H, " ids ", dtype_name(it));
        Tensor w = randn_cpu({c.V, c.H}, 1, dt);
        Tensor ids = make_ids(c.ids, c.V, 2, it);
        Tensor y = kernels::embedding_forward(w.to(Device::cuda()), ids.to(Device::cuda()));
        Tensor want = kernels::cpu::embedding_forward(w.to(ref_dtype(dt)), ids);
        EXPECT_EQ(y.dtype(), dt) << what;
        EXPECT_CUDA_CLOSE(y, want, 0.0, "embedding " + what);
      }
    }
  }
}

TEST(CudaEmbedding, ForwardStridedWeight) {
  HYMBA_REQUIRE_GPU();
  Tensor base = randn_cpu({6, 1001}, 3);
  Tensor w = base.t();  // (1001, 6), column stride 1001: the scalar strided path
  Tensor ids = make_ids({5, 9}, 1001, 4, DType::I64);
  Tensor y = kernels::embedding_forward(w.to(Device::cuda()).t().contiguous().t(), ids.to(Device::cuda()));
  EXPECT_CUDA_CLOSE(y, kernels::cpu::embedding_forward(w, ids), 0.0, "strided weight");
}

TEST(CudaEmbedding, BackwardMatchesCpuWithRepeatsAndPadding) {
  HYMBA_REQUIRE_GPU();
  struct Case {
    int64_t V, H;
    Shape ids;
  };
  for (const Case& c : {Case{1003, 7, {3, 17}}, Case{1003, 64, {2, 500}}, Case{32001, 96, {4, 1025}}}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      for (int64_t pad : {int64_t(-1), int64_t(0), int64_t(5)}) {
        const std::string what = str(dtype_name(dt), " V=", c.V, " H=", c.H, " pad=", pad);
        Shape gs = c.ids;
        gs.push_back(c.H);
        Tensor ids = make_ids(c.ids, c.V, 5, DType::I32);
        Tensor g = randn_cpu(gs, 6, dt);
        Tensor dw = kernels::embedding_backward(g.to(Device::cuda()), ids.to(Device::cuda()), c.V, pad);
        Tensor want = kernels::cpu::embedding_backward(g.to(ref_dtype(dt)), ids, c.V, pad);
        EXPECT_EQ(dw.dtype(), dt) << what;
        EXPECT_CUDA_CLOSE(dw, want, bwd_rtol(dt), "embedding_backward " + what);
        if (pad >= 0) {  // the padding row is zero, not just close to the reference
          Tensor row = dw.select(0, pad).to(Device::cpu()).to(DType::F64);
          for (double v : row.to_vector<double>()) EXPECT_EQ(v, 0.0) << what;
        }
      }
    }
  }
}

// Every position hits one row: the longest possible sum, still in position order.
TEST(CudaEmbedding, BackwardAllIdsEqualIsDeterministic) {
  HYMBA_REQUIRE_GPU();
  const int64_t V = 9, H = 33, n = 3000;
  Tensor ids = full({n}, 4.0, DType::I64);
  Tensor g = randn_cpu({n, H}, 7);
  Tensor gc = g.to(Device::cuda()), ic = ids.to(Device::cuda());
  Tensor a = kernels::embedding_backward(gc, ic, V, -1);
  Tensor b = kernels::embedding_backward(gc, ic, V, -1);
  EXPECT_CUDA_CLOSE(a, kernels::cpu::embedding_backward(g, ids, V, -1), 1e-6, "all ids equal");
  EXPECT_EQ(a.to(Device::cpu()).to_vector<float>(), b.to(Device::cpu()).to_vector<float>());
}

TEST(CudaEmbedding, OutOfRangeIdsThrow) {
  HYMBA_REQUIRE_GPU();
  const int64_t V = 50;
  Tensor w = randn_cpu({V, 8}, 8).to(Device::cuda());
  Tensor g = randn_cpu({2, 3, 8}, 9).to(Device::cuda());
  for (int64_t bad : {int64_t(50), int64_t(-1), int64_t(1000000)}) {
    Tensor ids = from_vector<int64_t>({1, 2, 3, 4, bad, 0}, {2, 3}).to(Device::cuda());
    EXPECT_THROW(kernels::embedding_forward(w, ids), Error) << bad;
    EXPECT_THROW(kernels::embedding_backward(g, ids, V, -1), Error) << bad;
    EXPECT_THROW(kernels::embedding_forward(w, ids.to(DType::I32)), Error) << bad;
  }
  // The error names the bad id and its position, as on the CPU.
  Tensor ids = from_vector<int64_t>({1, 77, 3, 99, 0, 0}, {2, 3}).to(Device::cuda());
  try {
    kernels::embedding_forward(w, ids);
    ADD_FAILURE() << "no error for id 77";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("id 77 (at flat position 1"), std::string::npos) << e.what();
  }
  // The device is still usable after the error.
  Tensor ok = from_vector<int64_t>({1, 2}, {2}).to(Device::cuda());
  EXPECT_CUDA_CLOSE(kernels::embedding_forward(w, ok), kernels::cpu::embedding_forward(w.to(Device::cpu()),
                                                                                       ok.to(Device::cpu())),
                    0.0, "after error");
}

TEST(CudaEmbedding, EmptyIdsAndZeroWidth) {
  HYMBA_REQUIRE_GPU();
  Tensor w = randn_cpu({10, 4}, 10).to(Device::cuda());
  Tensor none = zeros({0}, TensorOptions(DType::I64, Device::cuda()));
  EXPECT_EQ(kernels::embedding_forward(w, none).shape(), (Shape{0, 4}));
  Tensor dw = kernels::embedding_backward(zeros({0, 4}, TensorOptions(DType::F32, Device::cuda())), none, 10, -1);
  EXPECT_EQ(dw.to(Device::cpu()).to_vector<float>(), std::vector<float>(40, 0.f));
  // H == 0 still range-checks the ids.
  Tensor w0 = zeros({10, 0}, TensorOptions(DType::F32, Device::cuda()));
  Tensor bad = from_vector<int64_t>({3, 10}, {2}).to(Device::cuda());
  EXPECT_THROW(kernels::embedding_forward(w0, bad), Error);
}

}  // namespace
}  // namespace hymba
