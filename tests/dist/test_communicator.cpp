// Communicators: every collective of the MPI communicator over the job's ranks, both reduce
// ops, every dtype it carries and awkward sizes, checked against values each rank can
// compute for all the others; the single-process communicator; the bucket layout; the
// timeout on a collective that a peer never joins. The NCCL communicator needs a GPU per
// rank and skips otherwise.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "train/communicator.h"
#include "train/ddp.h"
#include "train/distributed.h"

#ifdef HYMBA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hymba::train {
namespace {

// The value rank r contributes at element i: distinct per rank and element, exact in every
// dtype (small integers and halves).
double value(int r, int64_t i) { return double((r + 1) * 3 + (i % 17)) + (r % 2 ? 0.5 : 0.0); }

Tensor filled(DType dt, int64_t n, int r, int64_t index_offset = 0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = value(r, i + index_offset);
  if (dt == DType::I32 || dt == DType::I64)
    for (auto& x : v) x = std::floor(x);
  return from_vector<double>(v, {n}).to(dt, Device::cpu());
}

double expect_sum(DType dt, int world, int64_t i) {
  double s = 0;
  for (int r = 0; r < world; ++r) s += (dt == DType::I32 || dt == DType::I64) ? std::floor(value(r, i)) : value(r, i);
  return s;
}

const DType kDtypes[] = {DType::F32, DType::F64, DType::I32, DType::I64};
const int64_t kSizes[] = {1, 7, 1031};

TEST(MpiCommunicator, AllReduceSumAndAverage) {
  auto comm = job_communicator();
  const int W = comm->world(), R = comm->rank();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      Tensor t = filled(dt, n, R);
      comm->all_reduce(t, ReduceOp::Sum);
      std::vector<double> got = t.to_vector<double>();
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[size_t(i)], expect_sum(dt, W, i)) << dtype_name(dt) << " n=" << n << " i=" << i;
      if (dt == DType::F32 || dt == DType::F64) {
        Tensor a = filled(dt, n, R);
        comm->all_reduce(a, ReduceOp::Avg);
        std::vector<double> avg = a.to_vector<double>();
        for (int64_t i = 0; i < n; ++i)
          ASSERT_NEAR(avg[size_t(i)], expect_sum(dt, W, i) / W, 1e-6 * std::abs(expect_sum(dt, W, i)))
              << dtype_name(dt) << " n=" << n;
      } else {
        Tensor a = filled(dt, n, R);
        EXPECT_THROW(comm->all_reduce(a, ReduceOp::Avg), Error) << "an integer average is refused";
      }
    }
  }
}

TEST(MpiCommunicator, ReduceScatterGivesEachRankItsBlock) {
  auto comm = job_communicator();
  const int W = comm->world(), R = comm->rank();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      Tensor in = filled(dt, n * W, R), out = zeros({n}, dt);
      comm->reduce_scatter(in, out, ReduceOp::Sum);
      std::vector<double> got = out.to_vector<double>();
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[size_t(i)], expect_sum(dt, W, R * n + i)) << dtype_name(dt) << " n=" << n << " i=" << i;
    }
  }
  Tensor in = filled(DType::F64, 5 * W, R), out = zeros({5}, DType::F64);
  comm->reduce_scatter(in, out, ReduceOp::Avg);
  for (int64_t i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(out.to_vector<double>()[size_t(i)], expect_sum(DType::F64, W, R * 5 + i) / W);
  Tensor wrong = zeros({6}, DType::F64);
  EXPECT_THROW(comm->reduce_scatter(in, wrong), Error);
}

TEST(MpiCommunicator, AllGatherConcatenatesInRankOrder) {
  auto comm = job_communicator();
  const int W = comm->world(), R = comm->rank();
  for (DType dt : kDtypes) {
    for (int64_t n : kSizes) {
      Tensor in = filled(dt, n, R), out = zeros({n * W}, dt);
      comm->all_gather(in, out);
      std::vector<double> got = out.to_vector<double>();
      for (int r = 0; r < W; ++r)
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(got[size_t(r * n + i)], filled(dt, n, r).to_vector<double>()[size_t(i)])
              << dtype_name(dt) << " n=" << n << " block " << r;
    }
  }
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  auto comm = job_communicator();
  const int W = comm->world(), R = comm->rank();
  for (int root = 0; root < W; ++root) {
    for (DType dt : kDtypes) {
      Tensor t = filled(dt, 7, R);
      comm->broadcast(t, root);
      EXPECT_EQ(t.to_vector<double>(), filled(dt, 7, root).to_vector<double>()) << dtype_name(dt) << " root " << root;
    }
  }
  Tensor t = filled(DType::F32, 3, R);
  EXPECT_THROW(comm->broadcast(t, W), Error);
  comm->barrier();
}

