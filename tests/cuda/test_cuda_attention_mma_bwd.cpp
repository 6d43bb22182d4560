// The mma.sync attention backward (kernels/cuda/attention_mma_bwd.cu, AttentionImpl::Mma)
// against the CPU kernel on the same inputs. The saved forward (out, lse) is the CPU
// forward's, copied to the GPU, so a forward bug cannot hide a backward one.
// Tolerance (norm-relative, tests/cuda/cuda_test_util.h): 2e-2, bf16 inputs against the CPU
// run in f32 on the same bf16 values (the kernel rounds P and dS to bf16 for its products).
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda_impl.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/attention_test_case.h"

namespace hymba {
namespace {

using kernels::AttentionParams;
using kernels::cuda::AttentionImpl;
using kernels::cuda::ImplGuard;

using Cfg = testutil::AttentionCase;
using testutil::cfg_str;

struct Needs {
  bool dq, dk, dv;
};
// The seven non-empty combinations of requested gradients.
const Needs kNeeds[] = {{true, true, true},  {true, false, false}, {false, true, false}, {false, false, true},
                        {false, true, true}, {true, true, false},  {true, false, true}};

constexpr double kRtol = 2e-2;

// bf16 inputs, on the CPU or already on the GPU (as non-contiguous or misaligned views); the
// reference reads the same values.
struct Inputs {
  Tensor q, k, v, dout;
};

Inputs make_inputs(const Cfg& c, uint64_t seed) {
  return {cudatest::randn_cpu({c.B, c.Hq, c.T, c.dk}, seed, DType::BF16),
          cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dk}, seed + 1, DType::BF16),
          cudatest::randn_cpu({c.B, c.Hkv, c.T, c.dv}, seed + 2, DType::BF16),
          cudatest::randn_cpu({c.B, c.Hq, c.T, c.dv}, seed + 3, DType::BF16)};
}

// The CPU forward and backward in f32 on the bf16 values, and the mma backward on the GPU
// from the same saved (out rounded to bf16, lse); every requested gradient compared.
void check_case(const Cfg& c, const Inputs& in, Needs need, double scale = 0) {
  SCOPED_TRACE(cfg_str(c) + " need dq/dk/dv=" + std::to_string(need.dq) + std::to_string(need.dk) +
               std::to_string(need.dv));
  const ImplGuard<AttentionImpl> impl(AttentionImpl::Mma);
  const Device gpu = Device::cuda();
  const AttentionParams p{scale, c.window, c.meta};
  const Device cpu = Device::cpu();
  const Tensor q = in.q.to(cpu).to(DType::F32), k = in.k.to(cpu).to(DType::F32), v = in.v.to(cpu).to(DType::F32);
  auto [out_ref, lse_ref] = kernels::cpu::attention_forward(q, k, v, p);
  const Tensor out_saved = out_ref.to(DType::BF16);
  auto [dq_ref, dk_ref, dv_ref] = kernels::cpu::attention_backward(in.dout.to(cpu).to(DType::F32), q, k, v,
                                                                   out_saved.to(DType::F32), lse_ref, p, true, true,
                                                                   true);
  auto [dq, dk, dv] = kernels::attention_backward(in.dout.to(gpu), in.q.to(gpu), in.k.to(gpu), in.v.to(gpu),
                                                  out_saved.to(gpu), lse_ref.to(gpu), p, need.dq, need.dk, need.dv);
  const Tensor* got[] = {&dq, &dk, &dv};
  const Tensor* want[] = {&dq_ref, &dk_ref, &dv_ref};
  const bool needed[] = {need.dq, need.dk, need.dv};
  const char* names[] = {"dq", "dk", "dv"};
  // When every query sees only itself the softmax is constant: dq and dk are zero and both
  // kernels return rounding noise, held to the tolerance relative to the scale of dv.
  const bool single_key = c.T == 1 || (c.window == 0 && c.meta == 0);
  const double dv_scale = cudatest::compare(dv_ref, dv_ref).max_ref;
  for (int g = 0; g < 3; ++g) {
    ASSERT_EQ(got[g]->defined(), needed[g]) << names[g];
    if (!needed[g]) continue;
    EXPECT_TRUE(got[g]->is_cuda()) << names[g];
    EXPECT_EQ(got[g]->dtype(), DType::BF16) << names[g];
    if (single_key && g < 2) {
      const cudatest::Diff e = cudatest::compare(*got[g], *want[g]);
      EXPECT_EQ(e.nans, 0) << names[g] << ": NaN (never written?)";
      EXPECT_LE(e.max_abs_err, kRtol * dv_scale) << names[g] << " (zero up to rounding)";
    } else {
      EXPECT_CUDA_CLOSE(*got[g], *want[g], kRtol, names[g]);
    }
  }
}

