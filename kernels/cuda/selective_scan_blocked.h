// The blocked (Mamba-style, time-parallel) CUDA selective scan, private to
// kernels/cuda/selective_scan*.cu. The public entry points (selective_scan.cu) check the
// arguments and call these when scan_impl() is ScanImpl::Blocked and supports() holds;
// otherwise the sequential kernels run.
//
// Contract: kernels/selective_scan.h exactly, including chunk_states: (B, D, ceil(L/chunk), N)
// in fp32 (f64 for f64 inputs), holding the state after steps chunk-1, 2*chunk-1, ..., L-1, so
// the sequential backward can consume this forward's chunk_states and the other way round.
// Difference: dB and dC are summed over the 4 channels of a block in a fixed order, then over
// the blocks with fp32 atomics, so they may differ in the last bits from run to run (every
// other gradient is deterministic).
#pragma once

#include <tuple>

#include "kernels/selective_scan.h"

namespace hymba::kernels::cuda::scan_blocked {

// Whether the blocked kernels take inputs of this dtype with N states (and chunk): f32 or
// bf16 (f64 stays on the sequential kernels), 1 <= N <= 256, and a save interval `chunk` that
// divides 256 (the backward's time chunk: a warp of 32 lanes x 8 steps), so that every time
// chunk of the backward starts right after a saved state.
bool supports(DType dt, int64_t N, int64_t chunk);

std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                           const Tensor& C, const Tensor& D, const Tensor& z,
                                           const Tensor& delta_bias, bool delta_softplus, int64_t chunk);
SelectiveScanGrads backward(const Tensor& dout, const Tensor& u, const Tensor& delta, const Tensor& A,
                            const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                            const Tensor& delta_bias, bool delta_softplus, const Tensor& chunk_states,
                            int64_t chunk);

}  // namespace hymba::kernels::cuda::scan_blocked

namespace hymba::kernels::cuda::scan_detail {

// The inputs of one scan call, contiguous (copied only where they are not); they must outlive
// the launches that read them. The optional D, z and delta_bias stay undefined when absent.
struct ContiguousInputs {
  Tensor u, delta, A, B, C, D, z, bias;
  ContiguousInputs(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_, const Tensor& C_,
                   const Tensor& D_, const Tensor& z_, const Tensor& bias_)
      : u(contig(u_)), delta(contig(delta_)), A(contig(A_)), B(contig(B_)), C(contig(C_)), D(contig(D_)),
        z(contig(z_)), bias(contig(bias_)) {}
  static Tensor contig(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }
};

// A tensor's data as T*, or null for an undefined (optional) tensor.
template <typename T> T* ptr_or_null(const Tensor& t) { return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr; }

// The last step of both implementations' backward (kernels/cuda/selective_scan.cu): dA[d, n],
// dD[d] and ddelta_bias[d] from per-(b, d) partial sums in f64 ((B, D, N), (B, D), (B, D)),
// added over b in order, so they are deterministic. gr.dA is allocated; gr.dD and
// gr.ddelta_bias are written when defined.
void reduce_param_grads(const Tensor& part_dA, const Tensor& part_dD, const Tensor& part_db, SelectiveScanGrads& gr,
                        const char* op);

}  // namespace hymba::kernels::cuda::scan_detail
