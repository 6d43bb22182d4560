#include "kernels/meta_tokens.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace hymba::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;
// Column blocks for the reductions: wide enough to vectorize, narrow enough to spread.
constexpr int64_t kColBlock = 64;

void check_float(const char* op, const char* what, const Tensor& t) {
  meta_check::float_check(op, what, t, [](DType d) { return d == DType::F32 || d == DType::F64; }, "f32 or f64");
}

void check_seq(const char* op, const char* what, const Tensor& t) { meta_check::check_seq(op, what, t, check_float); }

// Copies n rows of h elements, row r of the destination at dst + r * h.
template <typename T>
void copy_rows(const T* src, T* dst, int64_t n, int64_t h) {
  std::memcpy(dst, src, size_t(n * h) * sizeof(T));
}

// dmeta[m, :] = sum_b dy[b, m, :] for m < M, by column blocks (deterministic).
template <typename T>
void sum_meta(const T* dy, T* dmeta, int64_t B, int64_t Tt, int64_t M, int64_t H) {
  const int64_t nblk = (H + kColBlock - 1) / kColBlock;
  parallel_for(M * nblk, std::max<int64_t>(1, kGrain / (B * kColBlock)), [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t m = w / nblk, c0 = (w % nblk) * kColBlock, c1 = std::min(H, c0 + kColBlock);
      T* out = dmeta + m * H;
      for (int64_t c = c0; c < c1; ++c) out[c] = 0;
      for (int64_t b = 0; b < B; ++b) {
        const T* row = dy + (b * Tt + m) * H;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) out[c] += row[c];
      }
    }
  });
}

}  // namespace

Tensor prepend_meta_forward(const Tensor& meta_in, const Tensor& x_in) {
  const char* op = "prepend_meta";
  meta_check::check_prepend(op, meta_in, x_in, check_float);
  const int64_t B = x_in.size(0), L = x_in.size(1), H = x_in.size(2), M = meta_in.size(0);
  Tensor y = empty({B, M + L, H}, TensorOptions(x_in.dtype(), x_in.device()));
  if (y.numel() == 0) return y;
  Tensor meta = meta_in.contiguous(), x = x_in.contiguous();
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pm = meta.data<T>(), *px = x.data<T>();
    T* py = y.data<T>();
    parallel_for(B, std::max<int64_t>(1, kGrain / ((M + L) * H)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        copy_rows(pm, py + b * (M + L) * H, M, H);
        copy_rows(px + b * L * H, py + (b * (M + L) + M) * H, L, H);
      }
    });
  });
  return y;
}

std::tuple<Tensor, Tensor> prepend_meta_backward(const Tensor& dy_in, int64_t M, bool need_meta, bool need_x) {
  const char* op = "prepend_meta_backward";
  check_seq(op, "dy", dy_in);
  meta_check::check_num_meta(op, "dy", dy_in, M);
  const int64_t B = dy_in.size(0), Tt = dy_in.size(1), H = dy_in.size(2), L = Tt - M;
  Tensor dmeta, dx;
  Tensor dy = dy_in.contiguous();
  if (need_x) {
    NoGradGuard ng;
    dx = dy.narrow(1, M, L).contiguous();
  }
  if (need_meta) {
    dmeta = empty({M, H}, TensorOptions(dy.dtype(), dy.device()));
    if (dmeta.numel() > 0) {
      dispatch_float(dy.dtype(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        sum_meta<T>(dy.data<T>(), dmeta.data<T>(), B, Tt, M, H);
      });
    }
  }
  return {dmeta, dx};
}

Tensor drop_meta_forward(const Tensor& x, int64_t M) {
  const char* op = "drop_meta";
  check_seq(op, "x", x);
  meta_check::check_num_meta(op, "x", x, M);
  NoGradGuard ng;
  return x.narrow(1, M, x.size(1) - M).contiguous();
}

