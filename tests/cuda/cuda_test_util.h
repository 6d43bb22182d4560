// Helpers for the CUDA kernel tests (tests/cuda): skip without a GPU, random inputs made on
// the CPU and copied over, poisoned outputs, and comparisons against the CPU kernels with
// a stated relative tolerance.
//
// Every test compares a CUDA kernel with the CPU kernel of the same family on the same
// inputs. Comparison rule: max |cuda - cpu| / max(max |cpu|, tiny) <= rtol over the whole
// tensor (a norm-relative bound: elementwise relative error is meaningless near zeros), and
// no NaN anywhere (a poisoned element never written is NaN).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/rng.h"
#include "core/tensor.h"

// GTEST_SKIP returns from the test body, so this must stay a macro. It also turns allocation
// poisoning on, so an output element a kernel skips is NaN.
#ifdef HYMBA_WITH_CUDA
#define HYMBA_REQUIRE_GPU()                                                           \
  do {                                                                                \
    if (!::hymba::cuda_available()) GTEST_SKIP() << "no CUDA device on this machine"; \
    ::hymba::set_cuda_poison_allocations(true);                                       \
  } while (0)
#else
#define HYMBA_REQUIRE_GPU() GTEST_SKIP() << "built without CUDA"
#endif

namespace hymba::cudatest {

// Normal(0, scale) values of `shape` from a fixed seed, made on the CPU in f32 then cast.
inline Tensor randn_cpu(const Shape& shape, uint64_t seed, DType dtype = DType::F32, double scale = 1.0) {
  Generator g(seed);
  return randn(shape, DType::F32, &g, 0.0, scale).to(dtype);
}

// The dtype the CPU reference runs in for CUDA inputs of dtype dt: f64 stays f64; f32 and the
// 16-bit types run in f32 (on the same rounded values).
inline DType ref_of(DType dt) { return dt == DType::F64 ? DType::F64 : DType::F32; }

// The tolerance for a CUDA result from inputs of dtype dt: `f64` and `f32` for those dtypes,
// 2e-2 for the 16-bit ones.
inline double rtol_by_dtype(DType dt, double f32, double f64 = 1e-12) {
  return dt == DType::F64 ? f64 : dt == DType::F32 ? f32 : 2e-2;
}

struct Diff {
  double max_abs_err = 0, max_ref = 0, rel = 0;
  int64_t nans = 0, n = 0;
};

// Compares `got` (any device/dtype) with `want` (any device/dtype) in float64.
inline Diff compare(const Tensor& got, const Tensor& want) {
  // A comparison only reads: parameters (which require grad) are compared as plain values.
  Tensor g = got.detach().to(Device::cpu()).to(DType::F64).contiguous();
  Tensor w = want.detach().to(Device::cpu()).to(DType::F64).contiguous();
  Diff d;
  EXPECT_EQ(g.shape(), w.shape());
  if (g.shape() != w.shape()) return d;
  const double* gp = g.data<double>();
  const double* wp = w.data<double>();
  d.n = g.numel();
  for (int64_t i = 0; i < d.n; ++i) {
    if (std::isnan(gp[i]) && !std::isnan(wp[i])) {
      ++d.nans;
      continue;
    }
    if (std::isnan(wp[i])) continue;
    d.max_abs_err = std::max(d.max_abs_err, std::abs(gp[i] - wp[i]));
    d.max_ref = std::max(d.max_ref, std::abs(wp[i]));
  }
  d.rel = d.max_abs_err / std::max(d.max_ref, 1e-30);
  return d;
}

}  // namespace hymba::cudatest

// EXPECT_CUDA_CLOSE(got, want, 1e-4, "rms_norm dx"): norm-relative error at most rtol and
// no NaN where the reference has none.
#define EXPECT_CUDA_CLOSE(got, want, rtol, what)                                                  \
  do {                                                                                            \
    ::hymba::cudatest::Diff d_ = ::hymba::cudatest::compare((got), (want));                       \
    EXPECT_EQ(d_.nans, 0) << (what) << ": " << d_.nans << " of " << d_.n                          \
                          << " elements are NaN (never written?)";                                \
    EXPECT_LE(d_.rel, (rtol)) << (what) << ": max abs err " << d_.max_abs_err << ", max |ref| "   \
                              << d_.max_ref;                                                      \
  } while (0)
