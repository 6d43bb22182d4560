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
//
// Multi-tensor forms apply one set of hyper-parameters to lists of tensors: on CUDA,
// adamw_step_multi is one launch over every tensor (per dtype) and sum_of_squares_multi one
// pass and one device-to-host copy for the global squared norm. sum_of_squares_multi skips
// undefined tensors (parameters that received no gradient); on the CPU it is the sum of
// sum_of_squares over the list in order, on CUDA a fixed-order (deterministic) reduction.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Argument checks shared by the CPU and CUDA kernels (each backend adds its own dtype and
// device rules for param).
namespace adamw_check {

inline void check_operand(const char* op, const char* what, const Tensor& t, const Tensor& param) {
  HYMBA_CHECK(t.defined(), op, ": ", what, " is undefined (param ", param.meta_str(), ")");
  HYMBA_CHECK(t.shape() == param.shape(), op, ": ", what, " shape ", shape_str(t.shape()),
              " does not match param shape ", shape_str(param.shape()));
  HYMBA_CHECK(t.dtype() == param.dtype(), op, ": dtype mismatch: param ", param.meta_str(), " and ", what, " ",
              t.meta_str());
  check_same_device(op, param, t);
}

// grad, exp_avg and exp_avg_sq against a checked param.
inline void check_operands(const char* op, const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                           const Tensor& exp_avg_sq) {
  check_operand(op, "grad", grad, param);
  check_operand(op, "exp_avg", exp_avg, param);
  check_operand(op, "exp_avg_sq", exp_avg_sq, param);
}

inline void check_hyper(const char* op, double lr, double beta1, double beta2, double eps, double weight_decay,
                        int64_t step) {
  HYMBA_CHECK(std::isfinite(lr) && lr >= 0, op, ": lr must be finite and >= 0, got ", lr);
  HYMBA_CHECK(beta1 >= 0 && beta1 < 1, op, ": beta1 must be in [0, 1), got ", beta1);
  HYMBA_CHECK(beta2 >= 0 && beta2 < 1, op, ": beta2 must be in [0, 1), got ", beta2);
  HYMBA_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  HYMBA_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, op, ": weight_decay must be finite and >= 0, got ",
              weight_decay);
  HYMBA_CHECK(step >= 1, op, ": step is the 1-based update count, got ", step);
}

inline void check_list_sizes(const char* op, const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs) {
  HYMBA_CHECK(grads.size() == params.size() && exp_avgs.size() == params.size() &&
                  exp_avg_sqs.size() == params.size(),
              op, ": list sizes differ: ", params.size(), " params, ", grads.size(), " grads, ", exp_avgs.size(),
              " exp_avg, ", exp_avg_sqs.size(), " exp_avg_sq");
}

// The per-step scalars of the update, formed in double and rounded once to the parameter
// type as PyTorch does; both backends take them from here so they cannot drift apart.
template <typename T>
struct Coeffs {
  T decay;         // 1 - lr * wd
  T b1, omb1;      // beta1, 1 - beta1
  T b2, omb2;      // beta2, 1 - beta2
  T step_size;     // lr / (1 - beta1^step)
  T inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^step)
  T eps;
};

template <typename T>
Coeffs<T> make_coeffs(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  return Coeffs<T>{T(1.0 - lr * weight_decay), T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2),
                   T(lr / bc1), T(1.0 / std::sqrt(bc2)), T(eps)};
}

}  // namespace adamw_check

namespace cpu {
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t step);
double sum_of_squares(const Tensor& x);
// Lists of equal length; element i of each list obeys adamw_step's rules.
void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t step);
double sum_of_squares_multi(const std::vector<Tensor>& xs);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// kernels/cuda/adamw.cu (sum_of_squares also takes bf16).
namespace cuda {
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t step);
double sum_of_squares(const Tensor& x);
void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t step);
double sum_of_squares_multi(const std::vector<Tensor>& xs);
}  // namespace cuda
#endif

namespace detail {
// The device of a list: that of its first defined tensor (CPU for none).
inline Device list_device(const std::vector<Tensor>& ts) {
  for (const Tensor& t : ts)
    if (t.defined()) return t.device();
  return Device::cpu();
}
}  // namespace detail

inline void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                       double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  HYMBA_DISPATCH(param.device(), adamw_step, param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                 step);
}
inline double sum_of_squares(const Tensor& x) { return HYMBA_DISPATCH(x.device(), sum_of_squares, x); }
inline void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr,
                             double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  HYMBA_DISPATCH(detail::list_device(params), adamw_step_multi, params, grads, exp_avgs, exp_avg_sqs, lr, beta1,
                 beta2, eps, weight_decay, step);
}
inline double sum_of_squares_multi(const std::vector<Tensor>& xs) {
  return HYMBA_DISPATCH(detail::list_device(xs), sum_of_squares_multi, xs);
}

}  // namespace hymba::kernels
