// Optimizer kernels on CUDA (kernels/adamw.h): the fused AdamW update and the squared norm,
// both multi-tensor.
//
// Several tensors are cut into chunks of at most kChunk elements; a chunk table (pointers and
// element count) is copied to the device and one block handles one chunk, so any number of
// parameter tensors of any sizes is updated by one launch per dtype. A single tensor is
// passed to its kernel by value instead (no table, no host wait).
//
// adamw_step computes in the tensors' dtype with the CPU kernel's expression, term for term,
// every operation correctly rounded and none fused. The CPU build lets GCC contract a * b + c
// into FMAs (it does, with -march=native), so results can differ from the CPU in the last
// bits; they equal the CPU expression evaluated without contraction.
//
// sum_of_squares: each block accumulates its chunk in double (per thread, then a fixed tree)
// into one partial per chunk, and one block adds the partials in a fixed tree: the result
// depends only on the tensors' sizes and values, never on timing. One copy brings it back.
#include <cmath>
#include <vector>

#include "core/cuda_ops.h"
#include "kernels/adamw.h"
#include "kernels/cuda/common.cuh"

namespace hymba::kernels::cuda {
namespace {

constexpr int64_t kChunk = 1 << 16;
constexpr int kThreads = 512;

struct AdamChunk {
  void* p;
  const void* g;
  void* m;
  void* v;
  int64_t n;
};

using adamw_check::Coeffs;

// Each operation rounded on its own (the _rn intrinsics are never fused into FMAs): the
// update is the expression as written, identical in every kernel that inlines it.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// Element i of a (p, g, m, v) range: the CPU kernel's update, term for term.
template <typename T>
__device__ __forceinline__ void adamw_update(const AdamChunk& ch, int64_t i, const Coeffs<T>& c) {
  T* p = static_cast<T*>(ch.p);
  const T* g = static_cast<const T*>(ch.g);
  T* m = static_cast<T*>(ch.m);
  T* v = static_cast<T*>(ch.v);
  T pi = p[i], mi = m[i], vi = v[i];
  const T gi = g[i];
  pi = mul_rn(pi, c.decay);                                           // p *= decay
  mi = add_rn(mul_rn(c.b1, mi), mul_rn(c.omb1, gi));                  // m = b1 * m + (1 - b1) * g
  vi = add_rn(mul_rn(c.b2, vi), mul_rn(mul_rn(c.omb2, gi), gi));      // v = b2 * v + (1 - b2) * g * g
  const T denom = add_rn(mul_rn(sqrt_rn(vi), c.inv_sqrt_bc2), c.eps);  // sqrt(v) / sqrt(bc2) + eps
  pi = sub_rn(pi, div_rn(mul_rn(c.step_size, mi), denom));            // p -= step_size * m / denom
  p[i] = pi;
  m[i] = mi;
  v[i] = vi;
}

// One block per chunk of the table.
template <typename T>
__global__ void __launch_bounds__(kThreads) adamw_chunks_kernel(const AdamChunk* __restrict__ chunks, Coeffs<T> c) {
  const AdamChunk ch = chunks[blockIdx.x];
  for (int64_t i = threadIdx.x; i < ch.n; i += blockDim.x) adamw_update(ch, i, c);
}

// One tensor passed by value: no table to upload, so a single-tensor step never waits for
// a host-to-device copy.
template <typename T>
__global__ void __launch_bounds__(kThreads) adamw_tensor_kernel(AdamChunk t, Coeffs<T> c) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.n; i += step) adamw_update(t, i, c);
}

enum SqDType : int { kSqF32 = 0, kSqF64 = 1, kSqBF16 = 2 };

struct SqChunk {
  const void* x;
  int64_t n;
  int dtype;  // SqDType: the branch is uniform over the block
};

