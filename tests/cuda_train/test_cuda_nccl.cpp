// The NCCL communicator with one rank, which needs no MPI (the single-process communicator
// bootstraps it): every collective on CUDA tensors of awkward sizes, in f32 and bf16, gives
// what the 1-rank definitions say (sum, average, broadcast: the input; reduce-scatter and
// all-gather: a copy), bit for bit; async work is ordered after the kernels that wrote its
// input and before the kernels that read its output; and one data-parallel training step
// through the NCCL communicator (bucketed gradient reduction, both DDP and ZeRO-1 layouts)
// equals the same step without a communicator. The multi-rank NCCL test is in tests/dist
// (MPI). Every test skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "layers/model.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/train/train_test_util.h"
#include "train/communicator.h"
#include "train/ddp.h"
#include "train/eval.h"
#include "train/optimizer.h"

namespace hymba::train {
namespace {

using cudatest::randn_cpu;

// One NCCL rank on cuda:0: the bootstrap has nothing to send (rank 0 makes the unique id).
std::shared_ptr<Communicator> nccl_one_rank() {
  HYMBA_CUDA_CHECK(cudaSetDevice(0));
  auto boot = make_single_process_communicator();
  auto comm = make_nccl_communicator(*boot);
  EXPECT_EQ(comm->world(), 1);
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_TRUE(comm->device().is_cuda());
  return comm;
}

const DType kDtypes[] = {DType::F32, DType::BF16};
// Not multiples of a warp, a block or NCCL's chunk sizes; one element; one large buffer.
const int64_t kSizes[] = {1, 7, 1031, 300007};

// Exact: with one rank every collective returns or copies its input.
#define EXPECT_CUDA_EXACT(got, want, what) EXPECT_CUDA_CLOSE(got, want, 0.0, what)

TEST(CudaNccl, OneRankCollectivesGiveTheOneRankResults) {
  HYMBA_REQUIRE_GPU();
  auto comm = nccl_one_rank();
  const Device dev = comm->device();
  uint64_t seed = 100;
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      const std::string what = std::string(dtype_name(dt)) + " n=" + std::to_string(n);
      const Tensor x = randn_cpu({n}, ++seed, dt);
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
        Tensor t = x.to(dev);
        comm->all_reduce(t, op);
        EXPECT_CUDA_EXACT(t, x, "all_reduce " + std::string(to_string(op)) + " " + what);
      }
      // Outputs come from the poisoned allocator: an element NCCL skipped stays NaN.
      Tensor rs = empty({n}, TensorOptions(dt, dev));
      comm->reduce_scatter(x.to(dev), rs, ReduceOp::Sum);
      EXPECT_CUDA_EXACT(rs, x, "reduce_scatter sum " + what);
      Tensor rsa = empty({n}, TensorOptions(dt, dev));
      comm->reduce_scatter(x.to(dev), rsa, ReduceOp::Avg);
      EXPECT_CUDA_EXACT(rsa, x, "reduce_scatter avg " + what);
      Tensor ag = empty({n}, TensorOptions(dt, dev));
      comm->all_gather(x.to(dev), ag);
      EXPECT_CUDA_EXACT(ag, x, "all_gather " + what);
      Tensor b = x.to(dev);
      comm->broadcast(b, 0);
      EXPECT_CUDA_EXACT(b, x, "broadcast " + what);
    }
  }
  comm->barrier();
  // The scalar helpers travel through one-element tensors on the GPU.
  EXPECT_EQ(comm->all_reduce_sum(int64_t(41)), 41);
  EXPECT_DOUBLE_EQ(comm->all_reduce_sum(2.5), 2.5);
}

