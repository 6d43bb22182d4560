// Softmax, log-softmax and the fused cross-entropy on CUDA (kernels/softmax_xent.h), with the
// CPU kernels' semantics.
//
// One block per row. The row statistics (max m, s = sum exp(x - m)) come from one pass over
// the row with the online rule (a larger element rescales the running sum), merged across
// threads by the same rule, so a 256k-class row of logits is read once for its statistics.
// All math is in fp32 (f64 for f64 tensors); bf16 logits are never copied to fp32.
//
// Cross-entropy forward writes the stats (m, log s) per row as the CPU does, the per-row loss
// (in double, to a scratch buffer), and a one-block kernel then counts the non-ignored rows,
// finds the first out-of-range target and reduces the losses in a fixed order. The count
// (and the error check) come back to the host with one small device-to-host copy: the
// CrossEntropyForward contract keeps `count` as a host integer. The loss is fp32 (f64 for
// f64) whatever the logits' dtype. Backward writes
//   dlogits = (exp(x - m - log s) - onehot) * grad * scale
// in one pass from the saved stats; it also range-checks the targets on the device and reads
// the flag back (one small copy), so a bad target throws as on the CPU.
//
// The fused forward-backward (the training path) reads each row of logits from global memory
// once: the same one-block kernel counts the targets first (Mean's 1/count scales dlogits),
// then one block per row loads the row with 16-byte vectors into shared memory while forming
// its (m, s), and writes dlogits from that copy. Rows too long for shared memory (bf16 above
// about 116k classes on an H100, f32 above 58k) take the same kernel without staging and read
// the row a second time (mostly from L2) to write dlogits.
#include <climits>
#include <cmath>

#include "core/cuda_ops.h"
#include "kernels/cuda/common.cuh"
#include "kernels/softmax_xent.h"

