#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/engine.h"
#include "core/rng.h"

namespace hymba::autograd {

namespace {

double dot(const Tensor& a, const Tensor& w) {
  std::vector<double> va = a.to_vector<double>(), vw = w.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < va.size(); ++i) s += va[i] * vw[i];
  return s;
}

// Pointer to element `linear` (row-major index) of a strided f64 CPU tensor.
double* element_ptr(const Tensor& t, int64_t linear) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    int64_t i = linear % t.shape()[d];
    linear /= t.shape()[d];
    off += i * t.strides()[d];
  }
  return static_cast<double*>(t.data_ptr()) + off;
}

}  // namespace

GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, GradcheckOptions opts) {
  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    HYMBA_CHECK(x.dtype() == DType::F64 && x.is_cpu(), "gradcheck: input ", i, " must be an f64 CPU tensor, got ",
                x.meta_str());
    HYMBA_CHECK(x.is_leaf(), "gradcheck: input ", i, " must be a leaf");
  }

  // Analytic gradients.
  for (const auto& x : inputs)
    if (x.defined() && x.requires_grad()) x.set_grad(Tensor());
  Tensor out = f(inputs);
  HYMBA_CHECK(out.defined() && out.requires_grad(), "gradcheck: the function output does not require grad");
  Generator gen(opts.seed);
  Tensor w = randn(out.shape(), DType::F64, &gen);
  out.backward(w);

  NoGradGuard ng;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> analytic = g.defined() ? g.to_vector<double>() : std::vector<double>(size_t(x.numel()), 0.0);
    Tensor xd = x.detach();
    for (int64_t j = 0; j < x.numel(); ++j) {
      double* p = element_ptr(xd, j);
      const double orig = *p;
      *p = orig + opts.eps;
      double fp = dot(f(inputs), w);
      *p = orig - opts.eps;
      double fm = dot(f(inputs), w);
      *p = orig;
      double numeric = (fp - fm) / (2 * opts.eps);
      double a = analytic[size_t(j)];
      double err = std::fabs(a - numeric);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (!(err <= opts.atol + opts.rtol * std::fabs(numeric)) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "gradcheck: input " << i << " " << x.meta_str() << " element " << j << ": analytic " << a
           << " vs numeric " << numeric << " (|diff| " << err << ")";
        res.message = os.str();
      }
    }
  }
  return res;
}

}  // namespace hymba::autograd
