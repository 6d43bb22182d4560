// Collective communication between the processes of a data-parallel job (one process per
// device, DESIGN.md "Distributed").
//
// A Communicator joins `world` ranks. Every collective is called by all ranks in the same
// order with tensors of the same shape and dtype; tensors must be contiguous. Three
// implementations:
//   - the single-process one (world 1; every collective is an identity or a copy), used when
//     no launcher started us, so a plain `hymba train` needs neither MPI nor NCCL;
//   - MPI (train/mpi_communicator.cpp): CPU tensors of f32, f64, i32 or i64;
//   - NCCL (train/nccl_communicator_cuda.cpp, CUDA builds only): CUDA tensors, bootstrapped
//     through another communicator (the NCCL unique id is broadcast over MPI).
//
// Failure: a collective that does not complete within collective_timeout_seconds()
// (HYMBA_COLLECTIVE_TIMEOUT, default 600 s) reports which call hung and aborts the whole job
// (train/distributed.h), so a dead peer never leaves the other ranks waiting forever.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace hymba::train {

enum class ReduceOp { Sum, Avg };
const char* to_string(ReduceOp op);

// A collective in flight. wait() returns once its result is in the output tensor (for NCCL:
// once the legacy default stream, where every kernel runs, is ordered after it). Waiting
// twice is harmless; the destructor of an unwaited Work waits (a buffer must never be freed
// under a running collective).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Lets the transport advance without blocking; true once complete. MPI moves
  // non-blocking collectives forward only inside MPI calls, so callers with other work to do
  // (the backward pass) poll this to get real overlap.
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world() const = 0;
  // Rank among the processes of this node (selects the GPU).
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;  // "single", "mpi", "nccl"
  // Where this communicator's tensors live (the CPU, or the GPU of an NCCL communicator).
  virtual Device device() const { return Device::cpu(); }

  // In place over all ranks.
  virtual std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  // in has world * out.numel() elements; rank r receives the reduction of block r.
  virtual std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) = 0;
  // out has world * in.numel() elements; block r is rank r's `in`.
  virtual std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) = 0;
  virtual std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce_async(t, op)->wait(); }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::Sum) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void all_gather(const Tensor& in, const Tensor& out) { all_gather_async(in, out)->wait(); }
  void broadcast(const Tensor& t, int root = 0) { broadcast_async(t, root)->wait(); }

  // Scalars, through one-element tensors on device().
  double all_reduce_sum(double local);
  int64_t all_reduce_sum(int64_t local);
};

// world 1, rank 0: collectives are identities (all-reduce, broadcast) or copies.
std::shared_ptr<Communicator> make_single_process_communicator();

// MPI_COMM_WORLD (the job) or MPI_COMM_SELF (this process alone, world 1: tests compare a
// job with a one-process reference inside the same mpirun). MPI must be initialized
// (train/distributed.h).
// Only in builds with MPI (HYMBA_WITH_MPI, defined by CMake).
#ifdef HYMBA_WITH_MPI
std::shared_ptr<Communicator> make_mpi_world_communicator();
std::shared_ptr<Communicator> make_mpi_self_communicator();
#endif

#ifdef HYMBA_WITH_CUDA
// NCCL over the ranks of `bootstrap` (same rank and world), on the current CUDA device, which
// the caller selects from the local rank (cuda::choose_device_from_env). Collective: every
// rank of `bootstrap` must call it. With world 1 the bootstrap carries nothing (the
// single-process communicator will do: no MPI needed).
std::shared_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap);
#endif

// Checks shared by the implementations (HYMBA_CHECK: these are programming errors).
void check_collective_tensor(const Tensor& t, const char* op, const char* what);

}  // namespace hymba::train
