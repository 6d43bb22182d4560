// The NCCL communicator: CUDA tensors of the current device, collectives on a dedicated
// non-blocking stream ordered after the legacy default stream (where every kernel of this
// framework runs) by events, so a bucket's reduction overlaps the rest of backward.
//
// Ordering: a collective first makes its stream wait for an event recorded on the legacy
// stream (the gradients it reads were written there); Work::wait() polls the completion
// event from the host, checking ncclCommGetAsyncError and a deadline (a peer that died makes
// NCCL wait forever otherwise; ncclCommAbort then unblocks the stream), and finally makes
// the legacy stream wait for the completion event.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "core/cuda_check.h"
#include "core/error.h"
#include "train/communicator.h"
#include "train/distributed.h"

#define HYMBA_NCCL_CHECK(expr, ...)                                                                   \
  do {                                                                                                \
    ncclResult_t hymba_nccl_rc_ = (expr);                                                             \
    if (hymba_nccl_rc_ != ncclSuccess) [[unlikely]] {                                                 \
      HYMBA_FAIL("NCCL error ", int(hymba_nccl_rc_), " (", ncclGetErrorString(hymba_nccl_rc_), ") in ", \
                 #expr, ::hymba::detail::str_cat("" __VA_OPT__(, ": ", ) __VA_ARGS__));               \
    }                                                                                                 \
  } while (0)

namespace hymba::train {
namespace {

static_assert(NCCL_UNIQUE_ID_BYTES % sizeof(int32_t) == 0, "the unique id travels as int32 words");
static_assert(NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10), "ReduceOp::Avg needs ncclAvg (NCCL 2.10)");

ncclDataType_t nccl_type(const Tensor& t, const char* op) {
  switch (t.dtype()) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U8: return ncclUint8;
  }
  HYMBA_FAIL(op, ": unsupported dtype ", t.meta_str());
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclAvg; }

class NcclCommunicator;

class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator* owner, cudaEvent_t done, const char* what, std::vector<Tensor> keep)
      : owner_(owner), done_event_(done), what_(what), keep_(std::move(keep)) {}
  ~NcclWork() override;
  bool test() override;
  void wait() override;

 private:
  NcclCommunicator* owner_;
  cudaEvent_t done_event_;
  const char* what_;
  std::vector<Tensor> keep_;  // the buffers live until the collective has read/written them
  bool done_ = false, failed_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Communicator& bootstrap)
      : rank_(bootstrap.rank()), world_(bootstrap.world()), local_rank_(bootstrap.local_rank()) {
    HYMBA_CUDA_CHECK(cudaGetDevice(&device_), "NCCL communicator: current device");
    HYMBA_CHECK(world_ >= 1 && rank_ >= 0 && rank_ < world_, "NCCL communicator: rank ", rank_, " of ", world_);
    ncclUniqueId id{};
    if (rank_ == 0) HYMBA_NCCL_CHECK(ncclGetUniqueId(&id));
    // Rank 0's id reaches the others through the bootstrap (MPI: CPU tensors); one rank
    // already has it, so a build without MPI still gets a working 1-rank communicator.
    if (world_ > 1) {
      HYMBA_CHECK(bootstrap.device().is_cpu(), "NCCL communicator: the bootstrap must carry CPU tensors, it is ",
                  bootstrap.backend());
      Tensor words = zeros({int64_t(NCCL_UNIQUE_ID_BYTES / sizeof(int32_t))}, DType::I32);
      if (rank_ == 0) std::memcpy(words.data_ptr(), id.internal, NCCL_UNIQUE_ID_BYTES);
      bootstrap.broadcast(words, 0);
      std::memcpy(id.internal, words.data_ptr(), NCCL_UNIQUE_ID_BYTES);
    }
    HYMBA_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_), "rank ", rank_, " of ", world_, " on cuda:",
                     device_);
    HYMBA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  ~NcclCommunicator() override {
    // Destructors must not throw; a failure here means the context is already broken.
    if (stream_ != nullptr && cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
    if (comm_ != nullptr) (void)ncclCommDestroy(comm_);
    if (stream_ != nullptr && cudaStreamDestroy(stream_) != cudaSuccess) (void)cudaGetLastError();
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check(t, "all_reduce", "tensor");
    return launch("all_reduce", {t}, [&] {
      HYMBA_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t, "all_reduce"),
                                     nccl_op(op), comm_, stream_),
                       t.meta_str());
    });
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check(in, "reduce_scatter", "input");
    check(out, "reduce_scatter", "output");
    HYMBA_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel() * world_, "reduce_scatter: input ",
                in.meta_str(), " must hold world (", world_, ") x output ", out.meta_str());
    return launch("reduce_scatter", {in, out}, [&] {
      HYMBA_NCCL_CHECK(ncclReduceScatter(in.data_ptr(), out.data_ptr(), size_t(out.numel()),
                                         nccl_type(out, "reduce_scatter"), nccl_op(op), comm_, stream_),
                       out.meta_str());
    });
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    check(in, "all_gather", "input");
    check(out, "all_gather", "output");
    HYMBA_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * world_, "all_gather: output ",
                out.meta_str(), " must hold world (", world_, ") x input ", in.meta_str());
    return launch("all_gather", {in, out}, [&] {
      HYMBA_NCCL_CHECK(ncclAllGather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), nccl_type(in, "all_gather"),
                                     comm_, stream_),
                       in.meta_str());
    });
  }

  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check(t, "broadcast", "tensor");
    HYMBA_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " out of range for world ", world_);
    return launch("broadcast", {t}, [&] {
      HYMBA_NCCL_CHECK(
          ncclBroadcast(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t, "broadcast"), root, comm_, stream_),
          t.meta_str());
    });
  }

  void barrier() override {
    Tensor one = zeros({1}, TensorOptions(DType::I32, Device::cuda(device_)));
    all_reduce_async(one, ReduceOp::Sum)->wait();
  }

  // Called by a Work whose wait found an error or ran out of time: unblocks the stream so the
  // process can exit, and makes every later call fail instead of hanging.
  void abort_comm() {
    if (comm_ != nullptr) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  ncclComm_t comm() const { return comm_; }

 private:
  void check(const Tensor& t, const char* op, const char* what) const {
    check_collective_tensor(t, op, what);
    HYMBA_CHECK(t.is_cuda() && t.device().index == device_, op, ": the NCCL communicator of cuda:", device_,
                " carries tensors of that device, ", what, " is ", t.meta_str());
    HYMBA_CHECK(comm_ != nullptr, op, ": the NCCL communicator was aborted after an earlier error");
  }

  template <typename Launch>
  std::unique_ptr<Work> launch(const char* what, std::vector<Tensor> keep, Launch&& fn) {
    cuda::DeviceGuard guard(device_);
    cudaEvent_t ready = nullptr, done = nullptr;
    HYMBA_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    HYMBA_CUDA_CHECK(cudaEventRecord(ready, cudaStreamLegacy), what);
    HYMBA_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0), what);
    // The event is released once the recorded work completes, even if destroyed before.
    HYMBA_CUDA_CHECK(cudaEventDestroy(ready));
    fn();
    HYMBA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    HYMBA_CUDA_CHECK(cudaEventRecord(done, stream_), what);
    return std::make_unique<NcclWork>(this, done, what, std::move(keep));
  }

  int rank_, world_, local_rank_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

