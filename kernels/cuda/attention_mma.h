// The mma.sync attention kernels (kernels/cuda/attention_mma_{fwd,bwd}.cu), private to
// kernels/cuda/attention_*.cu. attention_forward / attention_backward (attention_fwd.cu,
// attention_bwd.cu) call them, after their argument checks, when attention_impl() is
// AttentionImpl::Mma and the problem is supported; otherwise the wmma kernels run.
//
// Contract: that of kernels/attention.h exactly (same outputs, lse in f32, the same mask,
// dK/dV summed over the query heads of a group). Inputs may have any strides (the entry
// points make contiguous copies where they need them).
#pragma once

#include <tuple>

#include "kernels/attention.h"
#include "kernels/cuda/attention_common.cuh"

namespace hymba::kernels::cuda::attn {

// Whether the mma forward / backward takes a problem of this dtype and these dims.
bool mma_forward_supports(DType dt, const Dims& d);
bool mma_backward_supports(DType dt, const Dims& d);

std::tuple<Tensor, Tensor> mma_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d,
                                       const AttentionParams& p);
// Called only with at least one of need_dq/need_dk/need_dv and B * Hq * T > 0.
std::tuple<Tensor, Tensor, Tensor> mma_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                const Tensor& v, const Tensor& out, const Tensor& lse,
                                                const Dims& d, const AttentionParams& p, bool need_dq,
                                                bool need_dk, bool need_dv);

}  // namespace hymba::kernels::cuda::attn
