// Strided copy with dtype conversion, fill, and Philox fills on CUDA (core/cuda_ops.h).
//
// One elementwise kernel per dtype pair serves every layout: dims are coalesced on the host
// by the CPU's rule (core/coalesce.h; contiguous tensors become one dim and skip index
// arithmetic entirely), and the kernel
// maps each linear row-major index to per-operand offsets. Index arithmetic is 32-bit
// whenever every offset fits, because 64-bit division costs several times more on the GPU
// and dominates a copy; tensors past 2^31 elements take the 64-bit instantiation.
//
// Conversions are the CPU's own (core/convert.h, host+device): through float for bf16/f16
// with the bit-exact conversions of core/half.h, integer to integer directly so i64 values
// survive exactly; results are therefore bit-identical to the CPU's.
#include <cuda_runtime_api.h>

#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <type_traits>

#include "core/allocator.h"
#include "core/convert.h"
#include "core/cuda_check.h"
#include "core/cuda_ops.h"
#include "core/dtype.h"
#include "core/half.h"
#include "core/philox.h"
#include "core/strided_indexer.cuh"
#include "core/tensor.h"

namespace hymba::cuda {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; bigger tensors loop.
constexpr int64_t kMaxBlocks = int64_t(1) << 16;

int grid_for(int64_t work_items) {
  int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return int(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// ---------------------------------------------------------------- conversions

// Same-dtype copies move raw bits by element size: NaN payloads are preserved exactly like a
// memcpy, and four instantiations serve seven dtypes.
template <size_t Size> struct raw_type;
template <> struct raw_type<1> { using type = uint8_t; };
template <> struct raw_type<2> { using type = uint16_t; };
template <> struct raw_type<4> { using type = uint32_t; };
template <> struct raw_type<8> { using type = uint64_t; };

// ---------------------------------------------------------------- kernels
//
// Each kernel is a grid-stride loop around a __host__ __device__ body, so the index and
// Philox logic can also be run on the host (the bodies are what a CPU-only check exercises).

template <typename D, typename S, typename Idx>
HYMBA_HD void copy_element(D* d, const S* s, const StridedIndexer<Idx, 2>& oc, Idx i) {
  Idx off[2];
  oc.get(i, off);
  d[off[0]] = convert<D>(s[off[1]]);
}

template <typename D, typename S, typename Idx>
__global__ void __launch_bounds__(kThreads)
    copy_kernel(char* __restrict__ dst, const char* __restrict__ src, StridedIndexer<Idx, 2> oc, Idx n) {
  D* d = reinterpret_cast<D*>(dst);
  const S* s = reinterpret_cast<const S*>(src);
  const Idx step = Idx(gridDim.x) * Idx(blockDim.x);
  for (Idx i = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); i < n; i += step)
    copy_element<D, S, Idx>(d, s, oc, i);
}

template <typename R, typename Idx>
__global__ void __launch_bounds__(kThreads)
    fill_kernel(char* __restrict__ dst, StridedIndexer<Idx, 1> oc, Idx n, R value) {
  R* d = reinterpret_cast<R*>(dst);
  const Idx step = Idx(gridDim.x) * Idx(blockDim.x);
  for (Idx i = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); i < n; i += step) {
    Idx off[1];
    oc.get(i, off);
    d[off[0]] = value;
  }
}


template <typename T> constexpr int philox_per_block() { return std::is_same_v<T, double> ? 2 : 4; }

// The elements of Philox block `blk`: one philox4x32_10 call yields the random bits of 4
// elements (2 for f64), and the per-element formulas are those of philox::uniform_at /
// normal_at (core/philox.h) for the block's elements. `scale` is b - a (uniform) or b
// (normal).
template <typename T, typename Idx, bool kNormal>
HYMBA_HD void philox_block(T* d, const StridedIndexer<Idx, 1>& oc, Idx n, Idx blk, uint64_t seed,
                           uint64_t offset, double a, double scale) {
  constexpr bool kWide = std::is_same_v<T, double>;
  constexpr int kPer = philox_per_block<T>();
  const double two_pi = 6.283185307179586;
  philox::U32x4 r = philox::philox4x32_10(offset + uint64_t(blk), seed);
  double rad = 0.0, u2 = 0.0;
  if constexpr (kNormal && kWide) {
    double u1 = philox::u64_to_unit_double(r.v[0], r.v[1]);
    u2 = philox::u64_to_unit_double(r.v[2], r.v[3]);
    rad = sqrt(-2.0 * log(1.0 - u1));
  }
HYMBA_UNROLL
  for (int l = 0; l < kPer; ++l) {
    const Idx i = blk * Idx(kPer) + Idx(l);
    if (i >= n) break;
    double x;
    if constexpr (kNormal) {
      if constexpr (!kWide) {
        if (l % 2 == 0) {  // lanes (0,1) and (2,3) each form one Box-Muller pair
          double u1 = double(philox::u32_to_unit_float(r.v[l]));
          u2 = double(philox::u32_to_unit_float(r.v[l + 1]));
          rad = sqrt(-2.0 * log(1.0 - u1));
        }
      }
      x = (l % 2 == 0) ? rad * cos(two_pi * u2) : rad * sin(two_pi * u2);
    } else if constexpr (kWide) {
      x = philox::u64_to_unit_double(r.v[2 * l], r.v[2 * l + 1]);
    } else {
      x = double(philox::u32_to_unit_float(r.v[l]));
    }
    Idx off[1];
    oc.get(i, off);
    d[off[0]] = convert<T>(philox::affine_rn(a, scale, x));
  }
}

// One thread per Philox block.
template <typename T, typename Idx, bool kNormal>
__global__ void __launch_bounds__(kThreads)
    philox_kernel(char* __restrict__ dst, StridedIndexer<Idx, 1> oc, Idx n, Idx nblocks, uint64_t seed,
                  uint64_t offset, double a, double scale) {
  T* d = reinterpret_cast<T*>(dst);
  const Idx step = Idx(gridDim.x) * Idx(blockDim.x);
  for (Idx blk = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); blk < nblocks; blk += step)
    philox_block<T, Idx, kNormal>(d, oc, n, blk, seed, offset, a, scale);
}