namespace hymba::kernels::cuda {
namespace {

constexpr int kMaxThreads = 1024;
constexpr unsigned long long kNone = ULLONG_MAX;

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <typename A> __device__ __forceinline__ A neg_inf() { return -A(INFINITY); }

// Adds element x to the running (m, s). -inf elements contribute nothing (and never make
// exp(-inf - -inf) = NaN); a NaN element makes s NaN, as on the CPU.
template <typename A>
__device__ __forceinline__ void online_add(A& m, A& s, A x) {
  if (x > m) {
    s = s * exp_acc(m - x) + A(1);
    m = x;
  } else if (x != neg_inf<A>()) {
    s += exp_acc(x - m);
  }
}

// Merges (m2, s2) into (m, s). s == 0 marks an empty (or all -inf) range. Symmetric up to
// the order of one addition, so both lanes of a butterfly step compute the same bits.
template <typename A>
__device__ __forceinline__ void online_merge(A& m, A& s, A m2, A s2) {
  if (s2 == A(0)) return;
  if (s == A(0)) {
    m = m2;
    s = s2;
  } else if (m2 > m) {
    s = s * exp_acc(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * exp_acc(m2 - m);
  }
}

// Every thread of the block gets the merged (m, s). Contains __syncthreads.
template <typename A>
__device__ __forceinline__ void block_online(A& m, A& s, A* sm, A* ss) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    online_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  __syncthreads();  // sm/ss may still be read by a previous call
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = lane < nwarps ? sm[lane] : neg_inf<A>();
  s = lane < nwarps ? ss[lane] : A(0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    online_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
}

// Adds the kN values of one vector to the running (m, s): one rescale for the vector's max
// rather than a test per element. Until the first finite element (m == -inf) it takes
// online_add per element, which keeps exp(-inf - -inf) = NaN out of the sum.
template <typename A, int K>
__device__ __forceinline__ void online_add_vec(A& m, A& s, const A (&v)[K]) {
  if (m == neg_inf<A>()) {
#pragma unroll
    for (int e = 0; e < K; ++e) online_add(m, s, v[e]);
    return;
  }
  A vm = v[0];
#pragma unroll
  for (int e = 1; e < K; ++e) vm = v[e] > vm ? v[e] : vm;
  if (vm > m) {
    s *= exp_acc(m - vm);
    m = vm;
  }
#pragma unroll
  for (int e = 0; e < K; ++e) s += exp_acc(v[e] - m);
}

template <typename T>
__device__ __forceinline__ void row_stats(const T* xr, int64_t n, acc_t<T>& m, acc_t<T>& s) {
  using A = acc_t<T>;
  __shared__ A sm[32], ss[32];
  m = neg_inf<A>();
  s = A(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) online_add(m, s, load_acc(xr[j]));
  block_online(m, s, sm, ss);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, bool log) {
  using A = acc_t<T>;
  const T* xr = x + int64_t(blockIdx.x) * n;
  T* yr = y + int64_t(blockIdx.x) * n;
  A m, s;
  row_stats(xr, n, m, s);
  if (log) {
    // (x - m) - log s, as the CPU: exact for the large entries even when |x| is huge.
    const A ls = log_acc(s);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = store_acc<T>((load_acc(xr[j]) - m) - ls);
  } else {
    const A inv = A(1) / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = store_acc<T>(exp_acc(load_acc(xr[j]) - m) * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    softmax_backward_kernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, int64_t n,
                            bool log) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  const int64_t off = int64_t(blockIdx.x) * n;
  const T* g = dy + off;
  const T* yr = y + off;
  T* d = dx + off;
  A st = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) st += log ? load_acc(g[j]) : load_acc(g[j]) * load_acc(yr[j]);
  st = block_sum(st, scratch);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const A gv = load_acc(g[j]), yv = load_acc(yr[j]);
    d[j] = store_acc<T>(log ? gv - exp_acc(yv) * st : yv * (gv - st));
  }
}

// One block per row. Ignored rows (and out-of-range targets, reported by the finalize
// kernel) get zero stats and a zero loss without reading the row.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    xent_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ tg, acc_t<T>* __restrict__ stats,
                        double* __restrict__ row_loss, acc_t<T>* __restrict__ loss_rows, int64_t V,
                        int64_t ignore_index) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x;
  const int64_t t = tg[r];
  if (t == ignore_index || t < 0 || t >= V) {  // the same for the whole block: no barrier skipped
    if (threadIdx.x == 0) {
      stats[2 * r] = A(0);
      stats[2 * r + 1] = A(0);
      row_loss[r] = 0.0;
      if (loss_rows) loss_rows[r] = A(0);
    }
    return;
  }
  const T* xr = x + r * V;
  A m, s;
  row_stats(xr, V, m, s);
  if (threadIdx.x == 0) {
    const A ls = log_acc(s);
    stats[2 * r] = m;
    stats[2 * r + 1] = ls;
    // lse - x[t] = (m - x[t]) + log s, with m - x[t] >= 0 formed in double, as the CPU.
    const double l = (double(m) - double(load_acc(xr[t]))) + double(ls);
    row_loss[r] = l;
    if (loss_rows) loss_rows[r] = A(l);
  }
}

