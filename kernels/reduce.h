// Reductions: sum / mean over a set of dims, max (with argmax) over one dim.
//
// Dims may be negative; repeated dims are an error. An empty `dims` list reduces every dim
// (PyTorch's convention for sum(x, dim=[])). keepdim keeps reduced dims as size 1. The
// output has the input's dtype; f32 inputs accumulate in double so that a sum over a
// million activations (a loss, a bias gradient) does not drift with the summation order.
#pragma once

#include <utility>
#include <vector>

#include "kernels/dispatch.h"

namespace hymba::kernels {

namespace cpu {
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// {values, indices (i64)}; ties and repeated maxima resolve to the first index, NaN wins
// (the first NaN), like torch.max(x, dim).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim);
// Backward of sum/mean: `grad` (the reduction's output shape) broadcast back over the
// reduced dims to `in_shape`, times `scale` (1 for sum, 1/n for mean).
Tensor sum_backward(const Tensor& grad, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim,
                    double scale);
// Backward of max: zeros of `in_shape` with grad[i] written at indices[i] along `dim`.
Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& in_shape, int64_t dim, bool keepdim);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// CUDA: the same results with fp32 accumulation (f64 for f64) in a fixed order that depends
// only on the shape (no atomics), so runs are bit-for-bit repeatable.
namespace cuda {
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim);
Tensor sum_backward(const Tensor& grad, const Shape& in_shape, const std::vector<int64_t>& dims, bool keepdim,
                    double scale);
Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& in_shape, int64_t dim, bool keepdim);
}  // namespace cuda
#endif

inline Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false) {
  return HYMBA_DISPATCH(x.device(), sum, x, dims, keepdim);
}
inline Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false) {
  return HYMBA_DISPATCH(x.device(), mean, x, dims, keepdim);
}
inline std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false) {
  return HYMBA_DISPATCH(x.device(), max, x, dim, keepdim);
}
inline Tensor sum_backward(const Tensor& grad, const Shape& in_shape, const std::vector<int64_t>& dims,
                           bool keepdim, double scale) {
  return HYMBA_DISPATCH(grad.device(), sum_backward, grad, in_shape, dims, keepdim, scale);
}
inline Tensor max_backward(const Tensor& grad, const Tensor& indices, const Shape& in_shape, int64_t dim,
                           bool keepdim) {
  return HYMBA_DISPATCH(grad.device(), max_backward, grad, indices, in_shape, dim, keepdim);
}

}  // namespace hymba::kernels
