#include "core/rng.h"

#include "core/convert.h"
#include "core/philox.h"
#include "core/strided.h"
#include "core/tensor.h"
#ifdef HYMBA_WITH_CUDA
#include "core/cuda_ops.h"
#endif

namespace hymba {

Generator& default_generator() {
  static Generator g(0);
  return g;
}

namespace {

Tensor random_fill(const Shape& shape, TensorOptions opts, Generator* gen, bool normal, double a, double b) {
  HYMBA_CHECK(is_floating(opts.dtype), normal ? "randn" : "rand", ": dtype must be floating, got ",
              dtype_name(opts.dtype));
  Generator& g = gen ? *gen : default_generator();
  Tensor t = empty(shape, opts);
  const bool wide = opts.dtype == DType::F64;
  const uint64_t n = uint64_t(t.numel());
  const uint64_t seed = g.seed();
  const uint64_t offset = g.advance(philox::blocks_needed(n, wide));
  if (n == 0) return t;
  if (opts.device.is_cuda()) {
#ifdef HYMBA_WITH_CUDA
    cuda::philox_fill(t, seed, offset, normal, a, b);
    return t;
#else
    HYMBA_FAIL("random fill on ", opts.device.str(), " needs CUDA");
#endif
  }
  dispatch_all(opts.dtype, "rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T> || is_half_v<T>) {
      T* p = t.data<T>();
      parallel_for(int64_t(n), 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          // The same rounding as the CUDA fill (philox::affine_rn), so uniform fills match it
          // bit for bit.
          double v = normal ? philox::affine_rn(a, b, philox::normal_at(seed, offset, uint64_t(i), wide))
                            : philox::affine_rn(a, b - a, philox::uniform_at(seed, offset, uint64_t(i), wide));
          p[i] = convert<T>(v);
        }
      });
    }
  });
  return t;
}

}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, Generator* gen, double low, double high) {
  return random_fill(shape, opts, gen, false, low, high);
}

Tensor randn(const Shape& shape, TensorOptions opts, Generator* gen, double mean, double std) {
  return random_fill(shape, opts, gen, true, mean, std);
}

}  // namespace hymba
