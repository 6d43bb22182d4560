// Finite-difference gradient checking in float64.
//
// For a function f of tensors, compares the backward pass with central differences of the
// scalar <f(x), w> for a fixed random w, element by element of every input that requires
// grad. A random projection checks every output at once: a wrong gradient for any output
// element shows up unless it is orthogonal to w, which a random w makes vanishingly unlikely.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace hymba::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-6;  // pass when |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-4;
  uint64_t seed = 1234;  // for the projection w
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the worst mismatch (input, element, both values) when !ok
  double max_abs_error = 0;
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs must be f64 CPU tensors; those with requires_grad are checked. Inputs may be
// non-contiguous views (elements are perturbed in place through their strides) but must not
// overlap themselves (no expanded inputs).
GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, GradcheckOptions opts = {});

}  // namespace hymba::autograd