// One block: count of non-ignored rows, first out-of-range target row, and the reduced loss
// (Sum or Mean; loss may be null for None). info = {count, first bad row or -1}. With
// row_loss null it only counts (the fused kernel's first step).
template <typename A>
__global__ void __launch_bounds__(1024)
    xent_finalize_kernel(const int64_t* __restrict__ tg, const double* __restrict__ row_loss, int64_t rows, int64_t V,
                         int64_t ignore_index, bool mean, A* __restrict__ loss, int64_t* __restrict__ info) {
  __shared__ double scratch[32];
  __shared__ unsigned long long bad;
  if (threadIdx.x == 0) bad = kNone;
  __syncthreads();
  double total = 0, count = 0;  // count: integers below 2^53 are exact in double
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t t = tg[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V) {
      atomicMin(&bad, (unsigned long long)r);
      continue;
    }
    if (row_loss) total += row_loss[r];
    count += 1;
  }
  total = block_sum(total, scratch);
  count = block_sum(count, scratch);
  if (threadIdx.x == 0) {
    const int64_t c = int64_t(count);
    if (loss) loss[0] = A(mean ? (c > 0 ? total / double(c) : 0.0) : total);
    info[0] = c;
    info[1] = bad == kNone ? -1 : int64_t(bad);
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    xent_backward_kernel(const T* __restrict__ x, const int64_t* __restrict__ tg, const acc_t<T>* __restrict__ stats,
                         const acc_t<T>* __restrict__ grad, bool per_row, double scale, T* __restrict__ dl, int64_t V,
                         int64_t ignore_index, unsigned long long* __restrict__ bad) {
  using A = acc_t<T>;
  const int64_t r = blockIdx.x;
  const int64_t t = tg[r];
  T* d = dl + r * V;
  if (t == ignore_index || t < 0 || t >= V) {
    if (t != ignore_index && threadIdx.x == 0) atomicMin(bad, (unsigned long long)r);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = store_acc<T>(A(0));
    return;
  }
  const T* xr = x + r * V;
  const A m = stats[2 * r], ls = stats[2 * r + 1];
  const A gs = A(double(grad[per_row ? r : 0]) * scale);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    A e = exp_acc((load_acc(xr[j]) - m) - ls) * gs;
    if (j == t) e -= gs;
    d[j] = store_acc<T>(e);
  }
}

// Fused forward + backward, one block per row. Elements [0, head) and [tail, V) are handled
// one by one, [head, tail) as 16-byte vectors (vec: x and dl are both 16-byte aligned, so a
// row's first aligned element is the same in both). kStaged: the row is kept in dynamic shared
// memory between the statistics and the dlogits pass (sized (V + kN) * sizeof(T) by the host);
// otherwise the second pass reads global memory again. info[0] is the count of non-ignored
// rows, written by the counting kernel launched just before on the same stream.
template <typename T, bool kStaged>
__global__ void __launch_bounds__(kMaxThreads)
    xent_fused_kernel(const T* __restrict__ x, const int64_t* __restrict__ tg, const int64_t* __restrict__ info,
                      acc_t<T>* __restrict__ stats, double* __restrict__ row_loss, acc_t<T>* __restrict__ loss_rows,
                      T* __restrict__ dl, int64_t V, int64_t ignore_index, bool mean, double grad_scale, bool vec) {
  using A = acc_t<T>;
  using Vec = Vec16<T>;
  constexpr int kN = Vec::kN;
  extern __shared__ __align__(16) unsigned char xent_smem[];
  __shared__ A red_m[32], red_s[32];
  const int64_t r = blockIdx.x;
  const int64_t t = tg[r];
  const T* xr = x + r * V;
  T* dr = dl + r * V;
  int64_t head = 0, nvec = 0;
  if (vec) {
    head = (kN - (r * V) % kN) % kN;
    if (head > V) head = V;
    nvec = (V - head) / kN;
  }
  const int64_t tail = head + nvec * kN;
  const int64_t nscalar = head + (V - tail);
  // The i-th element of the scalar part.
  auto scalar_at = [head, tail](int64_t i) { return i < head ? i : tail + (i - head); };

  // Ignored rows (and out-of-range targets, reported by the host) get zero gradient, stats
  // and loss without reading the row. The condition is block-uniform: no barrier is skipped.
  if (t == ignore_index || t < 0 || t >= V) {
    Vec z;
#pragma unroll
    for (int e = 0; e < kN; ++e) z.v[e] = store_acc<T>(A(0));
    for (int64_t k = threadIdx.x; k < nvec; k += blockDim.x) reinterpret_cast<Vec*>(dr + head)[k] = z;
    for (int64_t i = threadIdx.x; i < nscalar; i += blockDim.x) dr[scalar_at(i)] = store_acc<T>(A(0));
    if (threadIdx.x == 0) {
      stats[2 * r] = A(0);
      stats[2 * r + 1] = A(0);
      row_loss[r] = 0.0;
      if (loss_rows) loss_rows[r] = A(0);
    }
    return;
  }

  // sx[j] is x[j]; the copy starts `off` elements into the buffer so that vector k lands on a
  // 16-byte boundary of shared memory, as it does in global memory: (off + head) % kN == 0.
  const int64_t off = (kN - head % kN) % kN;
  T* sx = reinterpret_cast<T*>(xent_smem) + off;
  A m = neg_inf<A>(), s = A(0);
  for (int64_t k = threadIdx.x; k < nvec; k += blockDim.x) {
    const Vec v = reinterpret_cast<const Vec*>(xr + head)[k];
    if constexpr (kStaged) reinterpret_cast<Vec*>(sx + head)[k] = v;
    A a[kN];
#pragma unroll
    for (int e = 0; e < kN; ++e) a[e] = load_acc(v.v[e]);
    online_add_vec(m, s, a);
  }
  for (int64_t i = threadIdx.x; i < nscalar; i += blockDim.x) {
    const int64_t j = scalar_at(i);
    const T xv = xr[j];
    if constexpr (kStaged) sx[j] = xv;
    online_add(m, s, load_acc(xv));
  }
  block_online(m, s, red_m, red_s);  // its barriers also make the staged row visible to all
  const A ls = log_acc(s);
  const T* src = kStaged ? sx : xr;
  if (threadIdx.x == 0) {
    stats[2 * r] = m;
    stats[2 * r + 1] = ls;
    // lse - x[t] = (m - x[t]) + log s, with m - x[t] >= 0 formed in double, as the CPU.
    const double l = (double(m) - double(load_acc(src[t]))) + double(ls);
    row_loss[r] = l;
    if (loss_rows) loss_rows[r] = A(l);
  }
  const int64_t count = info[0];
  const A gs = A(grad_scale * (mean ? (count > 0 ? 1.0 / double(count) : 0.0) : 1.0));
  // As xent_backward_kernel with grad grad_scale: (exp((x - m) - log s) - [j == t]) * gs.
  for (int64_t k = threadIdx.x; k < nvec; k += blockDim.x) {
    const Vec v = reinterpret_cast<const Vec*>(src + head)[k];
    const int64_t j0 = head + k * kN;
    Vec o;
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      A d = exp_acc((load_acc(v.v[e]) - m) - ls) * gs;
      if (j0 + e == t) d -= gs;
      o.v[e] = store_acc<T>(d);
    }
    reinterpret_cast<Vec*>(dr + head)[k] = o;
  }
  for (int64_t i = threadIdx.x; i < nscalar; i += blockDim.x) {
    const int64_t j = scalar_at(i);
    A d = exp_acc((load_acc(src[j]) - m) - ls) * gs;
    if (j == t) d -= gs;
    dr[j] = store_acc<T>(d);
  }
}

