// Which implementation the CUDA backend runs for the two sequence-mixing families that have two.
//
// The first CUDA scan and attention kernels were written for correctness: the scan runs one
// thread per (b, d, n) state sequentially in time, attention keeps its accumulators in shared
// memory around 16x16 wmma tiles. On an H100 at Hymba-1.5B sizes they run the scan fwd+bwd in
// 37.7 ms and attention at about 15 TFLOP/s. The fast kernels (Mamba's blocked time-parallel
// scan: 7.2 ms; flash-attention-2 style mma.sync attention with register-resident fragments:
// 149-161 TFLOP/s fwd+bwd, bench/RESULTS.md) are the defaults. The first ones stay selectable
// so that each can always be checked against the other on the same GPU, and so that a run that
// needs bitwise-reproducible gradients can ask for the deterministic scan (the blocked scan
// sums dB and dC over channels with fp32 atomics). The mma attention runs bf16 with head sizes
// that are multiples of 8 up to 128; other inputs go to the wmma kernels whatever the choice.
//
// Defaults: the fast kernels (they have passed the CUDA tests on an H100). Environment (read once, on
// first use): HYMBA_CUDA_SCAN=sequential|blocked, HYMBA_CUDA_ATTENTION=wmma|mma,
// HYMBA_CUDA_SCAN_FORWARD=steps16|steps8x2|steps8b4|steps16h|steps16q|steps16hg,
// HYMBA_CUDA_SCAN_BACKWARD=steps8h|steps8|steps8q; any other value is an error naming the
// variable. Both kernels of a family honour the same contract
// (kernels/selective_scan.h, kernels/attention.h), including the layout of the scan's
// chunk_states, so a forward run with one and a backward with the other is still correct.
#pragma once

#ifdef HYMBA_WITH_CUDA

#include <type_traits>

namespace hymba::kernels::cuda {

enum class ScanImpl {
  Sequential,  // kernels/cuda/selective_scan.cu: one thread per state; deterministic
  Blocked,     // kernels/cuda/selective_scan_blocked.cu: time-parallel block scan
};
enum class AttentionImpl {
  Wmma,  // kernels/cuda/attention_{fwd,bwd}.cu: wmma tiles, accumulators in shared memory
  Mma,   // kernels/cuda/attention_mma_{fwd,bwd}.cu: mma.sync, fragments in registers (bf16)
};

// The blocked scan's forward shape (kernels/cuda/selective_scan_blocked.cu, FwdShape): steps
// per lane, states a warp walks at once, blocks per SM. The same scan up to rounding (the
// time chunks of the lanes differ); only the speed differs, which is why the choice exists:
// bench_gpu times them all, so a GPU run tells which to make the default.
enum class ScanForward {
  Steps16,        // 16 steps per lane, one state at a time, 3 blocks per SM
  Steps8States2,  // 8 steps per lane, two states at once (interleaved chains and scans)
  Steps8Blocks4,  // 8 steps per lane, one state, registers capped for 4 blocks per SM
  Steps16Half,    // 16 steps per lane, two channels per warp (a half-warp each), 3 blocks per SM: the fastest
  Steps16Quarter,  // 16 steps per lane, four channels per warp (8 lanes each), 3 blocks per SM
  Steps16HalfGroup8,  // as Steps16Half, with B/C tile groups of 8 states (half the block barriers)
};
// The blocked scan's backward shape (backward_kernel's kSeg): 8 steps per lane, and two
// channels per warp (128-step chunks), a warp per channel (256) or four per warp (64). A
// chunk must start at a saved state: with a save interval that does not divide the chunk,
// the kernel takes the next wider shape that it divides.
enum class ScanBackward {
  Steps8Half,     // 8 steps per lane, two channels per warp (a half-warp each)
  Steps8,         // 8 steps per lane, a warp per channel
  Steps8Quarter,  // 8 steps per lane, four channels per warp (8 lanes each)
};

ScanImpl scan_impl();
void set_scan_impl(ScanImpl impl);
AttentionImpl attention_impl();
void set_attention_impl(AttentionImpl impl);
ScanForward scan_forward();
void set_scan_forward(ScanForward shape);
ScanBackward scan_backward();
void set_scan_backward(ScanBackward shape);

const char* impl_name(ScanImpl impl);
const char* impl_name(AttentionImpl impl);
const char* impl_name(ScanForward shape);
const char* impl_name(ScanBackward shape);

// Sets an implementation for the lifetime of a scope (tests and benchmarks run both).
template <typename Impl> class ImplGuard {
 public:
  explicit ImplGuard(Impl impl) : saved_(get()) { set(impl); }
  ~ImplGuard() { set(saved_); }
  ImplGuard(const ImplGuard&) = delete;
  ImplGuard& operator=(const ImplGuard&) = delete;

 private:
  static Impl get() {
    if constexpr (std::is_same_v<Impl, ScanImpl>) return scan_impl();
    else if constexpr (std::is_same_v<Impl, ScanForward>) return scan_forward();
    else if constexpr (std::is_same_v<Impl, ScanBackward>) return scan_backward();
    else return attention_impl();
  }
  static void set(Impl impl) {
    if constexpr (std::is_same_v<Impl, ScanImpl>) set_scan_impl(impl);
    else if constexpr (std::is_same_v<Impl, ScanForward>) set_scan_forward(impl);
    else if constexpr (std::is_same_v<Impl, ScanBackward>) set_scan_backward(impl);
    else set_attention_impl(impl);
  }
  Impl saved_;
};

}  // namespace hymba::kernels::cuda

#endif