NcclWork::~NcclWork() {
  if (!done_ && !failed_ && std::uncaught_exceptions() == 0) {
    try {
      wait();
    } catch (const std::exception& e) {
      fail_job(e.what());
    }
  }
  if (done_event_ != nullptr && cudaEventDestroy(done_event_) != cudaSuccess) (void)cudaGetLastError();
}

bool NcclWork::test() {
  if (done_) return true;
  cudaError_t st = cudaEventQuery(done_event_);
  if (st == cudaSuccess) {
    done_ = true;
    keep_.clear();
    return true;
  }
  if (st != cudaErrorNotReady) {
    failed_ = true;
    HYMBA_CUDA_CHECK(st, "NCCL ", what_);
  }
  ncclResult_t async = ncclSuccess;
  if (owner_->comm() != nullptr) HYMBA_NCCL_CHECK(ncclCommGetAsyncError(owner_->comm(), &async));
  if (async != ncclSuccess && async != ncclInProgress) {
    failed_ = true;
    const char* last = owner_->comm() != nullptr ? ncclGetLastError(owner_->comm()) : "";
    owner_->abort_comm();
    HYMBA_FAIL("NCCL ", what_, " failed asynchronously: ", ncclGetErrorString(async), " (", last, ")");
  }
  return false;
}

void NcclWork::wait() {
  if (done_) return;
  using Clock = std::chrono::steady_clock;
  const double timeout = collective_timeout_seconds();
  const auto t0 = Clock::now();
  for (int polls = 0; !test(); ++polls) {
    if (polls > 200) std::this_thread::sleep_for(std::chrono::microseconds(20));
    if (std::chrono::duration<double>(Clock::now() - t0).count() > timeout) {
      failed_ = true;
      owner_->abort_comm();
      HYMBA_FAIL("NCCL ", what_, " did not complete within ", timeout,
                 " s (HYMBA_COLLECTIVE_TIMEOUT): another rank has failed or hung");
    }
  }
  // The host saw completion, so later launches are ordered after it already; the stream
  // wait keeps that true should wait() ever stop polling.
  HYMBA_CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done_event_, 0), "NCCL ", what_);
}

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap) {
  return std::make_shared<NcclCommunicator>(bootstrap);
}

}  // namespace hymba::train
