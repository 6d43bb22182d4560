// Optimizer kernels: the fused AdamW update and the squared norm used for gradient clipping.
//
// adamw_step updates param, exp_avg and exp_avg_sq in place in one pass over memory (the
// update is bandwidth-bound: reading and writing four tensors once is the whole cost):
//
//   p  <- p - lr * weight_decay * p                 (decoupled decay, Loshchilov & Hutter)
//   m  <- beta1 * m + (1 - beta1) * g
//   v  <- beta2 * v + (1 - beta2) * g^2
//   p  <- p - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
//
// This is torch.optim.AdamW's formula term for term, so a run can be checked against
// PyTorch. `step` is the 1-based number of this update (bias correction). All four tensors
// have the same shape, dtype (f32, or f64 for reference tests) and device; any layout.
//
// sum_of_squares returns sum(x^2) accumulated in double. The sum is taken over fixed blocks
// whose size depends only on numel, added in order, so it is bit-identical for any thread
// count (a clipped step must not depend on HYMBA_NUM_THREADS, or resume would drift).
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t step);
double sum_of_squares(const Tensor& x);
}  // namespace cpu

inline void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                       double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  HYMBA_DISPATCH_CPU_ONLY(param.device(), adamw_step, param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps,
                          weight_decay, step);
}
inline double sum_of_squares(const Tensor& x) { return HYMBA_DISPATCH_CPU_ONLY(x.device(), sum_of_squares, x); }

}  // namespace hymba::kernels
