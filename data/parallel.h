// A minimal parallel loop for the data pipeline (tokenizing batches of documents). Kept
// here rather than using OpenMP so that a failure in one item is rethrown deterministically:
// the exception of the lowest failing index wins, whatever the thread count.
#pragma once

#include <cstddef>
#include <functional>

namespace hymba::data {

// Number of threads to use for `requested` (<= 0: all hardware threads).
int resolve_threads(int requested);

// Calls fn(i) for i in [0, n) on up to `threads` threads (the caller's thread included).
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& fn);

}  // namespace hymba::data
