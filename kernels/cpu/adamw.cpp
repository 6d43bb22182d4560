#include "kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "core/strided.h"

namespace hymba::kernels::cpu {
namespace {

// The update touches 4 tensors per element for ~10 flops; below this many elements a
// thread team costs more than it saves.
constexpr int64_t kGrain = 1 << 15;
// sum_of_squares partial sums cover blocks of this many elements (fixed, for determinism).
constexpr int64_t kBlock = 1 << 14;

using adamw_check::Coeffs;

// One element; shared by the contiguous and the strided loops so they cannot diverge.
template <typename T>
inline void update(T& p, T g, T& m, T& v, const Coeffs<T>& c) {
  p *= c.decay;
  m = c.b1 * m + c.omb1 * g;
  v = c.b2 * v + c.omb2 * g * g;
  p -= c.step_size * m / (std::sqrt(v) * c.inv_sqrt_bc2 + c.eps);
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  const char* op = "adamw_step";
  HYMBA_CHECK(param.defined(), op, ": param is undefined");
  HYMBA_CHECK(param.dtype() == DType::F32 || param.dtype() == DType::F64, op, ": dtype ", dtype_name(param.dtype()),
              " not supported here, expected f32 or f64 (param ", param.meta_str(), ")");
  adamw_check::check_operands(op, param, grad, exp_avg, exp_avg_sq);
  adamw_check::check_hyper(op, lr, beta1, beta2, eps, weight_decay, step);
  if (param.numel() == 0) return;

  dispatch_float(param.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Coeffs<T> c = adamw_check::make_coeffs<T>(lr, beta1, beta2, eps, weight_decay, step);
    T* pp = param.data<T>();
    const T* pg = grad.data<T>();
    T* pm = exp_avg.data<T>();
    T* pv = exp_avg_sq.data<T>();
    if (param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous()) {
      parallel_for(param.numel(), kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) update(pp[i], pg[i], pm[i], pv[i], c);
      });
      return;
    }
    auto L = make_layout<4>(param.shape(), {&param.strides(), &grad.strides(), &exp_avg.strides(),
                                            &exp_avg_sq.strides()});
    for_each_row<4>(L, kGrain, [&](const std::array<int64_t, 4>& o, int64_t n, const std::array<int64_t, 4>& s) {
      for (int64_t i = 0; i < n; ++i)
        update(pp[o[0] + i * s[0]], pg[o[1] + i * s[1]], pm[o[2] + i * s[2]], pv[o[3] + i * s[3]], c);
    });
  });
}

double sum_of_squares(const Tensor& x_in) {
  const char* op = "sum_of_squares";
  HYMBA_CHECK(x_in.defined(), op, ": undefined tensor");
  const int64_t n = x_in.numel();
  if (n == 0) return 0.0;
  Tensor x = x_in.contiguous();
  return dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(size_t(blocks), 0.0);
    parallel_for(blocks, std::max<int64_t>(1, kGrain / kBlock), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = lo; i < hi; ++i) acc += double(px[i]) * double(px[i]);
        partial[size_t(b)] = acc;
      }
    });
    double total = 0;
    for (double p : partial) total += p;
    return total;
  });
}

void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  adamw_check::check_list_sizes("adamw_step_multi", params, grads, exp_avgs, exp_avg_sqs);
  for (size_t i = 0; i < params.size(); ++i)
    adamw_step(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], lr, beta1, beta2, eps, weight_decay, step);
}

double sum_of_squares_multi(const std::vector<Tensor>& xs) {
  double total = 0;
  for (const Tensor& x : xs)
    if (x.defined()) total += sum_of_squares(x);
  return total;
}

}  // namespace hymba::kernels::cpu