// ------------------------------------------------------------------------------ host side

void check_float(const char* op, const char* what, const Tensor& t) {
  HYMBA_CHECK(t.defined(), op, ": undefined ", what);
  check_cuda_tensor(op, what, t);
  HYMBA_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64 || t.dtype() == DType::BF16, op, ": dtype ",
              dtype_name(t.dtype()), " not supported on CUDA, expected f32, f64 or bf16 (", what, " ", t.meta_str(),
              ")");
}

void check_backward(const char* op, const Tensor& dy, const Tensor& y) {
  softmax_check::check_backward(op, dy, y, check_float);
}

int64_t last_dim(const Tensor& x) { return x.dim() == 0 ? 1 : x.size(-1); }

// Another dim is moved last with a transposed copy, as on the CPU.
template <typename RowFn>
Tensor along_dim(const char* op, const Tensor& x, int64_t dim, RowFn&& row_fn) {
  const int64_t nd = x.dim();
  const int64_t d = wrap_dim(dim, nd, op);
  if (nd == 0 || d == nd - 1) return row_fn(x.contiguous());
  return row_fn(x.transpose(d, nd - 1).contiguous()).transpose(d, nd - 1).contiguous();
}

template <typename RowFn>
Tensor along_dim2(const char* op, const Tensor& a, const Tensor& b, int64_t dim, RowFn&& row_fn) {
  const int64_t nd = b.dim();
  const int64_t d = wrap_dim(dim, nd, op);
  if (nd == 0 || d == nd - 1) return row_fn(a.contiguous(), b.contiguous());
  return row_fn(a.transpose(d, nd - 1).contiguous(), b.transpose(d, nd - 1).contiguous())
      .transpose(d, nd - 1)
      .contiguous();
}

