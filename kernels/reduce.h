// Reductions: sum / mean over a set of dims, max (with argmax) over one dim.
//
// Dims may be negative; repeated dims are an error. An empty `dims` list reduces every dim
// (PyTorch's convention for sum(x, dim=[])). keepdim keeps reduced dims as size 1. The
// output has the input's dtype; f32 inputs accumulate in double so that a sum over a
// million activations (a loss, a bias gradient) does not drift with the summation order.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "core/coalesce.h"
#include "kernels/dispatch.h"

namespace hymba::kernels {

// Dim handling and backward shape checks shared by the CPU and CUDA kernels (each backend adds
// its own dtype, device and rank rules).
namespace reduce_check {

// Which of x's dims are reduced (one flag per dim, one flag for a 0-dim x); a repeated dim
// is an error.
inline std::vector<bool> reduced_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  const int64_t nd = x.dim();
  std::vector<bool> reduce(size_t(std::max<int64_t>(nd, 1)), dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, nd, op);
    HYMBA_CHECK(!reduce[size_t(w)], op, ": dim ", d, " repeated in the reduction dims of ", x.meta_str());
    reduce[size_t(w)] = true;
  }
  return reduce;
}

// The reduction's output shape with the reduced dims kept as size 1.
inline Shape keepdim_shape(const Shape& in_shape, const std::vector<int64_t>& dims, const char* op) {
  const int64_t nd = int64_t(in_shape.size());
  Shape s = in_shape;
  if (dims.empty()) {
    std::fill(s.begin(), s.end(), 1);
    return s;
  }
  for (int64_t d : dims) {
    if (nd == 0) continue;
    s[size_t(wrap_dim(d, nd, op))] = 1;
  }
  return s;
}

// sum_backward: checks grad's size against the reduction; returns the keepdim shape.
inline Shape check_sum_grad(const char* op, const Tensor& grad, const Shape& in_shape,
                            const std::vector<int64_t>& dims) {
  Shape ks = keepdim_shape(in_shape, dims, op);
  HYMBA_CHECK(grad.numel() == shape_numel(ks), op, ": gradient ", grad.meta_str(), " does not match the reduction of ",
              shape_str(in_shape));
  return ks;
}

struct MaxGradDims {
  int64_t dim;  // wrapped
  Shape keepdim_shape;
};

// max_backward: checks grad and indices against the reduction.
inline MaxGradDims check_max_grad(const char* op, const Tensor& grad, const Tensor& indices, const Shape& in_shape,
                                  int64_t dim) {
  const int64_t d = wrap_dim(dim, int64_t(in_shape.size()), op);
  Shape ks = keepdim_shape(in_shape, {dim}, op);
  HYMBA_CHECK(grad.numel() == shape_numel(ks) && indices.numel() == grad.numel(), op, ": gradient ", grad.meta_str(),
              " and indices ", indices.meta_str(), " do not match the reduction of ", shape_str(in_shape));
  HYMBA_CHECK(indices.dtype() == DType::I64, op, ": indices must be i64, got ", indices.meta_str());
  return {d, std::move(ks)};
}

// A set of dims after coalescing (outermost first, size-1 dims dropped, a dim merged into its
// outer neighbour when stepping the outer one equals `size` inner steps). An empty group
// still describes one element at offset 0.
struct Group {
  int n = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  int64_t numel = 1;

  void push(int64_t size, int64_t st) {
    numel *= size;
    if (size == 1) return;
    if (n > 0 && stride[n - 1] == st * size) {
      shape[n - 1] *= size;
      stride[n - 1] = st;
      return;
    }
    shape[n] = size;
    stride[n] = st;
    ++n;
  }
  int64_t inner_size() const { return n ? shape[n - 1] : 1; }
  int64_t inner_stride() const { return n ? stride[n - 1] : 1; }
};

// x's dims split into the kept ones (the output's, row-major) and the reduced ones.
struct Plan {
  Shape out_shape;
  Group kept, red;
};

inline Plan make_plan(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  HYMBA_CHECK(x.defined(), op, ": undefined input");
  HYMBA_CHECK(x.dim() <= kMaxDims, op, ": tensors of more than ", kMaxDims, " dims are not supported, got ",
              x.meta_str());
  const int64_t nd = x.dim();
  const std::vector<bool> reduce = reduced_dims(x, dims, op);
  Plan p;
  for (int64_t d = 0; d < nd; ++d) {
    const size_t du = size_t(d);
    if (reduce[du]) {
      p.red.push(x.shape()[du], x.strides()[du]);
      if (keepdim) p.out_shape.push_back(1);
    } else {
      p.kept.push(x.shape()[du], x.strides()[du]);
      p.out_shape.push_back(x.shape()[du]);
    }
  }
  return p;
}

}  // namespace reduce_check

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