TEST(MpiCommunicator, AsyncCollectivesOverlapAndCompleteInOrder) {
  auto comm = job_communicator();
  const int W = comm->world(), R = comm->rank();
  std::vector<Tensor> ts;
  std::vector<std::unique_ptr<Work>> work;
  for (int k = 0; k < 4; ++k) {
    ts.push_back(filled(DType::F32, 1000 + k, R));
    work.push_back(comm->all_reduce_async(ts.back(), ReduceOp::Sum));
  }
  for (auto& w : work) w->test();  // polling is allowed at any time
  for (int k = 3; k >= 0; --k) work[size_t(k)]->wait();  // in any order
  work[0]->wait();                                        // and twice
  for (int k = 0; k < 4; ++k) {
    EXPECT_TRUE(work[size_t(k)]->test());
    std::vector<float> got = ts[size_t(k)].to_vector<float>();
    for (int64_t i = 0; i < 1000 + k; ++i) ASSERT_EQ(got[size_t(i)], float(expect_sum(DType::F32, W, i)));
  }
  EXPECT_EQ(comm->all_reduce_sum(int64_t(R + 1)), int64_t(W * (W + 1) / 2));
  EXPECT_DOUBLE_EQ(comm->all_reduce_sum(0.25 * (R + 1)), 0.25 * W * (W + 1) / 2);
}

TEST(MpiCommunicator, RefusesWhatItCannotCarry) {
  auto comm = job_communicator();
  if (comm->world() == 1) GTEST_SKIP() << "world 1 uses the single-process communicator; run under mpirun -np 2";
  EXPECT_EQ(comm->backend(), "mpi");
  EXPECT_GE(comm->local_rank(), 0);
  Tensor m = zeros({4, 6});
  EXPECT_THROW(comm->all_reduce(m.slice(1, 0, 6, 2)), Error) << "non-contiguous";
  EXPECT_THROW(comm->all_reduce(zeros({3}, DType::BF16)), Error) << "bf16 on MPI";
  comm->barrier();
}

