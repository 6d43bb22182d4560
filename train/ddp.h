// Data-parallel gradient reduction: gradients packed into buckets, each reduced as soon as
// its gradients are final, while backward goes on computing the others.
//
// Buckets cover the parameters in REVERSE registration order (backward produces the last
// layers' gradients first), each up to run.ddp_bucket_mb megabytes (MiB; a larger parameter
// gets a bucket of its own), padded with zeros to a multiple of the world size so that a
// bucket also splits evenly into ZeRO-1 shards.
//
// Protocol, per optimizer step: begin_backward(last) before each micro-batch's backward, with
// last = true only for the last one (gradient accumulation: earlier micro-steps only
// accumulate locally); during that last backward the autograd leaf hooks mark parameters
// ready, and a bucket whose parameters are all ready is copied into a flat buffer and its
// collective started. Collectives start strictly in bucket order, on every rank (MPI and NCCL
// match collectives by order, and readiness order may differ between ranks, e.g. on a rank
// whose last micro-batch had no counted target); a bucket waits for its predecessors.
// finish() starts what is left (a parameter that received no gradient contributes zeros),
// waits for everything and publishes the result:
//   - AllReduce mode (plain DDP): each parameter's .grad becomes the SUM over ranks (the
//     trainer already scales every micro-batch by the GLOBAL 1/N, so the sum is the mean);
//   - ReduceScatter mode (ZeRO-1): each rank receives the summed gradient of its shard of
//     every bucket (grad_shard), and the parameters' local .grad are dropped.
// A parameter that no rank produced a gradient for stays without one (has_grad false), so the
// optimizer skips it exactly as in a single process; this costs one small all-reduce of flags.
//
// Overlap: on CPU, MPI advances non-blocking collectives only inside MPI calls, so every
// leaf hook also polls the collectives in flight; on CUDA, NCCL runs on its own stream.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "train/communicator.h"

namespace hymba::train {

struct BucketSlot {
  size_t param = 0;     // index into the reducer's parameter list
  int64_t offset = 0;   // first element in the bucket
  int64_t numel = 0;
};

struct Bucket {
  std::vector<BucketSlot> slots;
  int64_t numel = 0;   // sum of the slots
  int64_t padded = 0;  // numel rounded up to a multiple of the world size
};

// The bucket layout described above. cap_bytes <= 0 puts everything in one bucket.
std::vector<Bucket> make_buckets(const std::vector<Tensor>& params, int64_t cap_bytes, int world);

enum class ReduceMode { AllReduce, ReduceScatter };

class GradReducer {
 public:
  // params: the trainable parameters in registration order (contiguous, one dtype and
  // device); their leaf hooks are installed here and do nothing once the reducer is gone.
  GradReducer(std::shared_ptr<Communicator> comm, std::vector<Tensor> params, double bucket_mb, ReduceMode mode);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void begin_backward(bool reduce_this_backward);
  void finish();
  // Drops the reduced shards (after the optimizer step).
  void clear();

  ReduceMode mode() const;
  Communicator& comm() const;
  const std::vector<Bucket>& buckets() const;
  const std::vector<Tensor>& params() const;
  // After finish(): whether any rank produced a gradient for params()[i].
  bool has_grad(size_t i) const;
  // ReduceScatter mode, after finish(): the summed gradient of this rank's block of bucket b
  // (buckets()[b].padded / world elements, starting at rank * that).
  const Tensor& grad_shard(size_t b) const;
  // Seconds the last finish() spent blocked waiting for collectives (communication that
  // backward did not hide), and how many buckets had been started before finish().
  double wait_seconds() const;
  int64_t buckets_started_early() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace hymba::train