// Every T in {1, 17, 100, 300, 1000} with every window in {full, 0, 64, 255} and meta prefix
// in {0, 5, 128} (T below and above the window, a prefix longer than the sequence, one
// spanning key tiles). Head dims (64, 128) (Hymba), (128, 128), (40, 24) (padded to 64),
// batch 1 / 3, Hq = Hkv or Hq = 3 Hkv and the requested gradients rotate independently;
// T = 1000 keeps B = 1 so the CPU reference stays quick.
TEST(CudaAttentionMmaBackward, MatchesCpu) {
  HYMBA_REQUIRE_GPU();
  const int64_t dims[][2] = {{64, 128}, {128, 128}, {40, 24}};
  uint64_t seed = 7000;
  int i = 0;
  for (int64_t T : {1, 17, 100, 300, 1000})
    for (int64_t W : {-1, 0, 64, 255})
      for (int64_t M : {0, 5, 128}) {
        const int sel = i++;
        const int64_t B = (sel / 3) % 2 && T < 1000 ? 3 : 1;
        const bool gqa = (sel / 2) % 2 == 0;
        const Cfg c{B, gqa ? 6 : 2, 2, T, dims[sel % 3][0], dims[sel % 3][1], W, M};
        check_case(c, make_inputs(c, seed += 10), kNeeds[sel % 7]);
      }
}

TEST(CudaAttentionMmaBackward, ExplicitScaleAndStridedInputs) {
  HYMBA_REQUIRE_GPU();
  const Cfg c{3, 6, 2, 130, 64, 128, 31, 5};
  Inputs in = make_inputs(c, 90);
  // On the GPU: q and k as permuted (B, T, H, d) projections; v a contiguous view starting
  // one element into its buffer (not 16-byte aligned).
  const Device gpu = Device::cuda();
  in.q = cudatest::randn_cpu({c.B, c.T, c.Hq, c.dk}, 91, DType::BF16).to(gpu).permute({0, 2, 1, 3});
  in.k = cudatest::randn_cpu({c.B, c.T, c.Hkv, c.dk}, 92, DType::BF16).to(gpu).permute({0, 2, 1, 3});
  const int64_t nv = c.B * c.Hkv * c.T * c.dv;
  in.v = cudatest::randn_cpu({nv + 1}, 93, DType::BF16).to(gpu).narrow(0, 1, nv).reshape({c.B, c.Hkv, c.T, c.dv});
  ASSERT_FALSE(in.q.is_contiguous());
  ASSERT_TRUE(in.v.is_contiguous());
  ASSERT_NE(reinterpret_cast<uintptr_t>(in.v.data_ptr()) % 16, 0u);
  check_case(c, in, {true, true, true}, 0.3);
}

TEST(CudaAttentionMmaBackward, IsDeterministic) {
  HYMBA_REQUIRE_GPU();
  const ImplGuard<AttentionImpl> impl(AttentionImpl::Mma);
  const Cfg c{3, 6, 2, 300, 64, 128, 64, 5};
  const AttentionParams p{0, c.window, c.meta};
  const Device gpu = Device::cuda();
  const Inputs in = make_inputs(c, 11);
  const Tensor q = in.q.to(gpu), k = in.k.to(gpu), v = in.v.to(gpu), dout = in.dout.to(gpu);
  auto [out, lse] = kernels::cpu::attention_forward(in.q.to(DType::F32), in.k.to(DType::F32), in.v.to(DType::F32), p);
  const Tensor out_g = out.to(DType::BF16).to(gpu), lse_g = lse.to(gpu);
  auto a = kernels::attention_backward(dout, q, k, v, out_g, lse_g, p);
  auto b = kernels::attention_backward(dout, q, k, v, out_g, lse_g, p);
  EXPECT_EQ(std::get<0>(a).to_vector<float>(), std::get<0>(b).to_vector<float>()) << "dq";
  EXPECT_EQ(std::get<1>(a).to_vector<float>(), std::get<1>(b).to_vector<float>()) << "dk";
  EXPECT_EQ(std::get<2>(a).to_vector<float>(), std::get<2>(b).to_vector<float>()) << "dv";
}

}  // namespace
}  // namespace hymba