Tensor softmax_rows(const char* op, const Tensor& x, bool log) {
  Tensor y = empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  const int64_t n = last_dim(x);
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / n;
  dispatch_f32_f64_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T><<<unsigned(rows), row_block_threads(n, 4, kMaxThreads), 0, stream()>>>(ptr_of<const T>(x),
                                                                                            ptr_of<T>(y), n, log);
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", x.meta_str());
  });
  return y;
}

Tensor softmax_backward_rows(const char* op, const Tensor& dy, const Tensor& y, bool log) {
  Tensor dx = empty(y.shape(), TensorOptions(y.dtype(), y.device()));
  const int64_t n = last_dim(y);
  if (y.numel() == 0) return dx;
  const int64_t rows = y.numel() / n;
  dispatch_f32_f64_bf16(y.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_kernel<T><<<unsigned(rows), row_block_threads(n, 4, kMaxThreads), 0, stream()>>>(
        ptr_of<const T>(dy), ptr_of<const T>(y), ptr_of<T>(dx), n, log);
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", y.meta_str());
  });
  return dx;
}

using softmax_check::stat_dtype;

// Checks logits (..., V) against targets (...); returns (rows, V).
std::pair<int64_t, int64_t> check_xent(const char* op, const Tensor& logits, const Tensor& targets) {
  return softmax_check::check_xent(op, logits, targets, check_float);
}

// The CPU's error for the target at `row` (read back from the device).
[[noreturn]] void throw_bad_target(const char* op, const Tensor& tg64, int64_t row, int64_t v, int64_t ignore_index) {
  int64_t tr = 0;
  hymba::cuda::memcpy_d2h(&tr, static_cast<const int64_t*>(tg64.data_ptr()) + row, sizeof(tr));
  HYMBA_FAIL(op, ": target ", tr, " at row ", row, " is out of range for ", v, " classes (valid: 0..", v - 1,
             ", or ignore_index ", ignore_index, ")");
}

}  // namespace

Tensor softmax_forward(const Tensor& x, int64_t dim) {
  check_float("softmax", "input", x);
  hymba::cuda::DeviceGuard guard(x.device().index);
  return along_dim("softmax", x, dim, [](const Tensor& xc) { return softmax_rows("softmax", xc, false); });
}

Tensor log_softmax_forward(const Tensor& x, int64_t dim) {
  check_float("log_softmax", "input", x);
  hymba::cuda::DeviceGuard guard(x.device().index);
  return along_dim("log_softmax", x, dim, [](const Tensor& xc) { return softmax_rows("log_softmax", xc, true); });
}

Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim) {
  check_backward("softmax_backward", dy, y);
  hymba::cuda::DeviceGuard guard(y.device().index);
  return along_dim2("softmax_backward", dy, y, dim, [](const Tensor& g, const Tensor& yc) {
    return softmax_backward_rows("softmax_backward", g, yc, false);
  });
}

Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t dim) {
  check_backward("log_softmax_backward", dy, y);
  hymba::cuda::DeviceGuard guard(y.device().index);
  return along_dim2("log_softmax_backward", dy, y, dim, [](const Tensor& g, const Tensor& yc) {
    return softmax_backward_rows("log_softmax_backward", g, yc, true);
  });
}

