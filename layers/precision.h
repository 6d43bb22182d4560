// Mixed precision: the dtype layers compute in, separate from the dtype parameters are kept in.
//
// DESIGN.md "Precision": parameters and optimizer state stay in fp32 (the masters); on CUDA,
// matrix products and activations run in bf16 (cuBLASLt accumulates in fp32) while norms,
// softmax, scan and loss compute in fp32 inside the kernels. The compute dtype is a
// thread-local setting (PrecisionGuard) rather than a conversion of the model: the masters
// are never touched, and each layer casts what it reads at use with the differentiable
// `cast`, whose backward converts the gradient back, so gradients accumulate into the
// masters in the master dtype and the optimizer never sees the compute dtype.
//
// The policy, in one place:
//   compute_cast(t): t in the compute dtype (matmul weights and inputs, embedding output);
//                    t itself when no compute dtype is set or t already has it.
//   cast_like(p, x): a small parameter (norm weight, conv weight, A, D, dt bias) in the dtype
//                    of the activation it is combined with: the kernels take one dtype per
//                    call and compute in fp32 internally.
//   loss_logits(l):  logits as the cross entropy takes them. The loss and its statistics
//                    are fp32 in every case: the CUDA kernel reads bf16 logits as they are
//                    (fp32 math, fp32 loss, bf16 dlogits), so no fp32 copy of the (tokens x
//                    vocab) logits is made; only where the kernel cannot take the dtype (f16
//                    anywhere, bf16 on the CPU, whose kernels take f32/f64) are they widened.
// With no compute dtype set all three return their input: the graph is exactly the one
// without mixed precision (bit-identical results).
//
// The setting must stay in force through backward as well as forward: activation
// recomputation (run.recompute) reruns the forward inside backward. The trainer holds one
// guard around a whole step (forward, backward, optimizer) and around eval.
#pragma once

#include <optional>

#include "core/tensor.h"

namespace hymba {

// The compute dtype of this thread; nullopt: compute in each tensor's own dtype.
std::optional<DType> compute_dtype();
void set_compute_dtype(std::optional<DType> dtype);

// Sets the compute dtype for a scope and restores the previous one.
class PrecisionGuard {
 public:
  explicit PrecisionGuard(std::optional<DType> dtype) : prev_(compute_dtype()) { set_compute_dtype(dtype); }
  ~PrecisionGuard() { set_compute_dtype(prev_); }
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  std::optional<DType> prev_;
};

Tensor compute_cast(const Tensor& t);
Tensor cast_like(const Tensor& p, const Tensor& like);  // undefined p stays undefined
Tensor loss_logits(const Tensor& logits);

}  // namespace hymba