// A collective waits for the kernel that wrote its input (recorded on the legacy stream),
// and once waited, a kernel reading its output sees the result. Several collectives are in
// flight at once, completed out of order, and polled with test().
TEST(CudaNccl, AsyncWorkIsOrderedWithTheKernelsAroundIt) {
  HYMBA_REQUIRE_GPU();
  auto comm = nccl_one_rank();
  const Device dev = comm->device();
  for (DType dt : kDtypes) {
    const int64_t n = 1 << 20;  // large enough that the scale kernel is still running
    const Tensor x = randn_cpu({n}, 7, dt), y = randn_cpu({n + 3}, 8, dt);
    Tensor a = kernels::scalar(kernels::ScalarOp::Mul, x.to(dev), 2.0);
    Tensor b = kernels::scalar(kernels::ScalarOp::Mul, y.to(dev), -1.0);
    Tensor g = empty({n + 3}, TensorOptions(dt, dev));
    auto wa = comm->all_reduce_async(a, ReduceOp::Avg);
    auto wg = comm->all_gather_async(b, g);
    auto wb = comm->broadcast_async(b, 0);
    wg->wait();
    wg->wait();  // waiting twice is harmless
    for (int i = 0; i < 1000000 && !wb->test(); ++i) {
    }
    wb->wait();
    EXPECT_TRUE(wb->test());
    wa->wait();
    // Read right after wait(): an unordered read would see the poison (NaN) of `g`.
    Tensor g_after = kernels::scalar(kernels::ScalarOp::Mul, g, 4.0);
    // The CPU kernels take f32; x2, x(-1) and x4 of bf16 values are exact in bf16 too.
    const Tensor want_a = kernels::scalar(kernels::ScalarOp::Mul, x.to(DType::F32), 2.0);
    const Tensor want_b = kernels::scalar(kernels::ScalarOp::Mul, y.to(DType::F32), -1.0);
    const std::string name = dtype_name(dt);
    EXPECT_CUDA_EXACT(a, want_a, "all_reduce after a kernel, " + name);
    EXPECT_CUDA_EXACT(g_after, kernels::scalar(kernels::ScalarOp::Mul, want_b, 4.0), "a kernel after all_gather, " + name);
    EXPECT_CUDA_EXACT(g, want_b, "all_gather after a kernel, " + name);
    EXPECT_CUDA_EXACT(b, want_b, "broadcast, " + name);
  }
  {
    // An unwaited Work waits in its destructor, before its buffers may go.
    Tensor t = randn_cpu({4097}, 9).to(dev);
    comm->all_reduce_async(t, ReduceOp::Sum);
    EXPECT_CUDA_EXACT(t, randn_cpu({4097}, 9), "all_reduce waited by the destructor");
  }
}

// A deterministic "model": parameters of awkward shapes and loss = sum_i sum(P_i * C_i), so
// dloss/dP_i = C_i exactly (elementwise kernels only; the tiny model's backward uses atomics
// and is reproducible only up to rounding). `grads` scales C per step so steps differ.
struct Synthetic {
  NamedTensors params;
  std::vector<Tensor> coef;
  explicit Synthetic(uint64_t seed) {
    const Shape shapes[] = {{3, 5}, {7}, {1031}, {2, 129}, {1}, {40, 33}};
    const char* names[] = {"w0", "w1", "w2", "w3", "w4", "w5"};
    for (size_t i = 0; i < std::size(shapes); ++i) {
      Tensor p = randn_cpu(shapes[i], seed + i).to(Device::cuda());
      p.set_requires_grad(true);
      params.emplace_back(names[i], p);
      coef.push_back(randn_cpu(shapes[i], seed + 100 + i).to(Device::cuda()));
    }
  }
  std::vector<Tensor> tensors() const {
    std::vector<Tensor> ps;
    for (const auto& [name, p] : params) ps.push_back(p);
    return ps;
  }
  Tensor loss(double scale) const {
    Tensor l;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor li = sum(mul(params[i].second, mul(coef[i], scale)));
      l = l.defined() ? add(l, li) : li;
    }
    return l;
  }
};

// Small buckets (0.002 MiB = 524 f32) so that the 6 parameters spread over several buckets,
// one larger than the cap alone, and the copies in and out of the flat buffers are exercised.
constexpr double kBucketMb = 0.002;

// Two AdamW steps with gradients reduced over the 1-rank NCCL communicator (plain DDP)
// equal the same steps with no communicator, bit for bit: a sum over one rank is exact.
TEST(CudaNccl, OneRankDdpStepEqualsTheStepWithoutCommunicator) {
  HYMBA_REQUIRE_GPU();
  auto comm = nccl_one_rank();
  Synthetic ref(31), ddp(31);
  AdamW o_ref(default_param_groups(ref.params, 0.1)), o_ddp(default_param_groups(ddp.params, 0.1));
  GradReducer reducer(comm, ddp.tensors(), kBucketMb, ReduceMode::AllReduce);
  ASSERT_GE(reducer.buckets().size(), 3u);
  for (int step = 0; step < 2; ++step) {
    const double scale = 1.0 + step;
    ref.loss(scale).backward();
    reducer.begin_backward(/*reduce_this_backward=*/true);
    ddp.loss(scale).backward();
    reducer.finish();
    for (size_t i = 0; i < ref.params.size(); ++i) {
      const std::string name = ref.params[i].first + ", step " + std::to_string(step);
      ASSERT_TRUE(reducer.has_grad(i)) << name;
      EXPECT_CUDA_EXACT(ddp.params[i].second.grad(), ref.params[i].second.grad(), "reduced grad " + name);
    }
    EXPECT_EQ(o_ddp.clip_grad_norm_(1.0), o_ref.clip_grad_norm_(1.0)) << "step " << step;
    o_ref.step(1e-2);
    o_ddp.step(1e-2);
    o_ref.zero_grad();
    o_ddp.zero_grad();
    reducer.clear();
  }
  for (size_t i = 0; i < ref.params.size(); ++i)
    EXPECT_CUDA_EXACT(ddp.params[i].second, ref.params[i].second, "param " + ref.params[i].first);
  for (const auto& [name, t] : o_ref.state_dict()) {
    bool found = false;
    for (const auto& [name2, t2] : o_ddp.state_dict())
      if (name2 == name) {
        found = true;
        EXPECT_CUDA_EXACT(t2, t, "AdamW state " + name);
      }
    EXPECT_TRUE(found) << name;
  }
}