CrossEntropyForward cross_entropy_forward(const Tensor& logits_in, const Tensor& targets, int64_t ignore_index,
                                          LossReduction reduction) {
  const char* op = "cross_entropy";
  auto [rows, v] = check_xent(op, logits_in, targets);
  hymba::cuda::DeviceGuard guard(logits_in.device().index);
  const Device dev = logits_in.device();
  CrossEntropyForward out;
  softmax_check::allocate_loss_outputs(out, logits_in, targets, reduction, stat_dtype(logits_in.dtype()));
  if (rows == 0) {
    if (reduction != LossReduction::None) out.loss.zero_();
    return out;
  }
  const Tensor logits = logits_in.contiguous();
  const Tensor tg = targets.detach().contiguous().to(DType::I64);
  Tensor row_loss = empty({rows}, TensorOptions(DType::F64, dev));
  Tensor info = empty({2}, TensorOptions(DType::I64, dev));
  const bool none = reduction == LossReduction::None;
  dispatch_f32_f64_bf16(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t* ptg = ptr_of<const int64_t>(tg);
    xent_forward_kernel<T><<<unsigned(rows), row_block_threads(v, 4, kMaxThreads), 0, stream()>>>(
        ptr_of<const T>(logits), ptg, ptr_of<A>(out.stats), ptr_of<double>(row_loss),
        none ? ptr_of<A>(out.loss) : nullptr, v, ignore_index);
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", logits_in.meta_str());
    xent_finalize_kernel<A><<<1, 1024, 0, stream()>>>(ptg, ptr_of<const double>(row_loss), rows, v, ignore_index,
                                                     reduction == LossReduction::Mean,
                                                     none ? nullptr : ptr_of<A>(out.loss), ptr_of<int64_t>(info));
    HYMBA_CUDA_CHECK_LAUNCH(op, " reduce ", logits_in.meta_str());
  });
  int64_t host_info[2] = {0, -1};
  hymba::cuda::memcpy_d2h(host_info, info.data_ptr(), sizeof(host_info));
  if (host_info[1] >= 0) throw_bad_target(op, tg, host_info[1], v, ignore_index);
  out.count = host_info[0];
  return out;
}

Tensor cross_entropy_backward(const Tensor& grad_in, const Tensor& logits_in, const Tensor& targets,
                              const Tensor& stats_in, int64_t ignore_index, double scale) {
  const char* op = "cross_entropy_backward";
  auto [rows, v] = check_xent(op, logits_in, targets);
  softmax_check::check_xent_backward(op, grad_in, logits_in, targets, stats_in);
  hymba::cuda::DeviceGuard guard(logits_in.device().index);
  Tensor dl = empty(logits_in.shape(), TensorOptions(logits_in.dtype(), logits_in.device()));
  if (rows == 0) return dl;
  const Tensor logits = logits_in.contiguous(), stats = stats_in.contiguous();
  // grad (0-dim or one per row) in the compute type, whichever dtype check_xent_backward let in.
  const Tensor grad = grad_in.contiguous().to(stat_dtype(logits_in.dtype()));
  const Tensor tg = targets.detach().contiguous().to(DType::I64);
  Tensor bad = empty({1}, TensorOptions(DType::I64, logits_in.device()));
  HYMBA_CUDA_CHECK(cudaMemsetAsync(bad.data_ptr(), 0xff, sizeof(unsigned long long), stream()));
  dispatch_f32_f64_bf16(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    xent_backward_kernel<T><<<unsigned(rows), row_block_threads(v, 4, kMaxThreads), 0, stream()>>>(
        ptr_of<const T>(logits), ptr_of<const int64_t>(tg), ptr_of<const A>(stats), ptr_of<const A>(grad),
        grad.dim() != 0, scale, ptr_of<T>(dl), v, ignore_index, static_cast<unsigned long long*>(bad.data_ptr()));
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", logits_in.meta_str());
  });
  unsigned long long first_bad = 0;
  hymba::cuda::memcpy_d2h(&first_bad, bad.data_ptr(), sizeof(first_bad));
  if (first_bad != kNone) throw_bad_target(op, tg, int64_t(first_bad), v, ignore_index);
  return dl;
}

