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

#include <cmath>
#include <string>
#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Argument checks and output shapes shared by the CPU and CUDA kernels (each backend adds its
// own dtype and device rules).
namespace norm_check {

inline Shape row_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

// rstd's dtype: f64 for f64 rows, f32 otherwise.
inline DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// `dtype_ok` says whether the backend takes x's dtype, and `dtypes` lists what it takes, for
// the message.
inline void check_inputs(const char* op, const Tensor& x, const Tensor& w, bool (*dtype_ok)(DType),
                         const char* dtypes) {
  HYMBA_CHECK(x.defined() && w.defined(), op, ": undefined input (x ", x.meta_str(), ", w ", w.meta_str(), ")");
  HYMBA_CHECK(dtype_ok(x.dtype()), op, ": dtype ", dtype_name(x.dtype()), " not supported ", dtypes, " (x ",
              x.meta_str(), ")");
  HYMBA_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim [..., D], got ", x.meta_str());
  HYMBA_CHECK(x.size(-1) > 0, op, ": x has an empty last dim: ", shape_str(x.shape()));
  HYMBA_CHECK(w.dim() == 1 && w.size(0) == x.size(-1), op, ": weight shape ", shape_str(w.shape()),
              " does not match x shape ", shape_str(x.shape()), " (expected [", x.size(-1), "])");
  HYMBA_CHECK(w.dtype() == x.dtype(), op, ": dtype mismatch: x ", x.meta_str(), " and weight ", w.meta_str());
  check_same_device(op, x, w);
}

// The backward's checks of dy and rstd against x (x and w already checked).
inline void check_backward(const char* op, const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  HYMBA_CHECK(dy.defined() && dy.shape() == x.shape(), op, ": gradient shape ",
              dy.defined() ? shape_str(dy.shape()) : std::string("undefined"), " does not match x shape ",
              shape_str(x.shape()));
  check_same_dtype(op, dy, x);
  check_same_device(op, dy, x);
  HYMBA_CHECK(rstd.defined() && rstd.shape() == row_shape(x) && rstd.dtype() == stat_dtype(x.dtype()), op,
              ": rstd ", rstd.meta_str(), " does not match x ", x.meta_str(), " (expected ",
              dtype_name(stat_dtype(x.dtype())), shape_str(row_shape(x)), ")");
  check_same_device(op, rstd, x);
}

// The forward's outputs, allocated after the checks; rows == 0 leaves nothing to compute.
struct ForwardPlan {
  int64_t d, rows;
  Tensor y, rstd;
};

inline ForwardPlan plan_forward(const char* op, const Tensor& x, double eps) {
  HYMBA_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  const int64_t d = x.size(-1);
  return {d, x.numel() / d, empty(x.shape(), TensorOptions(x.dtype(), x.device())),
          empty(row_shape(x), TensorOptions(stat_dtype(x.dtype()), x.device()))};
}

// The backward's outputs (each only when needed). `done` when nothing is left to compute:
// no output wanted, or no rows (dw is then zero).
struct BackwardPlan {
  int64_t d, rows;
  Tensor dx, dw;
  bool done;
};

inline BackwardPlan plan_backward(const Tensor& x, bool need_dx, bool need_dw) {
  BackwardPlan p{x.size(-1), 0, Tensor(), Tensor(), false};
  p.rows = x.numel() / p.d;
  if (need_dx) p.dx = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (need_dw) p.dw = empty({p.d}, TensorOptions(x.dtype(), x.device()));
  if (!need_dx && !need_dw) {
    p.done = true;
  } else if (p.rows == 0) {
    if (need_dw) p.dw.zero_();
    p.done = true;
  }
  return p;
}

}  // namespace norm_check

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
