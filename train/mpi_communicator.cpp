// The MPI communicator: CPU tensors, non-blocking collectives (MPI_Iallreduce and friends)
// completed by polling, so every wait has a deadline.
#include <mpi.h>

#include <chrono>
#include <climits>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "train/communicator.h"
#include "train/distributed.h"

namespace hymba::train {
namespace {

MPI_Datatype mpi_type(const Tensor& t, const char* op) {
  switch (t.dtype()) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    default: break;
  }
  HYMBA_FAIL(op, ": MPI communicator supports f32, f64, i32 and i64 tensors, got ", t.meta_str());
}

int mpi_count(const Tensor& t, const char* op) {
  HYMBA_CHECK(t.numel() <= INT_MAX, op, ": ", t.meta_str(), " has more elements than one MPI call can carry");
  return int(t.numel());
}

void check_cpu(const Tensor& t, const char* op, const char* what) {
  check_collective_tensor(t, op, what);
  HYMBA_CHECK(t.is_cpu(), op, ": the MPI communicator carries CPU tensors, ", what, " is ", t.meta_str());
}

void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  HYMBA_FAIL(call, " failed: ", std::string(msg, size_t(len)));
}

// Tensors whose collective was abandoned (a timeout, or unwinding from an error): freeing
// them could let MPI write into reused memory, and the job is about to end anyway.
std::vector<Tensor>& abandoned() {
  static std::vector<Tensor> v;
  return v;
}

class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request req, const char* what, std::vector<Tensor> keep, Tensor avg_of, int world)
      : req_(req), what_(what), keep_(std::move(keep)), avg_of_(std::move(avg_of)), world_(world) {}

  ~MpiWork() override {
    if (done_) return;
    if (failed_ || std::uncaught_exceptions() > 0) {
      for (Tensor& t : keep_) abandoned().push_back(std::move(t));
      return;
    }
    try {
      wait();
    } catch (const std::exception& e) {
      fail_job(e.what());  // a destructor cannot throw: end the job with the message instead
    }
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    mpi_check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) complete();
    return done_;
  }

  void wait() override {
    if (done_) return;
    using Clock = std::chrono::steady_clock;
    const double timeout = collective_timeout_seconds();
    const auto t0 = Clock::now();
    // Spin briefly (a collective between idle ranks completes in microseconds), then poll
    // gently so a rank waiting for a slow peer leaves the core to the peer's threads.
    for (int spins = 0;; ++spins) {
      if (test()) return;
      if (spins > 200) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if (std::chrono::duration<double>(Clock::now() - t0).count() > timeout) {
        failed_ = true;
        HYMBA_FAIL("MPI ", what_, " did not complete within ", timeout,
                   " s (HYMBA_COLLECTIVE_TIMEOUT): another rank has failed, hung or called a different collective");
      }
    }
  }

 private:
  void complete() {
    done_ = true;
    if (avg_of_.defined()) {
      NoGradGuard ng;
      kernels::scalar_out(kernels::ScalarOp::Mul, avg_of_, 1.0 / double(world_), avg_of_);
    }
    keep_.clear();
  }

  MPI_Request req_;
  const char* what_;
  std::vector<Tensor> keep_;
  Tensor avg_of_;
  int world_;
  bool done_ = false, failed_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm base) {
    HYMBA_CHECK(distributed_initialized(), "the MPI communicator needs MPI to be initialized (init_distributed)");
    // A private copy: our collectives can never match a library's on the same communicator.
    mpi_check(MPI_Comm_dup(base, &comm_), "MPI_Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_);
    MPI_Comm node;
    mpi_check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_cpu(t, "all_reduce", "tensor");
    HYMBA_CHECK(op == ReduceOp::Sum || t.dtype() == DType::F32 || t.dtype() == DType::F64,
                "all_reduce: an average needs a floating-point tensor, got ", t.meta_str());
    MPI_Request req;
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), mpi_count(t, "all_reduce"), mpi_type(t, "all_reduce"),
                             MPI_SUM, comm_, &req),
              "MPI_Iallreduce");
    return std::make_unique<MpiWork>(req, "all_reduce", std::vector<Tensor>{t},
                                     op == ReduceOp::Avg ? t : Tensor(), world_);
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_cpu(in, "reduce_scatter", "input");
    check_cpu(out, "reduce_scatter", "output");
    HYMBA_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel() * world_, "reduce_scatter: input ",
                in.meta_str(), " must hold world (", world_, ") x output ", out.meta_str());
    HYMBA_CHECK(op == ReduceOp::Sum || out.dtype() == DType::F32 || out.dtype() == DType::F64,
                "reduce_scatter: an average needs a floating-point tensor, got ", out.meta_str());
    MPI_Request req;
    mpi_check(MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), mpi_count(out, "reduce_scatter"),
                                        mpi_type(out, "reduce_scatter"), MPI_SUM, comm_, &req),
              "MPI_Ireduce_scatter_block");
    return std::make_unique<MpiWork>(req, "reduce_scatter", std::vector<Tensor>{in, out},
                                     op == ReduceOp::Avg ? out : Tensor(), world_);
  }

  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    check_cpu(in, "all_gather", "input");
    check_cpu(out, "all_gather", "output");
    HYMBA_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * world_, "all_gather: output ",
                out.meta_str(), " must hold world (", world_, ") x input ", in.meta_str());
    MPI_Request req;
    const int n = mpi_count(in, "all_gather");
    const MPI_Datatype ty = mpi_type(in, "all_gather");
    mpi_check(MPI_Iallgather(in.data_ptr(), n, ty, out.data_ptr(), n, ty, comm_, &req), "MPI_Iallgather");
    return std::make_unique<MpiWork>(req, "all_gather", std::vector<Tensor>{in, out}, Tensor(), world_);
  }

  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check_cpu(t, "broadcast", "tensor");
    HYMBA_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " out of range for world ", world_);
    MPI_Request req;
    mpi_check(MPI_Ibcast(t.data_ptr(), mpi_count(t, "broadcast"), mpi_type(t, "broadcast"), root, comm_, &req),
              "MPI_Ibcast");
    return std::make_unique<MpiWork>(req, "broadcast", std::vector<Tensor>{t}, Tensor(), world_);
  }

  void barrier() override {
    MPI_Request req;
    mpi_check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    MpiWork(req, "barrier", {}, Tensor(), world_).wait();
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
};

}  // namespace

std::shared_ptr<Communicator> make_mpi_world_communicator() {
  return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD);
}

std::shared_ptr<Communicator> make_mpi_self_communicator() {
  return std::make_shared<MpiCommunicator>(MPI_COMM_SELF);
}

}  // namespace hymba::train
