// CPU threading. One knob: HYMBA_NUM_THREADS (default: the core count), applied to OpenMP
// and to OpenBLAS. Kernels use parallel_for, which stays serial below a grain size because
// forking a team costs microseconds and small tensors dominate a tiny model's step.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace hymba {

int num_threads();
void set_num_threads(int n);

// Calls f(begin, end) on disjoint chunks covering [0, n). Serial when n < grain or when
// already inside a parallel region.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int nt = num_threads();
  if (n < grain || nt <= 1 || omp_in_parallel()) {
    f(int64_t(0), n);
    return;
  }
  int64_t chunks = std::min<int64_t>(nt, (n + grain - 1) / grain);
#pragma omp parallel for num_threads(chunks) schedule(static, 1) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) f(b, e);
  }
}

}  // namespace hymba
