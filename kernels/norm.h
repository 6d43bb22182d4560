// RMSNorm over the last dim: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) per row.
//
// x is (..., D) of any layout, w is (D). Forward returns y (x's shape and dtype, contiguous)
// and rstd (x's shape without the last dim): the per-row statistic that backward reuses, so
// backward never recomputes the row reduction. rstd is f64 for f64 inputs and f32 otherwise
// (statistics are accumulated in double for f32 rows and stored in fp32, as on CUDA).
//
// Backward: dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)); dw = sum over rows of dy*x*rstd.
// dw is reduced over fixed blocks of rows whose size depends only on the shape, then the
// blocks are added in order, so dw is bit-identical for any thread count.
#pragma once

#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
// Returns (y, rstd).
std::tuple<Tensor, Tensor> rms_norm_forward(const Tensor& x, const Tensor& w, double eps);
// Returns (dx, dw); either is skipped (left undefined) when its need_* flag is false.
std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& rstd, bool need_dx, bool need_dw);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// kernels/cuda/norm.cu: also bf16 (rstd and all sums in fp32). dw is deterministic.
namespace cuda {
std::tuple<Tensor, Tensor> rms_norm_forward(const Tensor& x, const Tensor& w, double eps);
std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& rstd, bool need_dx, bool need_dw);
}  // namespace cuda
#endif

inline std::tuple<Tensor, Tensor> rms_norm_forward(const Tensor& x, const Tensor& w, double eps) {
  return HYMBA_DISPATCH(x.device(), rms_norm_forward, x, w, eps);
}
inline std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                                    const Tensor& rstd, bool need_dx = true,
                                                    bool need_dw = true) {
  return HYMBA_DISPATCH(x.device(), rms_norm_backward, dy, x, w, rstd, need_dx, need_dw);
}

}  // namespace hymba::kernels