// ---------------------------------------------------------------- host helpers

char* base_ptr(const Tensor& t) {
  return static_cast<char*>(t.storage()->data()) + t.offset() * int64_t(dtype_size(t.dtype()));
}

void check_cuda_tensor(const Tensor& t, const char* op, const char* what) {
  HYMBA_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
  HYMBA_CHECK(t.is_cuda(), op, ": ", what, " must be a CUDA tensor, got ", t.meta_str());
}

// The byte range [lo, hi) that a view can touch.
std::pair<uintptr_t, uintptr_t> byte_span(const Tensor& t) {
  int64_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t ext = t.stride(d) * (t.size(d) - 1);
    (ext < 0 ? lo : hi) += ext;
  }
  const int64_t es = int64_t(dtype_size(t.dtype()));
  auto base = reinterpret_cast<uintptr_t>(base_ptr(t));
  return {base + lo * es, base + (hi + 1) * es};
}

// A device buffer from the caching allocator, returned on scope exit. Returning it right
// after enqueuing the kernels that use it is safe because every block is reused on the same
// (default) stream, which runs the reuser's work after ours.
class ScratchBuffer {
 public:
  ScratchBuffer(int device, size_t nbytes)
      : alloc_(cuda_caching_allocator(device)), nbytes_(nbytes), p_(alloc_->allocate(nbytes)) {}
  ~ScratchBuffer() { alloc_->deallocate(p_, nbytes_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  char* data() const { return static_cast<char*>(p_); }

 private:
  Allocator* alloc_;
  size_t nbytes_;
  void* p_;
};

template <typename D, typename S>
void launch_copy(char* dst, const char* src, const StridedLayout<2>& L) {
  if (L.fits_32bit()) {
    copy_kernel<D, S, uint32_t><<<grid_for(L.numel), kThreads>>>(
        dst, src, make_indexer<uint32_t>(L), uint32_t(L.numel));
  } else {
    copy_kernel<D, S, int64_t><<<grid_for(L.numel), kThreads>>>(
        dst, src, make_indexer<int64_t>(L), L.numel);
  }
}

// Names both tensors of a copy in error messages; streamed only when a message is built, so
// the common path formats no strings.
struct CopyOperands {
  const Tensor& dst;
  const Tensor& src;
};
std::ostream& operator<<(std::ostream& os, const CopyOperands& c) {
  return os << "(dst " << c.dst.meta_str() << ", src " << c.src.meta_str() << ")";
}

// Copies between raw layouts: dst and src described by base pointers, dtypes and strides.
void copy_impl(char* dst, DType dt, const Shape& dst_strides, const char* src, DType st,
               const Shape& src_strides, const Shape& shape, const CopyOperands& what) {
  StridedLayout<2> L = make_layout<2>(shape, {&dst_strides, &src_strides}, "copy_strided");
  if (L.numel == 0) return;
  if (dt == st) {
    if (L.dense()) {
      HYMBA_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(L.numel) * dtype_size(dt),
                                       cudaMemcpyDeviceToDevice, 0),
                       "copy_strided ", what);
      return;
    }
    switch (dtype_size(dt)) {
      case 1: launch_copy<uint8_t, uint8_t>(dst, src, L); break;
      case 2: launch_copy<uint16_t, uint16_t>(dst, src, L); break;
      case 4: launch_copy<uint32_t, uint32_t>(dst, src, L); break;
      case 8: launch_copy<uint64_t, uint64_t>(dst, src, L); break;
      default: HYMBA_FAIL("copy_strided: unexpected element size ", dtype_size(dt));
    }
  } else {
    dispatch_all(dt, "copy_strided", [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      dispatch_all(st, "copy_strided", [&](auto stag) {
        using S = typename decltype(stag)::type;
        launch_copy<D, S>(dst, src, L);
      });
    });
  }
  HYMBA_CUDA_CHECK_LAUNCH("copy_strided ", what);
}