Tensor drop_meta_backward(const Tensor& dy_in, int64_t M) {
  const char* op = "drop_meta_backward";
  check_seq(op, "dy", dy_in);
  HYMBA_CHECK(M >= 0, op, ": num_meta must be >= 0, got ", M);
  const int64_t B = dy_in.size(0), L = dy_in.size(1), H = dy_in.size(2);
  Tensor dx = empty({B, M + L, H}, TensorOptions(dy_in.dtype(), dy_in.device()));
  if (dx.numel() == 0) return dx;
  Tensor dy = dy_in.contiguous();
  dispatch_float(dy.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pd = dy.data<T>();
    T* px = dx.data<T>();
    parallel_for(B, std::max<int64_t>(1, kGrain / ((M + L) * H)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(px + b * (M + L) * H, px + (b * (M + L) + M) * H, T(0));
        copy_rows(pd + b * L * H, px + (b * (M + L) + M) * H, L, H);
      }
    });
  });
  return dx;
}

Tensor embed_with_meta_forward(const Tensor& w_in, const Tensor& ids_in, const Tensor& meta_in) {
  const char* op = "embed_with_meta";
  meta_check::check_embed_forward(op, w_in, ids_in, meta_in, check_float);
  const int64_t B = ids_in.size(0), L = ids_in.size(1), V = w_in.size(0), H = w_in.size(1), M = meta_in.size(0);
  Tensor y = empty({B, M + L, H}, TensorOptions(w_in.dtype(), w_in.device()));
  if (y.numel() == 0) return y;
  Tensor w = w_in.contiguous(), meta = meta_in.contiguous(), ids = ids_in.to(DType::I64).contiguous();
  const int64_t* pi = ids.data<int64_t>();
  for (int64_t n = 0; n < B * L; ++n)
    if (pi[n] < 0 || pi[n] >= V) [[unlikely]]
      meta_check::fail_bad_token(op, pi[n], n, L, w);
  dispatch_float(w.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pw = w.data<T>(), *pm = meta.data<T>();
    T* py = y.data<T>();
    parallel_for(B * (M + L), std::max<int64_t>(1, kGrain / H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / (M + L), t = r % (M + L);
        const T* src = t < M ? pm + t * H : pw + pi[b * L + t - M] * H;
        copy_rows(src, py + r * H, 1, H);
      }
    });
  });
  return y;
}

std::tuple<Tensor, Tensor> embed_with_meta_backward(const Tensor& dy_in, const Tensor& ids_in, int64_t V, int64_t M,
                                                    int64_t padding_idx, bool need_weight, bool need_meta) {
  const char* op = "embed_with_meta_backward";
  meta_check::check_embed_backward(op, dy_in, ids_in, M, check_float);
  const int64_t B = ids_in.size(0), L = ids_in.size(1), H = dy_in.size(2);
  Tensor dy = dy_in.contiguous();
  Tensor dw, dmeta;
  if (need_meta) {
    dmeta = empty({M, H}, TensorOptions(dy.dtype(), dy.device()));
    if (dmeta.numel() > 0) {
      dispatch_float(dy.dtype(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        sum_meta<T>(dy.data<T>(), dmeta.data<T>(), B, M + L, M, H);
      });
    }
  }
  if (need_weight) {
    dw = zeros({V, H}, TensorOptions(dy.dtype(), dy.device()));
    Tensor ids = ids_in.to(DType::I64).contiguous();
    const int64_t* pi = ids.data<int64_t>();
    meta_check::check_token_ids(op, pi, B * L, V);
    if (dw.numel() > 0 && B * L > 0) {
      dispatch_float(dy.dtype(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pd = dy.data<T>();
        T* pw = dw.data<T>();
        const int64_t nblk = (H + kColBlock - 1) / kColBlock;
        // Each thread owns whole column blocks of the table and adds tokens in order.
        parallel_for(nblk, std::max<int64_t>(1, kGrain / (B * L * kColBlock)), [&](int64_t k0, int64_t k1) {
          const int64_t c0 = k0 * kColBlock, c1 = std::min(H, k1 * kColBlock);
          for (int64_t n = 0; n < B * L; ++n) {
            const int64_t id = pi[n];
            if (id == padding_idx) continue;
            const T* src = pd + ((n / L) * (M + L) + M + n % L) * H;
            T* dst = pw + id * H;
#pragma omp simd
            for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
          }
        });
      });
    }
  }
  return {dw, dmeta};
}

}  // namespace hymba::kernels::cpu