template <typename T>
__device__ __forceinline__ double chunk_sum_squares(const void* x, int64_t n) {
  const T* p = static_cast<const T*>(x);
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double e = double(load_acc(p[i]));
    acc += e * e;
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads) sum_squares_chunks_kernel(const SqChunk* __restrict__ chunks,
                                                                       double* __restrict__ partial) {
  __shared__ double scratch[32];
  const SqChunk ch = chunks[blockIdx.x];
  double acc = 0;
  switch (ch.dtype) {
    case kSqF32: acc = chunk_sum_squares<float>(ch.x, ch.n); break;
    case kSqF64: acc = chunk_sum_squares<double>(ch.x, ch.n); break;
    default: acc = chunk_sum_squares<__nv_bfloat16>(ch.x, ch.n); break;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(1024)
    sum_partials_kernel(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = acc;
}

// A chunk table on the device. Freed (through the caching allocator, stream-ordered) when
// the returned tensor goes, which is safe right after the launch that reads it.
template <typename C>
Tensor upload(const std::vector<C>& chunks, Device dev) {
  Tensor t = empty({int64_t(chunks.size() * sizeof(C))}, TensorOptions(DType::U8, dev));
  hymba::cuda::memcpy_h2d(t.data_ptr(), chunks.data(), chunks.size() * sizeof(C));
  return t;
}

char* elem_ptr(const Tensor& t, int64_t i) {
  return static_cast<char*>(t.data_ptr()) + i * int64_t(dtype_size(t.dtype()));
}

// `tensors` holds whole tensors (n = numel). One tensor: passed by value; several: cut into
// chunks whose table is copied to the device (a synchronous copy from pageable memory, so
// the multi-tensor step costs one host wait per call).
template <typename T>
void launch_adamw(const std::vector<AdamChunk>& tensors, Device dev, const Coeffs<T>& c, const char* op) {
  if (tensors.empty()) return;
  if (tensors.size() == 1) {
    adamw_tensor_kernel<T><<<grid_for(tensors[0].n, kThreads), kThreads, 0, stream()>>>(tensors[0], c);
    HYMBA_CUDA_CHECK_LAUNCH(op, ": ", tensors[0].n, " elements");
    return;
  }
  const auto at = [](const void* p, int64_t i) {
    return static_cast<void*>(static_cast<T*>(const_cast<void*>(p)) + i);
  };
  std::vector<AdamChunk> chunks;
  for (const AdamChunk& t : tensors)
    for (int64_t b = 0; b < t.n; b += kChunk)
      chunks.push_back({at(t.p, b), at(t.g, b), at(t.m, b), at(t.v, b), std::min(kChunk, t.n - b)});
  const Tensor table = upload(chunks, dev);
  adamw_chunks_kernel<T><<<unsigned(chunks.size()), kThreads, 0, stream()>>>(
      static_cast<const AdamChunk*>(table.data_ptr()), c);
  HYMBA_CUDA_CHECK_LAUNCH(op, ": ", tensors.size(), " tensors in ", chunks.size(), " chunks");
}

void adamw_impl(const char* op, const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t step) {
  adamw_check::check_list_sizes(op, params, grads, exp_avgs, exp_avg_sqs);
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    HYMBA_CHECK(p.defined(), op, ": param ", i, " is undefined");
    check_cuda_tensor(op, "param", p);
    HYMBA_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, op, ": dtype ", dtype_name(p.dtype()),
                " not supported here, expected f32 or f64 (param ", p.meta_str(), ")");
    adamw_check::check_operands(op, p, grads[i], exp_avgs[i], exp_avg_sqs[i]);
    HYMBA_CHECK(p.device() == params[0].device(), op, ": params on different devices: ", params[0].meta_str(),
                " and ", p.meta_str());
  }
  adamw_check::check_hyper(op, lr, beta1, beta2, eps, weight_decay, step);
  if (params.empty()) return;
  const Device dev = params[0].device();
  hymba::cuda::DeviceGuard guard(dev.index);

  // Non-contiguous operands are updated in contiguous copies, written back afterwards (every
  // element's update is independent, so this is the same computation).
  // The copies must outlive the launches: a copy freed earlier could be handed to the chunk
  // table's allocation and overwritten before the kernel reads it.
  std::vector<std::pair<Tensor, Tensor>> write_back;  // (view, contiguous copy)
  std::vector<Tensor> read_only;
  auto dense = [&](const Tensor& t, bool written) {
    if (t.is_contiguous()) return t;
    Tensor c = t.contiguous();
    if (written) {
      write_back.emplace_back(t, c);
    } else {
      read_only.push_back(c);
    }
    return c;
  };
  std::vector<AdamChunk> f32_tensors, f64_tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel();
    if (n == 0) continue;
    const Tensor p = dense(params[i], true), g = dense(grads[i], false), m = dense(exp_avgs[i], true),
                 v = dense(exp_avg_sqs[i], true);
    auto& out = p.dtype() == DType::F32 ? f32_tensors : f64_tensors;
    out.push_back({p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), n});
  }
  launch_adamw<float>(f32_tensors, dev, adamw_check::make_coeffs<float>(lr, beta1, beta2, eps, weight_decay, step), op);
  launch_adamw<double>(f64_tensors, dev, adamw_check::make_coeffs<double>(lr, beta1, beta2, eps, weight_decay, step),
                       op);
  for (auto& [view, copy] : write_back) view.copy_(copy);
}

