// Softmax, log-softmax and the fused cross-entropy loss.
//
// softmax / log_softmax work over any dim (max-subtracted, so stable for any finite input;
// a row of all -inf gives NaN as in PyTorch). Backward kernels take the forward *output*:
//   softmax:     dx = y * (dy - sum(dy * y))
//   log_softmax: dx = dy - exp(y) * sum(dy)
//
// Cross-entropy fuses log-softmax with the NLL over the last dim of logits (..., V) with
// integer targets (...) (i32 or i64). Forward computes one loss per row (0 on rows whose
// target is ignore_index), reduces them (in double, in row order, so the result does not
// depend on the thread count) and returns each row's log-sum-exp (as `stats`). Backward
// recomputes the softmax from the logits and lse, so no (rows x V) probability tensor is
// ever stored:
//   dlogits[r, j] = (exp(logits[r, j] - lse[r]) - [j == target[r]]) * grad[r] * scale
// grad is a 0-dim tensor (the gradient of a reduced loss, the same for every row) or one
// value per row (reduction None); scale is 1/count for a mean, 1 otherwise. Ignored rows get
// a zero gradient. Targets outside [0, V) other than ignore_index throw, naming the target,
// its row and V. The loss and the stats are fp32 (f64 for f64 logits) whatever the logits'
// storage dtype: bf16 logits (CUDA) give an f32 loss. grad has the loss's dtype (the logits'
// dtype is accepted too).
//
// cross_entropy_forward_backward is the training path: one read of the logits gives the
// loss, the stats and dlogits = d(loss)/d(logits) for an upstream gradient of grad_scale
// (the same for every row; with the 1/count of Mean), so no second pass over the logits is
// needed and the logits need not be kept for backward. The chain rule for another upstream
// gradient g is then dlogits * g / grad_scale (per row for None).
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// How per-row losses become the op's output: one value per row (None), their sum, or their
// mean over counted (non-ignored) rows, which is 0 when no row counts.
enum class LossReduction { None, Sum, Mean };

struct CrossEntropyForward {
  Tensor loss;        // 0-dim for Sum/Mean; targets' shape (0 where ignored) for None
  // Per-row log-sum-exp, saved for backward, as (..., 2) = [row max, log sum exp(x - max)]
  // (lse = their sum). Split so that an f32 lse keeps full precision at logits of magnitude
  // 1e4, where one f32 ulp is 1e-3. f64 for f64 logits, f32 otherwise.
  Tensor stats;
  int64_t count = 0;  // rows whose target is not ignore_index
};

struct CrossEntropyForwardBackward : CrossEntropyForward {
  Tensor dlogits;  // logits' dtype and shape; zero rows where the target is ignore_index
};

// Argument checks and saved-stats layout shared by the CPU and CUDA kernels. Each backend
// supplies `check_float(op, what, t)`, which holds its own dtype and device rules for a float
// input (defined, supported dtype, on its device).
namespace softmax_check {

// stats is targets' shape plus a last dim of 2 ([row max, log sum exp(x - max)]).
inline Shape stats_shape(const Tensor& targets) {
  Shape s = targets.shape();
  s.push_back(2);
  return s;
}

// stats' dtype: f64 for f64 logits, f32 otherwise.
inline DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// Allocates what every cross-entropy forward returns, on logits' device: out.stats (stat_dtype)
// and out.loss in `loss_dtype` (targets' shape for None, 0-dim otherwise).
inline void allocate_loss_outputs(CrossEntropyForward& out, const Tensor& logits, const Tensor& targets,
                                  LossReduction reduction, DType loss_dtype) {
  out.stats = empty(stats_shape(targets), TensorOptions(stat_dtype(logits.dtype()), logits.device()));
  const TensorOptions lopts(loss_dtype, logits.device());
  out.loss = reduction == LossReduction::None ? empty(targets.shape(), lopts) : empty({}, lopts);
}

template <typename CheckFloat>
void check_backward(const char* op, const Tensor& dy, const Tensor& y, CheckFloat&& check_float) {
  check_float(op, "output", y);
  HYMBA_CHECK(dy.defined() && dy.shape() == y.shape(), op, ": gradient shape ",
              dy.defined() ? shape_str(dy.shape()) : std::string("undefined"), " does not match output shape ",
              shape_str(y.shape()));
  check_same_dtype(op, dy, y);
  check_same_device(op, dy, y);
}

// Checks logits (..., V) against targets (...); returns (rows, V).
template <typename CheckFloat>
std::pair<int64_t, int64_t> check_xent(const char* op, const Tensor& logits, const Tensor& targets,
                                       CheckFloat&& check_float) {
  check_float(op, "logits", logits);
  HYMBA_CHECK(targets.defined(), op, ": undefined targets");
  HYMBA_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64, op, ": targets must be i32 or i64, got ",
              targets.meta_str());
  HYMBA_CHECK(logits.dim() >= 1, op, ": logits must have at least 1 dim [..., V], got ", logits.meta_str());
  const Shape& ls = logits.shape();
  HYMBA_CHECK(targets.shape() == Shape(ls.begin(), ls.end() - 1), op, ": targets shape ", shape_str(targets.shape()),
              " does not match logits shape ", shape_str(ls), " (expected ", shape_str(Shape(ls.begin(), ls.end() - 1)),
              ")");
  check_same_device(op, logits, targets);
  const int64_t v = logits.size(-1);
  HYMBA_CHECK(v > 0, op, ": logits have an empty class dim: ", shape_str(ls));
  return {targets.numel(), v};
}