TEST(MpiCommunicator, CollectiveAPeerNeverJoinsTimesOut) {
  if (job_world() < 2) GTEST_SKIP() << "needs two ranks";
  // A communicator of its own: the abandoned collective cannot match a later one.
  auto comm = make_mpi_world_communicator();
  if (comm->rank() == 0) {
    const char* prev = std::getenv("HYMBA_COLLECTIVE_TIMEOUT");
    std::string saved = prev ? prev : "";
    setenv("HYMBA_COLLECTIVE_TIMEOUT", "1", 1);
    Tensor t = zeros({8});
    auto t0 = std::chrono::steady_clock::now();
    try {
      comm->all_reduce(t, ReduceOp::Sum);
      ADD_FAILURE() << "an all-reduce that rank 1 never joins completed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("all_reduce did not complete within 1 s"), std::string::npos) << e.what();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 5.0);
    if (prev)
      setenv("HYMBA_COLLECTIVE_TIMEOUT", saved.c_str(), 1);
    else
      unsetenv("HYMBA_COLLECTIVE_TIMEOUT");
  }
  job_communicator()->barrier();
}

TEST(SingleProcessCommunicator, CollectivesAreIdentitiesOrCopies) {
  auto comm = make_single_process_communicator();
  EXPECT_EQ(comm->world(), 1);
  EXPECT_EQ(comm->rank(), 0);
  Tensor t = filled(DType::F32, 7, 0);
  const std::vector<float> before = t.to_vector<float>();
  comm->all_reduce(t, ReduceOp::Sum);
  comm->all_reduce(t, ReduceOp::Avg);
  comm->broadcast(t, 0);
  EXPECT_EQ(t.to_vector<float>(), before);
  Tensor out = zeros({7});
  comm->reduce_scatter(t, out);
  EXPECT_EQ(out.to_vector<float>(), before);
  Tensor g = zeros({7});
  comm->all_gather(t, g);
  EXPECT_EQ(g.to_vector<float>(), before);
  EXPECT_THROW(comm->broadcast(t, 1), Error);
  EXPECT_EQ(comm->all_reduce_sum(int64_t(5)), 5);
}

TEST(Buckets, ReverseOrderCappedAndPadded) {
  std::vector<Tensor> ps = {zeros({10}), zeros({3, 4}), zeros({5}), zeros({100}), zeros({2})};
  // Cap 64 bytes = 16 floats; the walk is p4, p3, p2, p1, p0 and no two neighbours fit together.
  auto b = make_buckets(ps, 64, 3);
  ASSERT_EQ(b.size(), 5u);
  for (size_t k = 0; k < 5; ++k) {
    ASSERT_EQ(b[k].slots.size(), 1u);
    EXPECT_EQ(b[k].slots[0].param, 4 - k);
    EXPECT_EQ(b[k].slots[0].offset, 0);
    EXPECT_EQ(b[k].padded % 3, 0);
    EXPECT_LT(b[k].padded - b[k].numel, 3);
  }
  EXPECT_EQ(b[0].padded, 3);
  EXPECT_EQ(b[1].padded, 102);
  // Neighbours that fit share a bucket, the later-registered one first.
  auto two = make_buckets({zeros({4}), zeros({4}), zeros({20})}, 64, 2);
  ASSERT_EQ(two.size(), 2u);
  ASSERT_EQ(two[1].slots.size(), 2u);
  EXPECT_EQ(two[1].slots[0].param, 1u);
  EXPECT_EQ(two[1].slots[1].param, 0u);
  EXPECT_EQ(two[1].slots[1].offset, 4);
  EXPECT_EQ(two[1].numel, 8);
  auto big = make_buckets(ps, 1 << 20, 2);
  ASSERT_EQ(big.size(), 1u);
  ASSERT_EQ(big[0].slots.size(), 5u);
  EXPECT_EQ(big[0].slots[0].param, 4u);
  EXPECT_EQ(big[0].slots[1].offset, 2);
  EXPECT_EQ(big[0].slots[4].param, 0u);
  EXPECT_EQ(big[0].numel, 129);
  EXPECT_EQ(big[0].padded, 130);
  // One parameter larger than the cap still gets a bucket.
  auto one = make_buckets({zeros({1000})}, 16, 4);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].padded, 1000);
}

#ifdef HYMBA_WITH_CUDA
TEST(NcclCommunicator, AllCollectivesOnOneGpuPerRank) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    (void)cudaGetLastError();
    devices = 0;
  }
  auto boot = job_communicator();
  const int W = boot->world(), R = boot->rank();
  // NCCL refuses two ranks on one GPU.
  if (devices < W || devices == 0) GTEST_SKIP() << "needs one GPU per rank (" << W << "), found " << devices;
  cudaSetDevice(boot->local_rank() % devices);
  auto comm = make_nccl_communicator(*boot);
  const Device dev = Device::cuda(boot->local_rank() % devices);
  for (int64_t n : kSizes) {
    Tensor t = filled(DType::F32, n, R).to(dev);
    comm->all_reduce(t, ReduceOp::Sum);
    std::vector<float> got = t.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], float(expect_sum(DType::F32, W, i)));
    Tensor a = filled(DType::F32, n, R).to(dev);
    comm->all_reduce(a, ReduceOp::Avg);
    std::vector<float> avg = a.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(avg[size_t(i)], expect_sum(DType::F32, W, i) / W, 1e-5);
    Tensor in = filled(DType::F32, n * W, R).to(dev), out = zeros({n}, TensorOptions(DType::F32, dev));
    comm->reduce_scatter(in, out, ReduceOp::Sum);
    std::vector<float> rs = out.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(rs[size_t(i)], float(expect_sum(DType::F32, W, R * n + i)));
    Tensor gin = filled(DType::F32, n, R).to(dev), gout = zeros({n * W}, TensorOptions(DType::F32, dev));
    comm->all_gather(gin, gout);
    std::vector<float> gg = gout.to_vector<float>();
    for (int r = 0; r < W; ++r)
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(gg[size_t(r * n + i)], float(value(r, i)));
    Tensor b = filled(DType::F32, n, R).to(dev);
    comm->broadcast(b, W - 1);
    EXPECT_EQ(b.to_vector<float>(), filled(DType::F32, n, W - 1).to_vector<float>());
  }
  comm->barrier();
}
#endif

}  // namespace
}  // namespace hymba::train
