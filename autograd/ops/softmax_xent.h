// Differentiable softmax, log-softmax and fused cross-entropy (kernels/softmax_xent.h).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/softmax_xent.h"

namespace hymba {

using kernels::LossReduction;

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

// Cross-entropy of logits (..., V) against integer targets (...) (i32 or i64), fused with the
// log-softmax in one node. Rows whose target is ignore_index count for nothing. Mean (the
// default) averages over the counted rows and is 0, not NaN, when none count; Sum adds them;
// None returns the per-row losses with the targets' shape (0 on ignored rows), for scoring.
// A target outside [0, V) other than ignore_index throws, naming the target and V.
// The loss is fp32 for f32 and (CUDA) bf16 logits, f64 for f64. When logits require grad the
// forward also writes d(loss)/d(logits) (kernels' cross_entropy_forward_backward, one read of
// the logits) and the node keeps only that: backward hands it on as it is when the incoming
// gradient is exactly 1, else multiplies it once (per row for None).
// `scale` multiplies the returned loss (and so its gradient) inside the op: a trainer that
// weights micro-batch m by n_m / n_total passes that weight here and calls backward() with
// the usual gradient of 1, which keeps the backward free of a pass over the logits.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     LossReduction reduction = LossReduction::Mean, double scale = 1.0);

}  // namespace hymba
