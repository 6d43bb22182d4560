// Emulated kernels/cuda/attention_mma.h (tests/cuda_emu): what attention_mma_{fwd,bwd}.cu need
// from it and from attention_common.cuh / common.cuh, on the CPU. kThreads, kWarps and Dims
// are not re-declared here: prep.py copies them from the real attention_common.cuh into
// attn_common.inc. The device's shared-memory opt-in limit is that of sm_90 (227 KiB) unless
// EMU_SMEM_LIMIT (bytes) says otherwise (A100: 166912), since the kernels plan their tiles by
// it. Cannot check: launch limits, occupancy, the cudaFuncSetAttribute opt-in itself.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <tuple>
#include "emu.h"
#include "kernels/attention.h"
namespace hymba::kernels::cuda {
inline int stream() { return 0; }  // emu-only
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  int64_t b = ceil_div(n, threads);
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}
inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
using std::min;  // emu-only
}  // namespace hymba::kernels::cuda
namespace hymba::kernels::cuda::attn {
#include "attn_common.inc"  // emu-only
inline float scale_of(const AttentionParams& p, int dk) { return float(attn_check::scale_of(p, dk)); }
// emu-only:begin
inline size_t smem_limit() {
  const char* e = std::getenv("EMU_SMEM_LIMIT");
  return e ? size_t(std::strtoull(e, nullptr, 10)) : size_t(227 * 1024);
}
template <typename K> inline void allow_smem(K, size_t) {}
// emu-only:end
bool mma_forward_supports(DType dt, const Dims& d);
bool mma_backward_supports(DType dt, const Dims& d);
std::tuple<Tensor, Tensor> mma_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d,
                                       const AttentionParams& p);
std::tuple<Tensor, Tensor, Tensor> mma_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                const Tensor& v, const Tensor& out, const Tensor& lse,
                                                const Dims& d, const AttentionParams& p, bool need_dq,
                                                bool need_dk, bool need_dv);
}  // namespace hymba::kernels::cuda::attn
#define HYMBA_CUDA_CHECK_LAUNCH(...) do {} while (0)