// ZeRO-1's layout: with one rank, each bucket's shard is the whole padded bucket, holding
// every parameter's gradient at its slot.
TEST(CudaNccl, OneRankReduceScatterShardsHoldTheGradients) {
  HYMBA_REQUIRE_GPU();
  auto comm = nccl_one_rank();
  Synthetic ref(47), zero(47);
  GradReducer reducer(comm, zero.tensors(), kBucketMb, ReduceMode::ReduceScatter);
  ref.loss(1.0).backward();
  reducer.begin_backward(true);
  zero.loss(1.0).backward();
  reducer.finish();
  int64_t covered = 0;
  for (size_t b = 0; b < reducer.buckets().size(); ++b) {
    const Bucket& bk = reducer.buckets()[b];
    const Tensor& shard = reducer.grad_shard(b);
    ASSERT_EQ(shard.numel(), bk.padded);
    ASSERT_TRUE(shard.device().is_cuda());
    for (const BucketSlot& s : bk.slots) {
      const Tensor& want = ref.params[s.param].second.grad();
      EXPECT_CUDA_EXACT(shard.narrow(0, s.offset, s.numel), want.reshape({-1}),
                        "bucket " + std::to_string(b) + " " + ref.params[s.param].first);
      covered += s.numel;
    }
  }
  int64_t total = 0;
  for (const auto& [name, p] : ref.params) total += p.numel();
  EXPECT_EQ(covered, total);
}

// The tiny hybrid model on the GPU: the gradients reduced over the 1-rank NCCL communicator
// match a plain backward (up to the atomics' rounding in the CUDA backward), and every
// parameter that got a gradient is flagged.
TEST(CudaNccl, OneRankDdpOnTheTinyModelMatchesPlainBackward) {
  HYMBA_REQUIRE_GPU();
  auto comm = nccl_one_rank();
  const ModelConfig cfg = parse_model_config_string(testing::kTinyModelYaml, "tiny.yaml");
  Model ref(cfg, 5), ddp(cfg, 5);
  ref.to(Device::cuda());
  ddp.to(Device::cuda());
  std::vector<Tensor> ps;
  for (const auto& [name, p] : ddp.named_parameters()) ps.push_back(p);
  GradReducer reducer(comm, ps, kBucketMb, ReduceMode::AllReduce);
  Generator gen(9);
  Tensor u = rand({3, 13}, {}, &gen);
  std::vector<int32_t> ids(39), tgt(39, -100);
  for (size_t i = 0; i < 39; ++i) ids[i] = int32_t(u.data<float>()[i] * 63.0f);
  for (size_t i = 0; i + 1 < 39; ++i)
    if ((i + 1) % 13 != 0) tgt[i] = ids[i + 1];
  const Tensor id = from_vector(ids, {3, 13}, DType::I32).to(Device::cuda());
  const Tensor tg = from_vector(tgt, {3, 13}, DType::I32).to(Device::cuda());
  Tensor lr = model_loss(ref, id, tg);
  lr.backward();
  reducer.begin_backward(true);
  Tensor ld = model_loss(ddp, id, tg);
  ld.backward();
  reducer.finish();
  EXPECT_CUDA_CLOSE(ld.detach(), lr.detach(), 1e-5, "loss");
  const NamedTensors pr = ref.named_parameters(), pd = ddp.named_parameters();
  ASSERT_EQ(pr.size(), pd.size());
  for (size_t i = 0; i < pr.size(); ++i) {
    ASSERT_EQ(reducer.has_grad(i), pr[i].second.grad().defined()) << pr[i].first;
    if (reducer.has_grad(i)) EXPECT_CUDA_CLOSE(pd[i].second.grad(), pr[i].second.grad(), 1e-5, pr[i].first.c_str());
  }
}

}  // namespace
}  // namespace hymba::train
