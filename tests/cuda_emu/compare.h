// The comparison every emulator driver makes: the largest |got - want| and |want| over a
// tensor, with NaNs in the result (an element the kernel never wrote: outputs start NaN)
// counted apart, and whether the reference itself was finite.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace hymba::emu {

struct MaxError {
  double abs = 0;           // max |got - want| over the non-NaN elements of got
  double ref = 0;           // max |want|
  int64_t nans = 0;         // NaN elements of got
  bool ref_finite = true;   // no NaN or inf in want
  double rel() const { return abs / std::max(ref, 1e-30); }
};

inline MaxError max_error(const Tensor& got, const Tensor& want) {
  const Tensor g = got.to(DType::F64).contiguous(), w = want.to(DType::F64).contiguous();
  const double* gp = g.data<double>();
  const double* wp = w.data<double>();
  MaxError e;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (!std::isfinite(wp[i])) e.ref_finite = false;
    if (std::isnan(gp[i])) {
      ++e.nans;
      continue;
    }
    e.abs = std::max(e.abs, std::abs(gp[i] - wp[i]));
    e.ref = std::max(e.ref, std::abs(wp[i]));
  }
  return e;
}

}  // namespace hymba::emu
