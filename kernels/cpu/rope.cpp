#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace hymba::kernels {

double rope_base(double theta, RopeType type, int64_t head_dim, int64_t max_position, int64_t orig_max_position,
                 double factor) {
  HYMBA_CHECK(std::isfinite(theta) && theta > 0, "rope_base: theta must be > 0, got ", theta);
  if (type == RopeType::Default) return theta;
  HYMBA_CHECK(head_dim > 2 && head_dim % 2 == 0, "rope_base: ntk needs an even head_dim > 2, got ", head_dim);
  HYMBA_CHECK(max_position > 0 && orig_max_position > 0, "rope_base: ntk needs max_position (", max_position,
              ") and orig_max_position (", orig_max_position, ") > 0");
  HYMBA_CHECK(factor >= 1, "rope_base: ntk factor must be >= 1, got ", factor);
  const double ratio = factor * double(max_position) / double(orig_max_position) - (factor - 1);
  HYMBA_CHECK(ratio > 0, "rope_base: ntk ratio ", factor, " * ", max_position, " / ", orig_max_position, " - ",
              factor - 1, " must be > 0");
  return theta * std::pow(ratio, double(head_dim) / double(head_dim - 2));
}

RopeType rope_type_from_string(const std::string& s) {
  if (s == "default") return RopeType::Default;
  if (s == "ntk") return RopeType::NTK;
  HYMBA_FAIL("rope: unknown rope type '", s, "' (expected default or ntk)");
}

namespace cpu {

Tensor rope(const Tensor& x_in, double base, int64_t offset, bool inverse) {
  const char* op = inverse ? "rope_backward" : "rope";
  HYMBA_CHECK(x_in.defined(), op, ": x is undefined");
  HYMBA_CHECK(x_in.dtype() == DType::F32 || x_in.dtype() == DType::F64, op, ": dtype ", dtype_name(x_in.dtype()),
              " not supported, expected f32 or f64 (x ", x_in.meta_str(), ")");
  HYMBA_CHECK(x_in.dim() == 4, op, ": expected x (B, H, T, dh), got ", shape_str(x_in.shape()));
  HYMBA_CHECK(x_in.size(3) % 2 == 0 && x_in.size(3) > 0, op, ": head dim must be even and > 0, x ",
              shape_str(x_in.shape()));
  HYMBA_CHECK(std::isfinite(base) && base > 0, op, ": base must be > 0, got ", base);
  HYMBA_CHECK(offset >= 0, op, ": position offset must be >= 0, got ", offset);
  const int64_t B = x_in.size(0), H = x_in.size(1), T = x_in.size(2), dh = x_in.size(3), half = dh / 2;
  Tensor y = empty(x_in.shape(), TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  const int64_t sb = x.stride(0), sh = x.stride(1), st = x.stride(2);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    // The (T, half) cos/sin table: computed once per call, shared by every (b, h).
    std::vector<T_> cs(size_t(T * half)), sn(size_t(T * half));
    std::vector<T_> inv(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j) inv[j] = T_(1.0 / std::pow(base, double(2 * j) / double(dh)));
    parallel_for(T, std::max<int64_t>(1, 4096 / half), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t j = 0; j < half; ++j) {
          const T_ ang = T_(offset + t) * inv[j];  // fp32 product for f32, as the reference computes it
          cs[t * half + j] = T_(std::cos(double(ang)));
          sn[t * half + j] = T_(inverse ? -std::sin(double(ang)) : std::sin(double(ang)));
        }
      }
    });
    const T_* px = x.data<T_>();
    T_* py = y.data<T_>();
    parallel_for(B * H * T, std::max<int64_t>(1, 16384 / dh), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = r % T, bh = r / T, b = bh / H, h = bh % H;
        const T_* xr = px + b * sb + h * sh + t * st;
        T_* yr = py + r * dh;
        const T_* c = cs.data() + t * half;
        const T_* s = sn.data() + t * half;
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          const T_ x1 = xr[j], x2 = xr[j + half];
          yr[j] = x1 * c[j] - x2 * s[j];
          yr[j + half] = x2 * c[j] + x1 * s[j];
        }
      }
    });
  });
  return y;
}

}  // namespace cpu
}  // namespace hymba::kernels
