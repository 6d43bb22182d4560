// Differentiable selective scan (Mamba-1): one autograd node over the fused forward and
// backward kernels of kernels/selective_scan.h, which define the semantics and shapes.
#pragma once

#include <cstdint>
#include <utility>

#include "core/tensor.h"
#include "kernels/selective_scan.h"

namespace hymba {

// out (B,D,L) = selective scan of u, delta, z (B,D,L) with A (D,N), B, C (B,N,L), D and
// delta_bias (D). D, z and delta_bias may be undefined Tensors. Gradients flow to every
// defined input that requires grad. `chunk` trades backward recompute for saved state memory
// (B*D*N*ceil(L/chunk) values); results do not depend on it beyond rounding.
Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                      const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                      int64_t chunk = kernels::kScanChunk);

// The same, also returning the final state (B,D,N) for a generation cache. The state carries
// no gradient (training never differentiates through it).
std::pair<Tensor, Tensor> selective_scan_with_state(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                    const Tensor& B, const Tensor& C, const Tensor& D,
                                                    const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                                                    int64_t chunk = kernels::kScanChunk);

// One generation step (no gradient): updates state (B,D,N) in place and returns out (B,D) for
// per-token u, delta, z (B,D) and B, C (B,N).
Tensor selective_scan_step(const Tensor& state, const Tensor& u, const Tensor& delta, const Tensor& A,
                           const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus);

}  // namespace hymba