// The CPU's static_cast<T>(value) for fill: only defined for integer types when the
// truncated value is representable, so anything else is an error rather than a silent
// wrap (or a platform-dependent result that would differ between CPU and CUDA).
template <typename T>
T fill_value(double value, const Tensor& dst) {
  if constexpr (std::is_integral_v<T>) {
    const double t = std::trunc(value);
    const bool ok = std::isfinite(value) && t >= double(std::numeric_limits<T>::min()) &&
                    t < double(std::numeric_limits<T>::max()) + 1.0;
    HYMBA_CHECK(ok, "fill: value ", value, " is not representable in ", dst.meta_str());
  }
  return convert<T>(value);
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  check_cuda_tensor(dst, "copy_strided", "dst");
  check_cuda_tensor(src, "copy_strided", "src");
  const CopyOperands meta{dst, src};
  HYMBA_CHECK(dst.device() == src.device(), "copy_strided: tensors on different devices ", meta,
              "; copy through the host or enable peer access first");
  HYMBA_CHECK(dst.shape() == src.shape(), "copy_strided: shapes differ ", meta);
  for (int64_t d = 0; d < dst.dim(); ++d)
    HYMBA_CHECK(dst.stride(d) != 0 || dst.size(d) <= 1, "copy_strided: dst has stride 0 in dim ", d,
                ", so several elements would be written to one location ", meta);
  if (dst.numel() == 0) return;

  DeviceGuard guard(dst.device().index);
  char* dptr = base_ptr(dst);
  const char* sptr = base_ptr(src);

  // A view copied onto itself is a no-op (and cudaMemcpy on overlapping ranges is undefined).
  if (dptr == sptr && dst.dtype() == src.dtype() && dst.strides() == src.strides()) return;
  // If src and dst share memory in different layouts (x.copy_(x.t())), threads would read
  // elements that others already overwrote: stage src in a contiguous buffer first.
  auto [dlo, dhi] = byte_span(dst);
  auto [slo, shi] = byte_span(src);
  if (dlo < shi && slo < dhi) {
    const Shape staged_strides = contiguous_strides(src.shape());
    ScratchBuffer tmp(dst.device().index, src.nbytes());
    copy_impl(tmp.data(), src.dtype(), staged_strides, sptr, src.dtype(), src.strides(), src.shape(),
              meta);
    copy_impl(dptr, dst.dtype(), dst.strides(), tmp.data(), src.dtype(), staged_strides, src.shape(),
              meta);
    return;
  }
  copy_impl(dptr, dst.dtype(), dst.strides(), sptr, src.dtype(), src.strides(), src.shape(),
            meta);
}