CrossEntropyForwardBackward cross_entropy_forward_backward(const Tensor& logits_in, const Tensor& targets,
                                                           int64_t ignore_index, LossReduction reduction,
                                                           double grad_scale) {
  const char* op = "cross_entropy_forward_backward";
  auto [rows, v] = check_xent(op, logits_in, targets);
  hymba::cuda::DeviceGuard guard(logits_in.device().index);
  const Device dev = logits_in.device();
  CrossEntropyForwardBackward out;
  softmax_check::allocate_loss_outputs(out, logits_in, targets, reduction, stat_dtype(logits_in.dtype()));
  out.dlogits = empty(logits_in.shape(), TensorOptions(logits_in.dtype(), dev));
  if (rows == 0) {
    if (reduction != LossReduction::None) out.loss.zero_();
    return out;
  }
  const Tensor logits = logits_in.contiguous();
  const Tensor tg = targets.detach().contiguous().to(DType::I64);
  Tensor row_loss = empty({rows}, TensorOptions(DType::F64, dev));
  Tensor info = empty({2}, TensorOptions(DType::I64, dev));
  const bool none = reduction == LossReduction::None, mean = reduction == LossReduction::Mean;
  int optin = 0;
  HYMBA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev.index));
  dispatch_f32_f64_bf16(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int kN = Vec16<T>::kN;
    const int64_t* ptg = ptr_of<const int64_t>(tg);
    const T* px = ptr_of<const T>(logits);
    T* pd = ptr_of<T>(out.dlogits);
    // Count first: the row kernel reads the count for Mean's scale from info[0].
    xent_finalize_kernel<A><<<1, 1024, 0, stream()>>>(ptg, nullptr, rows, v, ignore_index, false, nullptr,
                                                     ptr_of<int64_t>(info));
    HYMBA_CUDA_CHECK_LAUNCH(op, " count ", logits_in.meta_str());
    const bool vec = aligned16(px) && aligned16(pd);
    const int threads = row_block_threads(ceil_div(v, kN), 1, kMaxThreads);
    // Staged when the row (plus the alignment shift) fits beside the kernel's static shared
    // memory within the device's opt-in limit.
    const size_t smem = size_t(v + kN) * sizeof(T);
    cudaFuncAttributes fa{};
    HYMBA_CUDA_CHECK(cudaFuncGetAttributes(&fa, xent_fused_kernel<T, true>));
    const bool staged = smem + fa.sharedSizeBytes <= size_t(optin);
    A* ploss_rows = none ? ptr_of<A>(out.loss) : nullptr;
    if (staged) {
      if (smem > 48 * 1024)
        HYMBA_CUDA_CHECK(
            cudaFuncSetAttribute(xent_fused_kernel<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            op, ": ", smem, " bytes of shared memory");
      xent_fused_kernel<T, true><<<unsigned(rows), threads, smem, stream()>>>(
          px, ptg, ptr_of<const int64_t>(info), ptr_of<A>(out.stats), ptr_of<double>(row_loss), ploss_rows, pd, v,
          ignore_index, mean, grad_scale, vec);
    } else {
      xent_fused_kernel<T, false><<<unsigned(rows), threads, 0, stream()>>>(
          px, ptg, ptr_of<const int64_t>(info), ptr_of<A>(out.stats), ptr_of<double>(row_loss), ploss_rows, pd, v,
          ignore_index, mean, grad_scale, vec);
    }
    HYMBA_CUDA_CHECK_LAUNCH(op, " ", logits_in.meta_str(), staged ? " (staged)" : " (two reads)");
    xent_finalize_kernel<A><<<1, 1024, 0, stream()>>>(ptg, ptr_of<const double>(row_loss), rows, v, ignore_index,
                                                     mean, none ? nullptr : ptr_of<A>(out.loss),
                                                     ptr_of<int64_t>(info));
    HYMBA_CUDA_CHECK_LAUNCH(op, " reduce ", logits_in.meta_str());
  });
  int64_t host_info[2] = {0, -1};
  hymba::cuda::memcpy_d2h(host_info, info.data_ptr(), sizeof(host_info));
  if (host_info[1] >= 0) throw_bad_target(op, tg, host_info[1], v, ignore_index);
  out.count = host_info[0];
  return out;
}

}  // namespace hymba::kernels::cuda