double sum_of_squares_impl(const char* op, const std::vector<Tensor>& xs) {
  std::vector<Tensor> dense;  // keeps contiguous copies alive until the kernel has run
  std::vector<SqChunk> chunks;
  Device dev;
  bool have_dev = false;
  for (const Tensor& x : xs) {
    if (!x.defined()) continue;
    check_cuda_tensor(op, "tensor", x);
    if (!have_dev) {
      dev = x.device();
      have_dev = true;
    }
    HYMBA_CHECK(x.device() == dev, op, ": tensors on different devices: ", dev.str(), " and ", x.meta_str());
    int code = 0;
    switch (x.dtype()) {
      case DType::F32: code = kSqF32; break;
      case DType::F64: code = kSqF64; break;
      case DType::BF16: code = kSqBF16; break;
      default: HYMBA_FAIL(op, ": dtype ", dtype_name(x.dtype()), " not supported on CUDA, expected f32, f64 or bf16 (",
                          x.meta_str(), ")");
    }
    const int64_t n = x.numel();
    if (n == 0) continue;
    dense.push_back(x.contiguous());
    const Tensor& c = dense.back();
    for (int64_t b = 0; b < n; b += kChunk) chunks.push_back({elem_ptr(c, b), std::min(kChunk, n - b), code});
  }
  if (chunks.empty()) return 0.0;
  hymba::cuda::DeviceGuard guard(dev.index);
  const Tensor table = upload(chunks, dev);
  Tensor partial = empty({int64_t(chunks.size())}, TensorOptions(DType::F64, dev));
  Tensor total = empty({1}, TensorOptions(DType::F64, dev));
  sum_squares_chunks_kernel<<<unsigned(chunks.size()), kThreads, 0, stream()>>>(
      static_cast<const SqChunk*>(table.data_ptr()), ptr_of<double>(partial));
  HYMBA_CUDA_CHECK_LAUNCH(op, ": ", chunks.size(), " chunks");
  sum_partials_kernel<<<1, 1024, 0, stream()>>>(ptr_of<const double>(partial), int64_t(chunks.size()),
                                                ptr_of<double>(total));
  HYMBA_CUDA_CHECK_LAUNCH(op, ": final sum of ", chunks.size(), " partials");
  double out = 0;
  hymba::cuda::memcpy_d2h(&out, total.data_ptr(), sizeof(out));
  return out;
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  HYMBA_CHECK(param.defined(), "adamw_step: param is undefined");
  adamw_impl("adamw_step", {param}, {grad}, {exp_avg}, {exp_avg_sq}, lr, beta1, beta2, eps, weight_decay, step);
}

void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  adamw_impl("adamw_step_multi", params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay, step);
}

double sum_of_squares(const Tensor& x) {
  HYMBA_CHECK(x.defined(), "sum_of_squares: undefined tensor");
  return sum_of_squares_impl("sum_of_squares", {x});
}

double sum_of_squares_multi(const std::vector<Tensor>& xs) { return sum_of_squares_impl("sum_of_squares_multi", xs); }

}  // namespace hymba::kernels::cuda
