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
#include <string>
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

// Argument checks shared by the CPU and CUDA kernels (each backend adds its own dtype and
// device rules): every message names the op, the offending input and the shapes of u and A.
namespace scan_check {

struct ScanDims {
  int64_t B, D, L, N;
};

inline std::string describe(const Tensor& t) { return t.defined() ? t.meta_str() : std::string("undefined"); }

inline void expect_shape(const char* op, const char* what, const Tensor& t, const Shape& expected, const Tensor& u,
                         const Tensor& A) {
  HYMBA_CHECK(t.shape() == expected, op, ": ", what, " has shape ", shape_str(t.shape()), ", expected ",
              shape_str(expected), " (u ", shape_str(u.shape()), ", A ", shape_str(A.shape()), ")");
}

inline void expect_like(const char* op, const char* what, const Tensor& t, const Tensor& u) {
  HYMBA_CHECK(t.dtype() == u.dtype(), op, ": dtype mismatch: ", what, " ", t.meta_str(), " and u ", u.meta_str());
  HYMBA_CHECK(t.device() == u.device(), op, ": tensors on different devices: ", what, " ", t.meta_str(), " and u ",
              u.meta_str());
}

// Validates the inputs every scan kernel shares. `seq` is false for the one-step kernel, whose
// per-token inputs have no L dim. `dtype_ok` says whether the backend takes u's dtype, and
// `dtypes` lists what it takes, for the message.
inline ScanDims check_inputs(const char* op, bool seq, const Tensor& u, const Tensor& delta, const Tensor& A,
                             const Tensor& B, const Tensor& C, const Tensor& D, const Tensor& z,
                             const Tensor& delta_bias, bool (*dtype_ok)(DType), const char* dtypes) {
  HYMBA_CHECK(u.defined() && delta.defined() && A.defined() && B.defined() && C.defined(), op,
              ": u, delta, A, B and C are required (u ", describe(u), ", delta ", describe(delta), ", A ",
              describe(A), ", B ", describe(B), ", C ", describe(C), ")");
  HYMBA_CHECK(dtype_ok(u.dtype()), op, ": dtype ", dtype_name(u.dtype()), " not supported ", dtypes, " (u ",
              u.meta_str(), ")");
  HYMBA_CHECK(u.dim() == (seq ? 3 : 2), op, ": u must be ", seq ? "(B, D, L)" : "(B, D)", ", got ", u.meta_str());
  HYMBA_CHECK(A.dim() == 2 && A.size(0) == u.size(1), op, ": A has shape ", shape_str(A.shape()),
              ", expected (D, N) with D = ", u.size(1), " (u ", shape_str(u.shape()), ")");
  ScanDims dm{u.size(0), u.size(1), seq ? u.size(2) : 1, A.size(1)};
  const Shape act = seq ? Shape{dm.B, dm.D, dm.L} : Shape{dm.B, dm.D};
  const Shape bc = seq ? Shape{dm.B, dm.N, dm.L} : Shape{dm.B, dm.N};
  expect_shape(op, "delta", delta, act, u, A);
  expect_shape(op, "B", B, bc, u, A);
  expect_shape(op, "C", C, bc, u, A);
  expect_like(op, "delta", delta, u);
  expect_like(op, "A", A, u);
  expect_like(op, "B", B, u);
  expect_like(op, "C", C, u);
  if (D.defined()) {
    expect_shape(op, "D", D, {dm.D}, u, A);
    expect_like(op, "D", D, u);
  }
  if (z.defined()) {
    expect_shape(op, "z", z, act, u, A);
    expect_like(op, "z", z, u);
  }
  if (delta_bias.defined()) {
    expect_shape(op, "delta_bias", delta_bias, {dm.D}, u, A);
    expect_like(op, "delta_bias", delta_bias, u);
  }
  return dm;
}

// The backward's own inputs: chunk, the output gradient (shaped and typed like u) and the
// forward's chunk_states (B, D, ceil(L / chunk), N), whose dtype each backend checks (the CPU
// saves them in u's dtype, CUDA in the fp32/f64 accumulation dtype). Returns ceil(L / chunk).
inline int64_t check_backward(const char* op, const ScanDims& dm, const Tensor& dout, const Tensor& states,
                              int64_t chunk, const Tensor& u, const Tensor& A) {
  HYMBA_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  HYMBA_CHECK(dout.defined(), op, ": the output gradient is undefined");
  expect_shape(op, "the output gradient", dout, {dm.B, dm.D, dm.L}, u, A);
  expect_like(op, "the output gradient", dout, u);
  const int64_t nc = (dm.L + chunk - 1) / chunk;
  HYMBA_CHECK(states.defined(), op, ": chunk_states is undefined");
  expect_shape(op, "chunk_states", states, {dm.B, dm.D, nc, dm.N}, u, A);
  return nc;
}

}  // namespace scan_check

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
