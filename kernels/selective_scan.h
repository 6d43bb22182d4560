// Selective scan (Mamba-1), HYMBA_SPEC section 2. Per batch b, channel d, state n, step t,
// with h starting at 0 and all math in fp32 (f64 for f64 inputs):
//
//   delta = softplus(dt + delta_bias)          (softplus(v) = v for v > 20; skipped if !delta_softplus)
//   h_t   = exp(delta_t * A[d,n]) * h_{t-1} + delta_t * B_t[n] * u_t
//   y_t   = sum_n C_t[n] * h_t + D[d] * u_t
//   out_t = y_t * silu(z_t)                    (out = y when z is undefined)
//
// Shapes: u, delta, z (B,D,L); A (D,N); B, C (B,N,L) (input-dependent, shared by all channels);
// D, delta_bias (D). D, z and delta_bias are optional (pass an undefined Tensor). All inputs
// share one dtype and device; any layout is accepted.
//
// Memory: forward returns the states at the end of every `chunk` steps, (B,D,ceil(L/chunk),N),
// the last of which is the final state. Backward recomputes the states of one chunk at a time
// from the previous chunk's end state, so training holds O(B D N L/chunk) of state instead of
// O(B D N L). chunk_states is opaque to callers: it only travels from a forward to the backward
// of the same backend with the same chunk. States are f32 for f32 inputs and f64 for f64.
//
// Determinism: dA, dD, ddelta_bias (reduced over b) and dB, dC (reduced over d) are summed
// over blocks whose boundaries depend only on the shape, combined in a fixed order, so every
// gradient is bit-identical for any thread count.
#pragma once

#include <cstdint>
#include <tuple>

#include "kernels/dispatch.h"

namespace hymba::kernels {

// Steps between saved states: the CPU backward recomputes one chunk of 16 channels x 64 steps x N
// states (64 KiB at N = 16) at a time, which stays in L2.
constexpr int64_t kScanChunk = 64;

// Gradients of selective_scan; those of absent optional inputs (D, z, delta_bias) are undefined.
struct SelectiveScanGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias;
};

namespace cpu {
// Returns (out (B,D,L), final state (B,D,N), chunk end states (B,D,ceil(L/chunk),N)).
std::tuple<Tensor, Tensor, Tensor> selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                          const Tensor& B, const Tensor& C, const Tensor& D,
                                                          const Tensor& z, const Tensor& delta_bias,
                                                          bool delta_softplus, int64_t chunk);
SelectiveScanGrads selective_scan_backward(const Tensor& dout, const Tensor& u, const Tensor& delta,
                                           const Tensor& A, const Tensor& B, const Tensor& C, const Tensor& D,
                                           const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                                           const Tensor& chunk_states, int64_t chunk);
// One generation step: state (B,D,N) is read and overwritten with the next state; u, delta,
// z are (B,D), B and C are (B,N). Returns out (B,D). Running it over t = 0..L-1 from a zero
// state gives the full scan's outputs and final state.
Tensor selective_scan_step(const Tensor& state, const Tensor& u, const Tensor& delta, const Tensor& A,
                           const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus);
}  // namespace cpu

#ifdef HYMBA_WITH_CUDA
// Same contract; chunk_states is fp32 (f64 for f64 inputs, bf16 inputs included) in the CPU
// layout. Inputs may be f32, f64 or bf16, math is fp32 (f64 for f64), N at most 128.
namespace cuda {
std::tuple<Tensor, Tensor, Tensor> selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                          const Tensor& B, const Tensor& C, const Tensor& D,
                                                          const Tensor& z, const Tensor& delta_bias,
                                                          bool delta_softplus, int64_t chunk);
SelectiveScanGrads selective_scan_backward(const Tensor& dout, const Tensor& u, const Tensor& delta,
                                           const Tensor& A, const Tensor& B, const Tensor& C, const Tensor& D,
                                           const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                                           const Tensor& chunk_states, int64_t chunk);
Tensor selective_scan_step(const Tensor& state, const Tensor& u, const Tensor& delta, const Tensor& A,
                           const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus);
}  // namespace cuda
#endif

inline std::tuple<Tensor, Tensor, Tensor> selective_scan_forward(const Tensor& u, const Tensor& delta,
                                                                 const Tensor& A, const Tensor& B, const Tensor& C,
                                                                 const Tensor& D, const Tensor& z,
                                                                 const Tensor& delta_bias, bool delta_softplus,
                                                                 int64_t chunk = kScanChunk) {
  return HYMBA_DISPATCH(u.device(), selective_scan_forward, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                        chunk);
}
inline SelectiveScanGrads selective_scan_backward(const Tensor& dout, const Tensor& u, const Tensor& delta,
                                                  const Tensor& A, const Tensor& B, const Tensor& C,
                                                  const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                                                  bool delta_softplus, const Tensor& chunk_states,
                                                  int64_t chunk = kScanChunk) {
  return HYMBA_DISPATCH(u.device(), selective_scan_backward, dout, u, delta, A, B, C, D, z, delta_bias,
                        delta_softplus, chunk_states, chunk);
}
inline Tensor selective_scan_step(const Tensor& state, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                                  const Tensor& delta_bias, bool delta_softplus) {
  return HYMBA_DISPATCH(u.device(), selective_scan_step, state, u, delta, A, B, C, D, z, delta_bias,
                        delta_softplus);
}

}  // namespace hymba::kernels