// cross_entropy_backward's checks of grad and the saved stats (after check_xent).
inline void check_xent_backward(const char* op, const Tensor& grad, const Tensor& logits, const Tensor& targets,
                                const Tensor& stats) {
  HYMBA_CHECK(grad.defined() && (grad.dim() == 0 || grad.shape() == targets.shape()), op, ": gradient ",
              grad.meta_str(), " must be 0-dim or have the targets' shape ", shape_str(targets.shape()));
  HYMBA_CHECK(grad.dtype() == stat_dtype(logits.dtype()) || grad.dtype() == logits.dtype(), op, ": gradient ",
              grad.meta_str(), " must have the loss's dtype ", dtype_name(stat_dtype(logits.dtype())),
              " (or the logits' dtype ", dtype_name(logits.dtype()), ")");
  check_same_device(op, grad, logits);
  HYMBA_CHECK(stats.defined() && stats.shape() == stats_shape(targets) && stats.dtype() == stat_dtype(logits.dtype()),
              op, ": saved stats ", stats.meta_str(), " does not match logits ", logits.meta_str(), " (expected ",
              dtype_name(stat_dtype(logits.dtype())), shape_str(stats_shape(targets)), ")");
  check_same_device(op, stats, logits);
}

}  // namespace softmax_check

namespace cpu {
Tensor softmax_forward(const Tensor& x, int64_t dim);
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim);
Tensor log_softmax_forward(const Tensor& x, int64_t dim);
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim);
CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                          LossReduction reduction);
Tensor cross_entropy_backward(const Tensor& grad, const Tensor& logits, const Tensor& targets, const Tensor& stats,
                              int64_t ignore_index, double scale);
CrossEntropyForwardBackward cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets,
                                                           int64_t ignore_index, LossReduction reduction,
                                                           double grad_scale);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// kernels/cuda/softmax_xent.cu: also bf16 (fp32 math, f32 stats and loss). The cross-entropy
// ops return `count` on the host: each call makes one small device-to-host copy, which also
// carries the target range check; cross_entropy_backward reads back one flag for its check.
namespace cuda {
Tensor softmax_forward(const Tensor& x, int64_t dim);
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim);
Tensor log_softmax_forward(const Tensor& x, int64_t dim);
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim);
CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                          LossReduction reduction);
Tensor cross_entropy_backward(const Tensor& grad, const Tensor& logits, const Tensor& targets, const Tensor& stats,
                              int64_t ignore_index, double scale);
CrossEntropyForwardBackward cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets,
                                                           int64_t ignore_index, LossReduction reduction,
                                                           double grad_scale);
}  // namespace cuda
#endif

inline Tensor softmax_forward(const Tensor& x, int64_t dim = -1) {
  return HYMBA_DISPATCH(x.device(), softmax_forward, x, dim);
}
inline Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim = -1) {
  return HYMBA_DISPATCH(y.device(), softmax_backward, dy, y, dim);
}
inline Tensor log_softmax_forward(const Tensor& x, int64_t dim = -1) {
  return HYMBA_DISPATCH(x.device(), log_softmax_forward, x, dim);
}
inline Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim = -1) {
  return HYMBA_DISPATCH(y.device(), log_softmax_backward, dy, y, dim);
}
inline CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                                 int64_t ignore_index = -100,
                                                 LossReduction reduction = LossReduction::Mean) {
  return HYMBA_DISPATCH(logits.device(), cross_entropy_forward, logits, targets, ignore_index, reduction);
}
inline Tensor cross_entropy_backward(const Tensor& grad, const Tensor& logits, const Tensor& targets,
                                     const Tensor& stats, int64_t ignore_index, double scale) {
  return HYMBA_DISPATCH(logits.device(), cross_entropy_backward, grad, logits, targets, stats, ignore_index, scale);
}
inline CrossEntropyForwardBackward cross_entropy_forward_backward(const Tensor& logits, const Tensor& targets,
                                                                  int64_t ignore_index = -100,
                                                                  LossReduction reduction = LossReduction::Mean,
                                                                  double grad_scale = 1.0) {
  return HYMBA_DISPATCH(logits.device(), cross_entropy_forward_backward, logits, targets, ignore_index, reduction,
                        grad_scale);
}

}  // namespace hymba::kernels