void fill(const Tensor& dst, double value) {
  check_cuda_tensor(dst, "fill", "dst");
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device().index);
  StridedLayout<1> L = make_layout<1>(dst.shape(), {&dst.strides()}, "fill");
  char* ptr = base_ptr(dst);
  dispatch_all(dst.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using R = typename raw_type<sizeof(T)>::type;
    const T v = fill_value<T>(value, dst);
    R bits;
    std::memcpy(&bits, &v, sizeof(T));
    if (L.dense() && (bits == 0 || sizeof(T) == 1)) {
      // cudaMemset writes bytes: exact for zero in every dtype, and for any one-byte value.
      HYMBA_CUDA_CHECK(cudaMemsetAsync(ptr, int(bits & 0xff), size_t(L.numel) * sizeof(T), 0),
                       "fill ", dst.meta_str());
      return;
    }
    if (L.fits_32bit()) {
      fill_kernel<R, uint32_t><<<grid_for(L.numel), kThreads>>>(
          ptr, make_indexer<uint32_t>(L), uint32_t(L.numel), bits);
    } else {
      fill_kernel<R, int64_t><<<grid_for(L.numel), kThreads>>>(ptr, make_indexer<int64_t>(L),
                                                               L.numel, bits);
    }
    HYMBA_CUDA_CHECK_LAUNCH("fill ", dst.meta_str());
  });
}

void philox_fill(const Tensor& dst, uint64_t seed, uint64_t offset, bool normal, double a, double b) {
  check_cuda_tensor(dst, "philox_fill", "dst");
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device().index);
  // Element order is the row-major order of dst's shape, which coalescing preserves.
  StridedLayout<1> L = make_layout<1>(dst.shape(), {&dst.strides()}, "philox_fill");
  char* ptr = base_ptr(dst);
  const bool wide = dst.dtype() == DType::F64;
  const int64_t nblocks = int64_t(philox::blocks_needed(uint64_t(L.numel), wide));
  // Rounded once on the host for both paths, as the CPU's a + (b - a) * u does.
  const double scale = normal ? b : b - a;
  dispatch_all(dst.dtype(), "philox_fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto launch = [&](auto idx_tag) {
      using Idx = typename decltype(idx_tag)::type;
      auto oc = make_indexer<Idx>(L);
      if (normal) {
        philox_kernel<T, Idx, true><<<grid_for(nblocks), kThreads>>>(
            ptr, oc, Idx(L.numel), Idx(nblocks), seed, offset, a, scale);
      } else {
        philox_kernel<T, Idx, false><<<grid_for(nblocks), kThreads>>>(
            ptr, oc, Idx(L.numel), Idx(nblocks), seed, offset, a, scale);
      }
    };
    // In the 32-bit path blk * 4 + 3 stays below 2^32 because numel < 2^31.
    if (L.fits_32bit()) {
      launch(type_tag<uint32_t>{});
    } else {
      launch(type_tag<int64_t>{});
    }
    HYMBA_CUDA_CHECK_LAUNCH("philox_fill ", dst.meta_str(), normal ? " normal" : " uniform");
  });
}

}  // namespace hymba::cuda
